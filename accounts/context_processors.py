from django.conf import settings
from django.http import HttpRequest

from accounts.approval import pending_count
from accounts.models import User


def navigation(request: HttpRequest) -> dict:
    """The navbar's pending-users count, for admins only (one COUNT query), whether password
    sign-up is open (the "Sign up" link), and, for a visitor, whether the install is fresh (no
    account yet: the first one becomes the admin, accounts.approval.register)."""
    context: dict = {"password_signup": settings.PASSWORD_SIGNUP}
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {**context, "fresh_install": not User.objects.exists()}
    if not user.is_active_admin:
        return context
    return {**context, "pending_count": pending_count()}
