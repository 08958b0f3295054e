"""Default-deny access control for every request (see `accounts.access` for the allow-list).

- `/v1/…`: needs `Authorization: Bearer <key>` of an approved user, else 401 in OpenAI's error
  shape, saying so when the key was revoked (403 `account_not_approved` for the live key of a
  pending or disabled user); the public names among them (the OpenAPI description) need none.
  The key's user becomes `request.user` (and `request.api_key` the key); CSRF does not apply
  to these requests, since browsers never attach the header by themselves.
- Public URL names and static files: open.
- Anonymous: redirected to login with `?next=`; HTMX requests get `HX-Redirect` instead, so a
  login form is never pasted into a partial. A script's request that does not accept HTML
  (the chat page's `fetch()`) gets 401 and JSON naming where to go (`redirect`): a redirect
  would be followed to the login form and read as the answer. After a POST, `next` is the page
  the form was on (its `Referer`, when it is this site's), not the URL it posted to.
- Pending or disabled: their status page; HTMX requests are redirected there too, and every
  other request that is not a page load (POST, JSON, …) gets 403 (JSON with `redirect` for a
  script's request that does not accept HTML).
- Approved: everything, except admin-only views (`@staff_only`, the Django admin) answer 403
  to non-admins.
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import resolve_url
from django.template.response import TemplateResponse
from django.urls import Resolver404, ResolverMatch, resolve, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect

from accounts import access
from accounts.api_keys import (
    bearer_token,
    failed_attempts_exceeded,
    find_api_key,
    record_failed_attempt,
    refused_key_reason,
    seconds_until_retry,
)
from accounts.models import User
from common.client_address import client_address


def api_error(
    message: str,
    status: int = 401,
    code: str = "invalid_api_key",
    error_type: str = "invalid_request_error",
    headers: dict | None = None,
) -> JsonResponse:
    """An error in the OpenAI API's shape."""
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="mlx-portal"', **(headers or {})}
    return JsonResponse(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


def _wants_html(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return not accept or "text/html" in accept or "*/*" in accept


def _is_page_load(request: HttpRequest) -> bool:
    return not request.htmx and request.method in ("GET", "HEAD") and _wants_html(request)


def _redirect(request: HttpRequest, url: str, reason: str, status: int) -> HttpResponse:
    """Send the browser to `url`: HX-Redirect for HTMX; JSON (`error`, `redirect`) with
    `status` for a script that does not accept HTML; else a plain redirect."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    if not _wants_html(request):
        return JsonResponse({"error": reason, "redirect": url}, status=status)
    return HttpResponseRedirect(url)


def _login_url(request: HttpRequest) -> str:
    # For HTMX, come back to the page that made the request, not to its partial; after a POST,
    # to the page the form was on.
    next_url = (request.htmx and request.htmx.current_url_abs_path) or (
        _referring_page(request) if request.method not in ("GET", "HEAD") else None
    )
    query = QueryDict(mutable=True)
    query["next"] = next_url or request.get_full_path()
    return f"{resolve_url(settings.LOGIN_URL)}?{query.urlencode(safe='/')}"


def _referring_page(request: HttpRequest) -> str | None:
    """The path (and query) of the `Referer`, when it is a page of this site."""
    referer = request.headers.get("Referer", "")
    if not url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    parts = urlsplit(referer)
    return parts.path + (f"?{parts.query}" if parts.query else "") or None


def _resolve(path: str) -> ResolverMatch | None:
    try:
        return resolve(path)
    except Resolver404:
        return None


def _url_name(path: str) -> str | None:
    match = _resolve(path)
    return match.view_name if match else None


class AccessMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if access.is_api_path(path):
            return self._api(request)
        if access.is_static_path(path):
            return self.get_response(request)
        match = _resolve(path)
        name = match.view_name if match else None
        if name in access.PUBLIC_URL_NAMES:
            return self.get_response(request)

        user = request.user
        if not user.is_authenticated:
            reason = "Your session has ended: log in again."
            return _redirect(request, _login_url(request), reason, 401)
        if not user.is_approved:
            if name in access.STATUS_URL_NAMES:
                return self.get_response(request)
            return self._refuse_unapproved(request, user)
        staff_only = match is not None and access.is_staff_only(match.func, match.namespace)
        if staff_only and not user.is_admin:
            return self._forbidden(request, "This page is for admins.")
        return self.get_response(request)

    def _api(self, request: HttpRequest) -> HttpResponse:
        if _url_name(request.path_info) in access.PUBLIC_URL_NAMES:
            return self.get_response(request)
        header = request.headers.get("Authorization")
        api_key = find_api_key(header)
        if api_key is None and (refused := refused_key_reason(header)) is not None:
            # A key the portal issued (revoked, or its account not approved): not a guess, so
            # not a failed attempt, and the client is told what to do about it.
            status, message = refused
            if status == 403:
                return api_error(
                    message, 403, code="account_not_approved", error_type="permission_error"
                )
            return api_error(message)
        if api_key is None and bearer_token(header) is not None:
            # A key was presented and is wrong: count it against the client's address.
            address = client_address(request) or "unknown"
            if failed_attempts_exceeded(address):
                wait = seconds_until_retry()
                return api_error(
                    f"Too many failed API key attempts from your address; try again in {wait} s "
                    "with a key from your API keys page.",
                    429,
                    code="rate_limit_exceeded",
                    error_type="requests",
                    headers={"Retry-After": str(wait)},
                )
            record_failed_attempt(address)
        if api_key is None:
            return api_error(
                "Missing or invalid API key. Send 'Authorization: Bearer <key>' with a key "
                "from your API keys page."
            )
        request.user = api_key.user
        request.api_key = api_key
        request._dont_enforce_csrf_checks = True
        return self.get_response(request)

    def _refuse_unapproved(self, request: HttpRequest, user: User) -> HttpResponse:
        if user.status == User.Status.DISABLED or not user.is_active:
            url, reason = reverse("accounts:disabled"), "Your account is disabled."
        else:
            url, reason = reverse("accounts:pending"), "Your account is awaiting approval."
        if request.htmx or _is_page_load(request) or not _wants_html(request):
            return _redirect(request, url, reason, 403)
        return self._forbidden(request, reason)

    def _forbidden(self, request: HttpRequest, reason: str) -> HttpResponse:
        response = TemplateResponse(request, "403.html", {"reason": reason}, status=403)
        return response.render()
