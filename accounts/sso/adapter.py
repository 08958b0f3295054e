"""Who a single sign-on becomes (SOCIALACCOUNT_ADAPTER).

- A new person goes through `approval.register` like a password sign-up (the first account
  becomes the admin, everyone after is pending), then the approval rules: a verified email in
  an allowed domain, or an approving value of the claim, approves them at once (recorded as
  single sign-on's doing, with the reason).
- An existing account with the same email is linked (allauth: email authentication) only when
  the provider says the email is verified. When it does not, the sign-in is refused: it never
  links and never makes a second account with that email.
- An existing account keeps its status whatever the provider says: a disabled one stays out
  (the access middleware shows it its page), a pending one waits.
- On every sign-in, when groups follow the claim, the user's groups are set from it
  (`sync_groups`, called on allauth's `user_logged_in`); a disabled user's are left alone.
- Claims the portal cannot use (no email, a malformed one, a claim of the wrong type) refuse
  the sign-in with a page that says why.
"""

from __future__ import annotations

import logging

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.shortcuts import render

from accounts import approval
from accounts.audit import log as audit
from accounts.models import User
from accounts.sso import rules

log = logging.getLogger(__name__)


def _provider_id(sociallogin) -> str:
    return sociallogin.account.provider  # the app's provider_id (MLX_PORTAL_OIDC_PROVIDERS)


def _provider_name(sociallogin) -> str:
    """The button's label (MLX_PORTAL_OIDC_<ID>_LABEL) without its "Sign in with"."""
    provider = sociallogin.account.get_provider()
    name = str(getattr(provider, "name", "") or _provider_id(sociallogin))
    return name.removeprefix("Sign in with ").removeprefix("Log in with ")


def refuse(request, message: str):
    response = render(request, "accounts/sso_refused.html", {"reason": message}, status=403)
    raise ImmediateHttpResponse(response)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin) -> bool:
        # Open when password sign-up is off (MLX_PORTAL_PASSWORD_SIGNUP): then SSO is the way
        # in. New accounts still wait for approval unless a rule approves them.
        return True

    def pre_social_login(self, request, sociallogin) -> None:
        claims = rules.claims_of(sociallogin.account.extra_data)
        name = _provider_name(sociallogin)
        if problem := rules.refusal(claims, name):
            log.warning("Single sign-on through %s refused: %s", name, problem)
            refuse(request, problem)
        email = claims["email"]
        if (
            not sociallogin.is_existing
            and not rules.is_true(claims.get("email_verified"))
            and User.objects.filter(email__iexact=email).exists()
        ):
            refuse(
                request,
                f"An account with the email {email} already exists, and {name} does not say that "
                "it has verified this email, so the portal will not link them. Log in with your "
                "password instead, or ask the provider's admin to verify your email.",
            )

    def save_user(self, request, sociallogin, form=None):
        """A new person: registered as any sign-up, then the approval rules of first sign-in."""
        user = sociallogin.user
        user.set_unusable_password()
        get_account_adapter(request).populate_username(request, user)
        approval.register(user, via=f"single sign-on ({_provider_id(sociallogin)})")
        sociallogin.save(request)
        claims = rules.claims_of(sociallogin.account.extra_data)
        if user.status == User.Status.PENDING and (reason := rules.approval_reason(claims)):
            actor = audit.sso(_provider_id(sociallogin))
            approval.approve([user], by=actor, why=f"Approved on first sign-in: {reason}.")
            user.refresh_from_db()
        return user

    def on_authentication_error(
        self, request, provider, error=None, exception=None, extra_context=None
    ):
        log.warning(
            "Single sign-on through %s failed: %s %s",
            getattr(provider, "name", provider),
            error,
            exception,
        )


def sync_groups(user: User, sociallogin) -> None:
    """The user's groups from the claim, on every sign-in (when groups follow the claim)."""
    names = rules.group_names(rules.claims_of(sociallogin.account.extra_data))
    if names is None or user.status == User.Status.DISABLED or not user.is_active:
        return
    approval.set_groups(
        user,
        names,
        by=audit.sso(_provider_id(sociallogin)),
        why=f"From the {settings.OIDC_CLAIM} claim at sign-in.",
    )
