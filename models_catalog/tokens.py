"""The portal's Hugging Face token, set by an admin: stored encrypted, checked with whoami."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from accounts.audit import log as audit
from models_catalog import crypto, hub
from models_catalog.hub import HubError
from models_catalog.models import HubSettings


@dataclass(frozen=True)
class TokenStatus:
    source: str  # "portal", "environment" or ""
    hint: str  # the token's last characters, never the token
    checked_user: str
    checked_at: object
    problem: str


def token_status() -> TokenStatus:
    row = HubSettings.objects.filter(pk=1).first()
    _, problem = hub.stored_token()
    return TokenStatus(
        source=hub.token_source(),
        hint=row.token_hint if row else "",
        checked_user=row.checked_user if row else "",
        checked_at=row.checked_at if row else None,
        problem=problem,
    )


# The audit log names the setting and whether a token is set, and for whom: never the token.
HUB_TOKEN = audit.Target("setting", "hub-token", "Hugging Face token")


def _audited(row: HubSettings) -> dict:
    return {"token": "set" if row.token_encrypted else "not set", "belongs to": row.checked_user}


def _hint(token: str) -> str:
    return f"{token[:3]}…{token[-4:]}"


def save_hub_token(token: str, user) -> tuple[HubSettings, str]:
    """Check `token` with the Hub and store it encrypted. Returns `(row, warning)`; a token
    the Hub rejects raises HubError and is not stored. When the Hub cannot be reached the
    token is stored anyway, with a warning."""
    warning = ""
    checked_user = ""
    try:
        checked_user = hub.whoami(token)
    except HubError as exc:
        if not exc.retryable:
            raise
        warning = f"Saved, but not checked: {exc.message}"
    row = HubSettings.load()
    before = _audited(row)
    row.token_encrypted = crypto.encrypt(token)
    row.token_hint = _hint(token)
    row.checked_user = checked_user
    row.checked_at = timezone.now() if checked_user else None
    row.updated_by = user
    row.save()
    audit.record(user, audit.Action.SETTING_CHANGE, HUB_TOKEN, before=before, after=_audited(row))
    return row, warning


def check_hub_token() -> str:
    """whoami with the token in use; returns the user name and records it."""
    token = hub.hub_token()
    if not token:
        raise HubError("No Hugging Face token is set: paste one below.")
    name = hub.whoami(token)
    if hub.token_source() == "portal":
        HubSettings.objects.filter(pk=1).update(checked_user=name, checked_at=timezone.now())
    return name


def clear_hub_token(user) -> None:
    row = HubSettings.load()
    before = _audited(row)
    row.token_encrypted = ""
    row.token_hint = ""
    row.checked_user = ""
    row.checked_at = None
    row.updated_by = user
    row.save()
    audit.record(user, audit.Action.SETTING_CHANGE, HUB_TOKEN, before=before, after=_audited(row))
