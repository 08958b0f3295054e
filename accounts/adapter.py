from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from django.conf import settings
from django.contrib.sites.requests import RequestSite
from django.core.exceptions import PermissionDenied

from accounts import approval
from common.client_address import client_address


class AccountAdapter(DefaultAccountAdapter):
    """Sign-ups go through `approval.register`: the first user becomes the admin, everyone
    after waits for approval (the access middleware shows them the waiting page)."""

    def is_open_for_signup(self, request) -> bool:
        """Password sign-up, unless MLX_PORTAL_PASSWORD_SIGNUP turned it off (single sign-on is
        then the way in: accounts/sso/adapter.py keeps its own sign-up open)."""
        return settings.PASSWORD_SIGNUP

    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=False)
        if commit:
            approval.register(user)
        return user

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        """allauth's emails (password reset, notices) greet and sign as the portal
        (PORTAL_NAME), not as the host and port the request came to: without the sites
        framework, allauth's `current_site` is a RequestSite named after the host."""
        site = RequestSite(allauth_context.request)
        site.name = settings.PORTAL_NAME
        super().send_mail(template_prefix, email, {"current_site": site, **context})

    def get_client_ip(self, request):
        """The address allauth throttles logins and sign-ups by: the client's, read through
        the trusted proxies (common/client_address.py), so that behind the nginx front one
        client's failed logins do not lock everyone out. allauth's own ALLAUTH_TRUSTED_PROXY_COUNT
        is not used: it believes X-Forwarded-For from any peer, and fails on a request that
        reaches gunicorn without the front (a local scraper, a health check)."""
        address = client_address(request)
        if not address:
            raise PermissionDenied("Unable to determine client IP address")
        return address
