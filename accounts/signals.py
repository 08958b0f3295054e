from allauth.account.signals import user_signed_up
from django.dispatch import receiver

from accounts.models import User
from accounts.notifications import notify_admins_of_signup


@receiver(user_signed_up, dispatch_uid="accounts.notify_admins_of_signup")
def _tell_admins(sender, request, user, **kwargs):
    if user.status == User.Status.PENDING:
        notify_admins_of_signup(user, request)
