"""Personal API keys for the OpenAI-compatible gateway (`/v1/…`).

A key is `mlxp_` followed by 43 random URL-safe characters (256 bits). Only an HMAC-SHA256
of it is stored, keyed with a key derived from SECRET_KEY (`salted_hmac`): a fast keyed hash
is the right tool for high-entropy tokens (a password hasher would only slow every gateway
request down without adding safety). Keys hashed under a previous secret in
SECRET_KEY_FALLBACKS keep working.

The gateway's keyed views find the key with `find_api_key(request.headers.get("Authorization"))`
(servers/gateway/auth.py): one read of the look-ups' counters, and the key's row only when an
API key or a user changed since this thread last read it (common/rows.py).
"""

import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.audit import log as audit
from accounts.models import ApiKey, User
from common.rows import carry_versions, first_row, lookup_versions

KEY_PREFIX = "mlxp_"
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 6
LAST_USED_RESOLUTION = timedelta(seconds=60)
_HMAC_SALT = "accounts.api_keys.v1"
# Failed key attempts are counted per client address in fixed windows of this many seconds.
FAILURE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class NewKey:
    """A just-created key: `secret` is shown to its owner once and never stored."""

    api_key: ApiKey
    secret: str


def hash_key(secret: str, signing_key: str | None = None) -> str:
    return salted_hmac(_HMAC_SALT, secret, signing_key, algorithm="sha256").hexdigest()


def _candidate_hashes(secret: str) -> list[str]:
    signing_keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [hash_key(secret, signing_key) for signing_key in signing_keys]


def create_api_key(user: User, name: str) -> NewKey:
    """Create a key named `name` for `user` (the name is validated by ApiKeyForm)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=secret[:DISPLAY_PREFIX_LENGTH],
        key_hash=hash_key(secret),
    )
    audit.record(user, audit.Action.KEY_CREATE, api_key, after={"name": name})
    return NewKey(api_key=api_key, secret=secret)


def revoke_api_key(api_key: ApiKey, *, by: audit.Actor = None) -> None:
    """Revoke the key (by its owner unless `by` says who)."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit.record(by or api_key.user, audit.Action.KEY_REVOKE, api_key)


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def find_api_key(authorization_header: str | None) -> ApiKey | None:
    """The live key of an approved user named by the header, with its user loaded."""
    token = bearer_token(authorization_header)
    if token is None or not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    # The key and its user in one plain query (common/rows.py), or, when no API key or user
    # changed since this process last read them, as read then: the counters' one read
    # instead (this runs before every gateway request's first byte). The counters go with the
    # user, so the request's other look-ups (membership, find_profile) use the same reading.
    hashes = _candidate_hashes(token)
    versions = lookup_versions()
    api_key = first_row(
        ApiKey,
        {"key_hash": hashes, "revoked_at": None},
        related=("user",),
        version=versions.accounts if versions is not None else None,
    )
    if api_key is None or not api_key.user.is_approved:
        return None
    carry_versions(api_key.user, versions)
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        # Bounded rate: at most one write per key per LAST_USED_RESOLUTION.
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def refused_key_reason(authorization_header: str | None) -> tuple[int, str] | None:
    """Why a key the portal issued is refused, so that the client is told more than "invalid":
    (401, …) for a revoked key, (403, …) for a live key whose user is pending or disabled.
    None for a header without a key the portal issued, or an approved user's live key. Only
    asked after `find_api_key` refused the header."""
    token = bearer_token(authorization_header)
    if token is None or not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    api_key = first_row(ApiKey, {"key_hash": _candidate_hashes(token)}, related=("user",))
    if api_key is None:
        return None
    user = api_key.user
    disabled = user.status == User.Status.DISABLED or not user.is_active
    if api_key.revoked_at is not None:
        if disabled:
            return 401, "This API key was revoked, and the account it belongs to is disabled."
        revoked = timezone.localtime(api_key.revoked_at)
        return 401, (
            f"This API key was revoked on {revoked:%Y-%m-%d %H:%M}. Create a new one on your "
            "API keys page."
        )
    if user.is_approved:
        return None
    if disabled:
        return 403, "The account this API key belongs to is disabled. An admin can enable it again."
    return 403, "The account this API key belongs to is waiting for an admin's approval."


def still_allowed(user_id: int, api_key_id: int | None = None) -> bool:
    """Whether a user — and the key they came with, if any — may still use the portal: one
    indexed query, for requests that outlive their start (streams check it while they run,
    every STREAM_ACCESS_CHECK_SECONDS). A plain one (common/rows.py): the ORM's compiling
    cost ~0.9 ms of CPU a check (docs/benchmarks.md §1j); and none at all, only the counters'
    read, while no key or user changed (§1l)."""
    versions = lookup_versions()
    version = versions.accounts if versions is not None else None
    if api_key_id is not None:
        api_key = first_row(
            ApiKey, {"id": api_key_id, "revoked_at": None}, related=("user",), version=version
        )
        return api_key is not None and api_key.user_id == user_id and api_key.user.is_approved
    user = first_row(User, {"id": user_id}, version=version)
    return user is not None and user.is_approved


def authenticate_api_key(authorization_header: str | None) -> User | None:
    """The approved user whose live API key is in `Authorization: Bearer <key>`, else None.

    Refuses missing or malformed headers, unknown and revoked keys, and keys of pending,
    disabled or inactive users. Records the key's last use at most once a minute.
    """
    api_key = find_api_key(authorization_header)
    return api_key.user if api_key is not None else None


# --- throttling failed attempts -----------------------------------------------------------------
# A burst of wrong keys from one address gets 429 once it passes API_KEY_FAILURES_PER_MINUTE in
# a window. Counters live in the default cache (the database: it works while Redis is down).
# A valid key is still accepted from a throttled address: a team behind one proxy shares its
# address, and 256-bit keys cannot be guessed — the limit keeps a misbehaving script or a
# scanner visible and cheap, without locking everyone else out.


def _failure_key(address: str) -> str:
    window = int(time.time() // FAILURE_WINDOW_SECONDS)
    return f"api-key-failures:{address}:{window}"


def failed_attempts_exceeded(address: str) -> bool:
    """Whether `address` has used up its failed key attempts in the current window."""
    return (cache.get(_failure_key(address)) or 0) >= settings.API_KEY_FAILURES_PER_MINUTE


def record_failed_attempt(address: str) -> None:
    key = _failure_key(address)
    cache.add(key, 0, timeout=FAILURE_WINDOW_SECONDS * 2)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr: start the window again
        cache.set(key, 1, timeout=FAILURE_WINDOW_SECONDS * 2)


def seconds_until_retry() -> int:
    return FAILURE_WINDOW_SECONDS - int(time.time() % FAILURE_WINDOW_SECONDS)
