"""The `/v1` entry: a WSGI handler for the gateway's requests with only the middleware they
need, which config/wsgi.py sends every `/v1/` path to (the pages keep Django's whole stack).

A `/v1` request carries an API key, never a session or a form, so sessions, CSRF, messages,
authentication by cookie, allauth, HTMX and static files have nothing to do for it; they and a
second URL resolution (the page access middleware's) cost 0.3-0.5 ms of CPU per request in
process (docs/benchmarks.md §1l). What stays: the security headers (HSTS, nosniff, referrer
policy; the HTTPS redirect in production), the Content-Security-Policy and X-Frame-Options
headers every answer carries, the client's address for audit entries (an on-demand start
writes one), CommonMiddleware's Host check and Content-Length, and default-deny: a view under
`/v1/` that is neither `@self_authenticating` (a keyed view: servers/gateway/auth.py) nor
`@public` is refused here (`GatewayAccessMiddleware`), before it runs. Django's request signals
still fire (database connections are closed and recycled as for every request), and errors are
turned into responses as Django does.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string

from accounts.access import is_public, is_self_authenticating
from servers.gateway.errors import GatewayError

PREFIX = "/v1/"

# In the order of settings.MIDDLEWARE (a test checks each is there, in that order).
MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "accounts.audit.log.AuditAddressMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "servers.gateway.entry.GatewayAccessMiddleware",
)


def is_gateway_path(path: str) -> bool:
    return path.startswith(PREFIX)


class GatewayAccessMiddleware:
    """Default-deny for `/v1`: only a `@self_authenticating` view (it checks the API key
    itself) or a `@public` one runs; any other is refused with 401, as a request without a key
    is. It looks at the view Django resolved for the request (no second resolution). A Host
    header outside ALLOWED_HOSTS is refused with 400 first, and a whole answer gets its
    Content-Length, as CommonMiddleware does for pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        # The Host header checked against ALLOWED_HOSTS, as CommonMiddleware does for pages:
        # DisallowedHost becomes Django's 400.
        request.get_host()
        response = self.get_response(request)
        # As CommonMiddleware does for pages: a whole answer says its length (gunicorn then
        # sends it as is, not chunked, and keeps the connection for the next request).
        if isinstance(response, HttpResponse) and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response

    def process_view(
        self, request: HttpRequest, view: Callable, args: tuple, kwargs: dict
    ) -> HttpResponseBase | None:
        if is_self_authenticating(view) or is_public(view):
            return None
        return GatewayError(
            "Missing or invalid API key. Send 'Authorization: Bearer <key>' with a key "
            "from your API keys page.",
            401,
            code="invalid_api_key",
        ).response()


class GatewayHandler(WSGIHandler):
    """Django's WSGI handler with `MIDDLEWARE` instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django's BaseHandler.load_middleware for a fixed, synchronous list.
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        # _get_response: Django's own innermost step (resolve, view middleware, view), unstubbed.
        handler = convert_exception_to_response(self._get_response)  # type: ignore[attr-defined]
        for path in reversed(MIDDLEWARE):
            try:
                middleware = import_string(path)(handler)
            except MiddlewareNotUsed:
                continue
            if hasattr(middleware, "process_view"):
                self._view_middleware.insert(0, middleware.process_view)
            if hasattr(middleware, "process_template_response"):
                self._template_response_middleware.append(middleware.process_template_response)
            if hasattr(middleware, "process_exception"):
                self._exception_middleware.append(middleware.process_exception)
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler
