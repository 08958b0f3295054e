"""Who may call the gateway: `api_key_required`, the decorator every keyed `/v1` view wears.

A request needs `Authorization: Bearer <key>` with a live key of an approved user
(accounts.api_keys); the key's user becomes `request.user` and the key `request.api_key`.
Otherwise the answer is OpenAI's error: 401 `invalid_api_key` (saying so when the key was
revoked), 403 `account_not_approved` for the live key of a pending or disabled user, and 429
`rate_limit_exceeded` once an address has sent MLX_PORTAL_API_KEY_FAILURES_PER_MINUTE wrong
keys in a minute. A key the portal issued (revoked, or its account not approved) is not a
guess, so it is not counted. CSRF does not apply: browsers never attach the header by
themselves. The view is marked `self_authenticating` (accounts/access.py): the /v1 entry's
default-deny lets only such views (and `@public` ones) run (servers/gateway/entry.py), and the
page middleware, where a request goes through it (Django's test client), leaves them alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from accounts.access import self_authenticating
from accounts.api_keys import (
    bearer_token,
    failed_attempts_exceeded,
    find_api_key,
    record_failed_attempt,
    refused_key_reason,
    seconds_until_retry,
)
from accounts.models import ApiKey
from common.client_address import client_address
from servers.gateway.dialects import anthropic_error
from servers.gateway.errors import GatewayError

View = Callable[..., HttpResponseBase]


def authenticate(request: HttpRequest, *, x_api_key: bool = False) -> ApiKey:
    """The live API key the request carries, or GatewayError (401, 403 or 429) saying why not.
    With `x_api_key`, a request without `Authorization` may carry the key as `x-api-key`
    (Anthropic's header), checked exactly as a Bearer token."""
    header = request.headers.get("Authorization")
    if header is None and x_api_key and (key := request.headers.get("x-api-key")) is not None:
        header = f"Bearer {key}"
    api_key = find_api_key(header)
    if api_key is not None:
        return api_key
    if (refused := refused_key_reason(header)) is not None:
        status, message = refused
        if status == 403:
            raise GatewayError(message, 403, code="account_not_approved")
        raise GatewayError(message, 401, code="invalid_api_key")
    if bearer_token(header) is not None:  # a key was presented, and it is wrong
        address = client_address(request)
        if failed_attempts_exceeded(address):
            wait = seconds_until_retry()
            raise GatewayError(
                f"Too many failed API key attempts from your address; try again in {wait} s "
                "with a key from your API keys page.",
                429,
                code="rate_limit_exceeded",
                headers={"Retry-After": str(wait)},
            )
        record_failed_attempt(address)
    raise GatewayError(
        "Missing or invalid API key. Send 'Authorization: Bearer <key>' with a key "
        "from your API keys page.",
        401,
        code="invalid_api_key",
    )


def api_key_required(view: View) -> View:
    """Answer the request only with a live API key of an approved user (see the module)."""
    return _keyed(view)


def anthropic_key_required(view: View) -> View:
    """`api_key_required` for Anthropic's clients: the key as `x-api-key` too, refusals in
    Anthropic's error shape."""
    return _keyed(view, x_api_key=True, shape=anthropic_error)


def _keyed(
    view: View, *, x_api_key: bool = False, shape: Callable[[GatewayError], dict] | None = None
) -> View:
    @functools.wraps(view)
    def keyed(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        try:
            api_key = authenticate(request, x_api_key=x_api_key)
        except GatewayError as error:
            return error.response(shape)
        request.user = api_key.user
        request.api_key = api_key  # type: ignore[attr-defined]  # read with request_key()
        return view(request, *args, **kwargs)

    return self_authenticating(csrf_exempt(keyed))


def request_key(request: HttpRequest) -> ApiKey:
    """The API key `api_key_required` found for this request."""
    api_key = getattr(request, "api_key", None)
    if not isinstance(api_key, ApiKey):
        raise TypeError("request_key() is for the views that wear @api_key_required")
    return api_key
