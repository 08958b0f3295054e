"""Template helpers of the download side: `{% download_state repo_id as state %}` and the
`duration` / `can_cancel` filters."""

from __future__ import annotations

from django import template
from django.core.exceptions import ValidationError

from models_catalog.local import local_model_path
from models_catalog.models import Download, Host
from models_catalog.validators import validate_repo_id

register = template.Library()


@register.simple_tag
def download_state(repo_id: str, host: Host | None) -> dict:
    """What the download action of `repo_id` shows: its latest download on `host` (the page's
    host, in its context; the active one first) and whether the model is on that host's disk.
    A template tag looks nothing up beyond that: no host, nothing to show."""
    if host is None:
        return {"invalid": "No host to download to."}
    try:
        if host.is_this_machine:
            on_disk = local_model_path(repo_id) is not None
        else:
            validate_repo_id(repo_id)
            on_disk = repo_id in host.model_ids()
    except ValidationError as exc:
        return {"invalid": exc.messages[0]}
    latest = (
        Download.objects.filter(host=host, repo_id=repo_id)
        .select_related("requested_by")
        .order_by("-created_at", "-id")
    )
    active = latest.filter(state__in=Download.ACTIVE_STATES).first()
    download = active or latest.first()
    return {"download": download, "active": active is not None, "on_disk": on_disk}


@register.filter
def duration(seconds: int | None) -> str:
    """`3725` → `1 h 2 min`; `65` → `1 min 5 s`; None → `—`."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def can_cancel(download: Download, user) -> bool:
    return download.can_be_cancelled_by(user)
