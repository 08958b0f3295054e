from django.conf import settings
from django.http import HttpRequest

from accounts.approval import pending_count


def navigation(request: HttpRequest) -> dict:
    """The navbar's pending-users count, for admins only (one COUNT query), and whether
    password sign-up is open (the "Sign up" link)."""
    context: dict = {"password_signup": settings.PASSWORD_SIGNUP}
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active_admin:
        return context
    return {**context, "pending_count": pending_count()}
