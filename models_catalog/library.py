""" "My models": what a host's Hugging Face cache holds, however it got there, with size, last
use and whether a server or a download holds it; and deleting a model from that cache.

This machine's cache is read from the disk. Another host's is the list its worker reported in
its last heartbeat (models_catalog/hosts/facts.py), and a delete there is a task on its queue: only
its worker touches its disk (docs/hosts.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from models_catalog import cache, downloads
from models_catalog.hosts.queue import enqueue
from models_catalog.last_used import last_used_times, models_in_use
from models_catalog.local import (
    LocalModel,
    list_local_models,
    local_model_path,
    repos_with_a_folder,
)
from models_catalog.models import Download, Host
from models_catalog.validators import validate_repo_id

log = logging.getLogger(__name__)

#: The task a delete on another host sends to its queue (by name: models_catalog/tasks.py).
DELETE_TASK = "models_catalog.delete_model"


class DeleteRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class MyModel:
    local: LocalModel
    last_used: datetime | None  # recorded when a server started it, else the cache's last access
    last_used_recorded: bool
    in_use: bool
    downloading: bool
    may_delete: bool = True  # the viewer is an admin or downloaded it (`may_delete`)

    @property
    def repo_id(self) -> str:
        return self.local.repo_id


def downloaders(host: Host) -> dict[str, set[int]]:
    """Who downloaded each model on `host` through the portal: repo id → user ids."""
    found: dict[str, set[int]] = {}
    rows = Download.objects.filter(host=host, requested_by__isnull=False)
    for repo_id, user_id in rows.values_list("repo_id", "requested_by_id").distinct():
        found.setdefault(repo_id, set()).add(user_id)
    return found


def may_delete(user, repo_id: str, host: Host, known: dict[str, set[int]] | None = None) -> bool:
    """The rule of who may delete a model from a host's shared cache: an admin, or a member who
    downloaded it there through the portal (a model put there by other means: admins only)."""
    if user.is_admin:
        return True
    known = downloaders(host) if known is None else known
    return user.pk in known.get(repo_id, set())


def reported_local_models(host: Host) -> list[LocalModel]:
    """The models of `host`'s cache as its worker last reported them (pure: the row's list).
    A report from before a field existed leaves it empty (0 files, no dates)."""
    models = []
    for entry in host.local_models or []:
        if not isinstance(entry, dict) or not entry.get("repo_id"):
            continue
        accessed, modified = (_when(entry.get(key)) for key in ("last_accessed", "last_modified"))
        models.append(
            LocalModel(
                repo_id=str(entry["repo_id"]),
                path=Path(host.hf_cache_dir or "."),
                revision=str(entry.get("revision") or ""),
                size_on_disk=int(entry.get("size") or 0),
                nb_files=int(entry.get("files") or 0),
                last_accessed=accessed,
                last_modified=modified,
            )
        )
    return models


def local_model_on(host: Host, repo_id: str, here: LocalModel | None = None) -> LocalModel | None:
    """`repo_id` in `host`'s cache: `here` (read from this machine's disk by the caller) for
    this machine, else as its worker last reported it; None when it is not there."""
    if host.is_this_machine:
        return here
    return next((m for m in reported_local_models(host) if m.repo_id == repo_id), None)


def models_on(host: Host, repo_ids: list[str]) -> set[str]:
    """Which of `repo_ids` are on `host`'s disk: for this machine one directory listing, then
    a look at the few repos that have a folder; another host's from its worker's report."""
    if not host.is_this_machine:
        return set(repo_ids) & set(host.model_ids())
    found = set()
    for repo_id in repos_with_a_folder(repo_ids):
        try:
            if local_model_path(repo_id) is not None:
                found.add(repo_id)
        except ValidationError:
            continue
    return found


def _when(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int | float) else None


def my_models(host: Host | None = None, viewer=None) -> list[MyModel]:
    """The models on `host`'s disk, each saying whether `viewer` (when given) may delete it."""
    host = host or Host.objects.this_machine()
    known = downloaders(host) if viewer is not None else {}
    used_at = last_used_times(host)
    in_use = models_in_use(host)
    downloading = set(
        Download.objects.filter(host=host, state__in=Download.ACTIVE_STATES).values_list(
            "repo_id", flat=True
        )
    )
    local = list_local_models() if host.is_this_machine else reported_local_models(host)
    rows = []
    for model in local:
        recorded = used_at.get(model.repo_id)
        rows.append(
            MyModel(
                local=model,
                last_used=recorded or model.last_accessed,
                last_used_recorded=recorded is not None,
                in_use=model.repo_id in in_use,
                downloading=model.repo_id in downloading,
                may_delete=viewer is None or may_delete(viewer, model.repo_id, host, known),
            )
        )
    return rows


