"""Who may open which URL: the one allow-list of the default-deny access middleware.

Every URL of the project is refused to anonymous, pending and disabled users unless its name
is listed here. A new view needs nothing to be protected; to open one, add its URL name to
`PUBLIC_URL_NAMES` (and a test will ask why). Admin-only views are marked with `@staff_only`
(the Django admin's whole namespace is admin-only already); API views live under `/v1/` and
are reached with an API key, not a session (the public names among them need none).
"""

from collections.abc import Callable

from django.conf import settings

# Open to everyone, signed in or not.
PUBLIC_URL_NAMES = frozenset(
    {
        "healthz",
        # Prometheus: the view itself allows localhost or the METRICS_TOKEN bearer only.
        "metrics",
        # The hop between hosts' web tiers: the view accepts only this host's hop token.
        "hop",
        # The gateway's OpenAPI description (GET /v1/openapi.json): no secret in it, and API
        # clients and generators read it before they have a key, as with OpenAI's own.
        "v1:openapi",
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
    }
)

# Open to any signed-in user whatever their status: the pages that tell them their status.
STATUS_URL_NAMES = frozenset({"accounts:pending", "accounts:disabled"})

# URL namespaces whose every view is for admins only.
STAFF_NAMESPACES = frozenset({"admin"})

# Requests under this prefix authenticate with `Authorization: Bearer <API key>`.
API_PREFIX = "/v1/"

_STAFF_ONLY_ATTRIBUTE = "portal_staff_only"


def staff_only[V: Callable](view: V) -> V:
    """Mark a view as admin-only: the access middleware answers 403 to everyone else."""
    setattr(view, _STAFF_ONLY_ATTRIBUTE, True)
    return view


def is_staff_only(view: Callable, namespace: str) -> bool:
    view_class = getattr(view, "view_class", None)
    return (
        getattr(view, _STAFF_ONLY_ATTRIBUTE, False)
        or getattr(view_class, _STAFF_ONLY_ATTRIBUTE, False)
        or namespace.split(":", 1)[0] in STAFF_NAMESPACES
    )


def is_static_path(path: str) -> bool:
    static_url = "/" + settings.STATIC_URL.lstrip("/")
    return path.startswith(static_url) or path == "/favicon.ico"


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX)
