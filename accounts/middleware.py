"""Default-deny access control for every request (see `accounts.access` for the allow-list).

- Views marked `@public` and django-allauth's public pages: open. Views marked
  `@self_authenticating` (the gateway's API-key views) authenticate the request themselves:
  left to them. Static files: open.
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
from accounts.models import User


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


class AccessMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if access.is_static_path(path):
            return self.get_response(request)
        match = _resolve(path)
        name = match.view_name if match else None
        if match is not None and (
            access.is_public(match.func) or access.is_self_authenticating(match.func)
        ):
            return self.get_response(request)
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
