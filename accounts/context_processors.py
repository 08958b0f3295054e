from django.http import HttpRequest

from accounts.approval import pending_count


def navigation(request: HttpRequest) -> dict:
    """The navbar's pending-users count, for admins only (one COUNT query)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active_admin:
        return {}
    return {"pending_count": pending_count()}
