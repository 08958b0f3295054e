from allauth.account.signals import user_logged_in, user_signed_up
from allauth.socialaccount.signals import social_account_added, social_account_removed
from django.dispatch import receiver

from accounts.approval import approved_by_admin
from accounts.audit import log as audit
from accounts.models import User
from accounts.notifications import notify_admins_of_signup, notify_approved
from accounts.sso.adapter import sync_groups


@receiver(user_signed_up, dispatch_uid="accounts.notify_admins_of_signup")
def _tell_admins(sender, request, user, **kwargs):
    if user.status == User.Status.PENDING:
        notify_admins_of_signup(user, request)


@receiver(approved_by_admin, dispatch_uid="accounts.notify_approved")
def _tell_the_approved(sender, user, by, **kwargs):
    notify_approved(user)


@receiver(user_logged_in, dispatch_uid="accounts.groups_from_sso_claim")
def _groups_from_claim(sender, request, user, sociallogin=None, **kwargs):
    """Every sign-in through a provider sets the user's groups from its claim (when groups
    follow the claim: MLX_PORTAL_OIDC_GROUPS_FROM_CLAIM)."""
    if sociallogin is not None:
        sync_groups(user, sociallogin)


@receiver(social_account_added, dispatch_uid="accounts.audit_sso_link")
def _record_link(sender, request, sociallogin, **kwargs):
    """An account linked to a provider's identity: by its verified email at sign-in, or by its
    owner on the connections page."""
    provider = sociallogin.account.provider
    user = sociallogin.user
    audit.record(user, audit.Action.SSO_LINK, user, after={"provider": provider})


@receiver(social_account_removed, dispatch_uid="accounts.audit_sso_unlink")
def _record_unlink(sender, request, socialaccount, **kwargs):
    user = socialaccount.user
    audit.record(
        request.user, audit.Action.SSO_UNLINK, user, before={"provider": socialaccount.provider}
    )