def _refuse_if_held(repo_id: str, host: Host) -> None:
    if repo_id in models_in_use(host):
        raise DeleteRefused(
            f"{repo_id} is in use by a running server: stop that server first, then delete it."
        )
    active = Download.objects.filter(host=host, repo_id=repo_id, state__in=Download.ACTIVE_STATES)
    if active.exists():
        raise DeleteRefused(
            f"{repo_id} is being downloaded: cancel the download under Downloads first."
        )


def delete_local_model(repo_id: str, host: Host | None = None, by: str = "") -> int:
    """Remove `repo_id` from this machine's cache; refused while a server uses it or a
    download writes into it. Its completed downloads then say Deleted, by `by` (a user's name;
    `downloads.record_deletion`). Returns the bytes freed."""
    validate_repo_id(repo_id)
    host = host or Host.objects.this_machine()
    _refuse_if_held(repo_id, host)
    if not cache.repo_dir(repo_id).is_dir():
        raise DeleteRefused(f"{repo_id} is not on this host's disk (already deleted?).")
    freed = cache.delete_repo(repo_id)
    downloads.record_deletion(repo_id, host, by)
    return freed


def delete_model(repo_id: str, host: Host, by: str = "") -> int | None:
    """Remove `repo_id` from `host`'s cache: at once on this machine (returns the bytes freed),
    through a task on the host's queue elsewhere (returns None: its worker deletes it and
    reports its list again). Refused as `delete_local_model`, while the host is offline, and
    when Redis does not take the task. `by` names who asked, for the downloads that then say
    Deleted."""
    validate_repo_id(repo_id)
    if host.is_this_machine:
        return delete_local_model(repo_id, host, by)
    _refuse_if_held(repo_id, host)
    if not host.is_online:
        raise DeleteRefused(
            f"{host.name} is offline: its worker must be running to delete files on its disk."
        )
    if repo_id not in host.model_ids():
        raise DeleteRefused(f"{repo_id} is not on {host.name}'s disk (already deleted?).")

    def not_sent(_error: Exception) -> None:
        raise DeleteRefused(
            f"The delete of {repo_id} could not be sent to {host.name}'s worker: Redis (the "
            "task queue) is not answering. Nothing was deleted; try again once it is back "
            "(/healthz shows what is down)."
        )

    # Outside a transaction (a page's POST) the message is sent at once, so a refusal is
    # raised from here; inside one, from its commit.
    enqueue(DELETE_TASK, host, args=[repo_id], kwargs={"deleted_by": by}, on_failure=not_sent)
    return None


def delete_on_this_host(repo_id: str, deleted_by: str = "") -> str:
    """What a host's worker does for `delete_model`: delete from this machine's cache (checked
    again here), then report the host's facts and models at once. Returns what happened."""
    host = Host.objects.this_machine()
    try:
        freed = delete_local_model(repo_id, host, deleted_by)
    except (DeleteRefused, ValidationError) as exc:
        ok, outcome = False, f"Not deleted: {getattr(exc, 'message', exc)}"
        log.warning("Deleting %s on %s: %s", repo_id, host.name, outcome)
    else:
        ok, outcome = True, f"Deleted {repo_id}: {filesizeformat(freed)} freed."
        log.info("%s (host %s)", outcome, host.name)
    # For the page that sent it (My models polls this host's row): a refusal found only
    # here, such as a server started meanwhile, is shown there, not only in this log.
    Host.objects.filter(pk=host.pk).update(
        last_delete={"repo_id": repo_id, "ok": ok, "message": outcome},
        last_delete_at=timezone.now(),
    )
    host.record_heartbeat()
    return outcome
