"""The `/v1` entry (servers/gateway/entry.py, wired in config/wsgi.py): gunicorn's application
sends `/v1/` paths to the gateway's own handler, with only the middleware an API-key request
needs, and keeps default-deny there: every `/v1` view is keyed unless marked public, and a view
that is neither is refused before it runs. Driven through `config.wsgi.application` itself, as
gunicorn calls it."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.http import JsonResponse
from django.test import RequestFactory
from django.urls import include, path, resolve

import config.wsgi
from accounts.access import is_public, is_self_authenticating, public
from accounts.api_keys import create_api_key
from servers.gateway import entry
from tests.support.url_walk import all_urls

pytestmark = pytest.mark.django_db(transaction=True)


def call(path: str, method: str = "GET", **headers: str) -> tuple[int, dict, bytes]:
    """One request through the WSGI application gunicorn serves: (status, headers, body)."""
    environ = RequestFactory().generic(method, path, headers=headers).environ
    started: dict = {}

    def start_response(status: str, response_headers: list) -> None:
        started["status"] = int(status.split()[0])
        started["headers"] = dict(response_headers)

    response = config.wsgi.application(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()
    return started["status"], started["headers"], body


def v1_paths() -> list[str]:
    return [url.path for url in all_urls() if url.path.startswith("/v1/")]


def test_v1_paths_go_to_the_gateway_handler_and_pages_to_djangos_whole_stack():
    assert all(entry.is_gateway_path(p) for p in v1_paths())
    assert not entry.is_gateway_path("/v1") and not entry.is_gateway_path("/servers/")
    status, headers, _ = call("/")  # a page: the access middleware's login redirect
    assert status == 302 and headers["Location"].startswith("/accounts/login/")


def test_v1_is_resolved_before_any_pages_include_is_tried():
    # Django tries the patterns in order: with allauth's and the accounts' includes first, an API
    # request paid for matching them all (~8 % of its CPU before the first token, §1n).
    from django.urls import URLResolver

    from config import urls

    includes = [p for p in urls.urlpatterns if isinstance(p, URLResolver)]
    assert includes[0].urlconf_name.__name__ == "servers.gateway.urls", includes
    assert resolve("/v1/chat/completions").route == "v1/chat/completions"


def test_every_keyed_v1_view_refuses_a_request_without_a_key_through_the_entry():
    keyed = [p for p in v1_paths() if not is_public(resolve(p).func)]
    assert len(keyed) >= 10
    for url in keyed:
        assert is_self_authenticating(resolve(url).func), url
        status, _, body = call(url, "POST")
        assert status == 401, url
        error = json.loads(body)["error"]
        # Anthropic's shape on its endpoints, OpenAI's elsewhere.
        assert error.get("code") == "invalid_api_key" or error["type"] == "authentication_error"


def test_a_keyed_view_answers_a_live_key_through_the_entry(member):
    secret = create_api_key(member, "entry").secret
    status, headers, body = call("/v1/models", Authorization=f"Bearer {secret}")
    assert status == 200 and json.loads(body) == {"object": "list", "data": []}, body
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body))


def test_the_public_openapi_description_needs_no_key():
    status, _, body = call("/v1/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.1")


def test_gateway_answers_carry_the_same_security_headers_as_pages():
    _, headers, _ = call("/v1/models")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in headers
    assert headers["Referrer-Policy"] == "same-origin"


def test_a_host_outside_allowed_hosts_is_refused_as_for_pages():
    status, _, _ = call("/v1/openapi.json", Host="evil.example")
    assert status == 400
    status, _, _ = call("/", Host="evil.example")
    assert status == 400


def test_the_entry_keeps_a_subset_of_the_projects_middleware_in_the_same_order():
    ours = [
        name for name in entry.MIDDLEWARE if name != "servers.gateway.entry.GatewayAccessMiddleware"
    ]
    assert entry.MIDDLEWARE[-1] == "servers.gateway.entry.GatewayAccessMiddleware"
    positions = [settings.MIDDLEWARE.index(name) for name in ours]
    assert positions == sorted(positions)


# --- a /v1 view that nobody marked -----------------------------------------------------------


def unmarked(request):
    return JsonResponse({"secret": "what an unmarked view would show"})


@public
def marked_public(request):
    return JsonResponse({"open": True})


v1_urls = [path("unmarked", unmarked), path("open", marked_public)]
urlpatterns = [path("v1/", include(v1_urls))]


def test_a_v1_view_neither_keyed_nor_public_is_refused_before_it_runs(settings):
    settings.ROOT_URLCONF = __name__
    status, _, body = call("/v1/unmarked")
    assert status == 401
    assert b"what an unmarked view would show" not in body
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, body = call("/v1/open")
    assert status == 200 and json.loads(body) == {"open": True}
