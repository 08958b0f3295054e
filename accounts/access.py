"""Who may open which URL: the one allow-list of the default-deny access middleware.

Every URL of the project is refused to anonymous, pending and disabled users unless its view
is marked `@public` (open to everyone; the view may check a token of its own) or
`@self_authenticating` (the view authenticates the request itself, without a session: the
gateway's API-key views), or it is one of django-allauth's pages named in `PUBLIC_URL_NAMES`.
A new view needs nothing to be protected; opening one takes a marking a test asks about.
Admin-only views are marked with `@staff_only` (the Django admin's whole namespace is
admin-only already).
"""

from collections.abc import Callable

from django.conf import settings

# django-allauth's pages that are open to everyone, signed in or not (they cannot be marked).
PUBLIC_URL_NAMES = frozenset(
    {
        "account_login",
        "account_logout",
        "account_signup",
        "account_inactive",
        "account_email_verification_sent",
        "account_confirm_email",
        "account_reset_password",
        "account_reset_password_done",
        "account_reset_password_from_key",
        "account_reset_password_from_key_done",
        # Where a single sign-on that was cancelled or failed ends (accounts/sso/).
        "socialaccount_login_cancelled",
        "socialaccount_login_error",
    }
)

# Open to any signed-in user whatever their status: the pages that tell them their status.
STATUS_URL_NAMES = frozenset({"accounts:pending", "accounts:disabled"})

# URL namespaces whose every view is for admins only.
STAFF_NAMESPACES = frozenset({"admin"})

_STAFF_ONLY_ATTRIBUTE = "portal_staff_only"
_PUBLIC_ATTRIBUTE = "portal_public"
_SELF_AUTHENTICATING_ATTRIBUTE = "portal_self_authenticating"


def _marked(view: Callable, attribute: str) -> bool:
    view_class = getattr(view, "view_class", None)
    return bool(getattr(view, attribute, False) or getattr(view_class, attribute, False))


def public[V: Callable](view: V) -> V:
    """Open a view to everyone, signed in or not. What it needs of a caller (a token of its
    own, a local address), it checks itself."""
    setattr(view, _PUBLIC_ATTRIBUTE, True)
    return view


def is_public(view: Callable) -> bool:
    return _marked(view, _PUBLIC_ATTRIBUTE)


def self_authenticating[V: Callable](view: V) -> V:
    """Mark a view that authenticates its requests itself, not by a session (the gateway's
    API-key views: servers/gateway/auth.py): the middleware leaves the request to it."""
    setattr(view, _SELF_AUTHENTICATING_ATTRIBUTE, True)
    return view


def is_self_authenticating(view: Callable) -> bool:
    return _marked(view, _SELF_AUTHENTICATING_ATTRIBUTE)


def staff_only[V: Callable](view: V) -> V:
    """Mark a view as admin-only: the access middleware answers 403 to everyone else."""
    setattr(view, _STAFF_ONLY_ATTRIBUTE, True)
    return view


def is_staff_only(view: Callable, namespace: str) -> bool:
    return _marked(view, _STAFF_ONLY_ATTRIBUTE) or namespace.split(":", 1)[0] in STAFF_NAMESPACES


def is_static_path(path: str) -> bool:
    static_url = "/" + settings.STATIC_URL.lstrip("/")
    return path.startswith(static_url) or path == "/favicon.ico"
