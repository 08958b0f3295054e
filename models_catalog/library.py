""" "My models": what this host's Hugging Face cache holds, however it got there, with size,
last use and whether a server or a download holds it; and deleting a model from the cache."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from models_catalog import cache
from models_catalog.local import LocalModel, list_local_models
from models_catalog.models import Download, Host
from models_catalog.usage import last_used, models_in_use
from models_catalog.validators import validate_repo_id


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

    @property
    def repo_id(self) -> str:
        return self.local.repo_id


def my_models(host: Host | None = None) -> list[MyModel]:
    host = host or Host.local()
    used_at = last_used(host)
    in_use = models_in_use()
    downloading = set(
        Download.objects.filter(host=host, state__in=Download.ACTIVE_STATES).values_list(
            "repo_id", flat=True
        )
    )
    rows = []
    for model in list_local_models():
        recorded = used_at.get(model.repo_id)
        rows.append(
            MyModel(
                local=model,
                last_used=recorded or model.last_accessed,
                last_used_recorded=recorded is not None,
                in_use=model.repo_id in in_use,
                downloading=model.repo_id in downloading,
            )
        )
    return rows


def delete_local_model(repo_id: str, host: Host | None = None) -> int:
    """Remove `repo_id` from this host's cache; refused while a server uses it or a download
    writes into it. Returns the bytes freed."""
    validate_repo_id(repo_id)
    host = host or Host.local()
    if repo_id in models_in_use():
        raise DeleteRefused(
            f"{repo_id} is in use by a running server: stop that server first, then delete it."
        )
    active = Download.objects.filter(host=host, repo_id=repo_id, state__in=Download.ACTIVE_STATES)
    if active.exists():
        raise DeleteRefused(
            f"{repo_id} is being downloaded: cancel the download under Downloads first."
        )
    if not cache.repo_dir(repo_id).is_dir():
        raise DeleteRefused(f"{repo_id} is not on this host's disk (already deleted?).")
    return cache.delete_repo(repo_id)
