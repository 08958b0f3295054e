"""Emails to admins (a sign-up waits) and to a person an admin approved. Sent through Django's
mailers (console backend unless EMAIL_URL); a mail server that fails is logged, never turned
into a failed sign-up or approval."""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.http import HttpRequest
from django.urls import reverse

from accounts.approval import active_admins
from accounts.models import User

logger = logging.getLogger(__name__)


def notify_admins_of_signup(user: User, request: HttpRequest | None = None) -> int:
    """Tell every active admin that `user` signed up and waits for approval.

    Returns the number of admins written to. A mail server that fails is logged, never
    turned into a failed sign-up.
    """
    recipients = sorted(
        email
        for email in active_admins().exclude(pk=user.pk).values_list("email", flat=True)
        if email
    )
    if not recipients:
        return 0
    users_url = reverse("accounts:users") + "?status=pending"
    if request is not None:
        users_url = request.build_absolute_uri(users_url)
    body = (
        f"{user.email} signed up for {settings.PORTAL_NAME} and is waiting for approval.\n\n"
        f"Approve or disable them here: {users_url}\n"
    )
    try:
        send_mail(
            f"[{settings.PORTAL_NAME}] New sign-up awaiting approval: {user.email}",
            body,
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    except Exception:  # mail trouble must not undo a sign-up
        logger.exception("Could not tell the admins about the sign-up of %s", user)
        return 0
    return len(recipients)


def notify_approved(user: User, request: HttpRequest | None = None) -> bool:
    """Tell `user` that an admin approved their account, with where to start. True when sent."""
    if not user.email:
        return False
    # The portal's address: the request's, else this host's web tier when it is configured.
    if request is not None:
        home = request.build_absolute_uri(reverse("home"))
    else:
        home = f"{settings.HOST_WEB_URL}/" if settings.HOST_WEB_URL else ""
    body = (
        "An admin approved your MLX Portal account: you can sign in now.\n\n"
        + (f"Start here: {home}\n" if home else "")
        + "Pick a model under Models (or My models) and press Serve to chat with it; create an "
        "API key under API keys to call it from your own tools.\n"
    )
    try:
        send_mail(
            "[MLX Portal] Your account is approved",
            body,
            settings.DEFAULT_FROM_EMAIL,
            [user.email],
        )
    except Exception:  # mail trouble must not undo an approval
        logger.exception("Could not tell %s that they were approved", user)
        return False
    return True
