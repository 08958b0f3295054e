"""A model's last use: when each was last served on a host, and which ones a server holds now
(what My models shows, and what it refuses to delete). Not the servers' request metering
("usage", servers/usage/).

`mark_model_used(repo_id)` is for the servers app to call when a server starts a model.
`models_in_use()` asks the providers other apps registered (apps import only downward, so
`servers` registers itself here from its AppConfig.ready()):

    from models_catalog.last_used import register_in_use_provider
    register_in_use_provider(lambda host: {...repo ids of its running or starting servers...})
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

from models_catalog.models import Host, ModelUsage
from models_catalog.validators import validate_repo_id

InUseProvider = Callable[[Host], set[str]]
_providers: list[InUseProvider] = []


def register_in_use_provider(provider: InUseProvider) -> None:
    """Add a function returning the repo ids some server of a host is using."""
    if provider not in _providers:
        _providers.append(provider)


def unregister_in_use_provider(provider: InUseProvider) -> None:
    if provider in _providers:
        _providers.remove(provider)


def models_in_use(host: Host | None = None) -> set[str]:
    """Repo ids a server of `host` (this machine's by default) is using: deleting them from
    that host's disk is refused."""
    host = host or Host.objects.this_machine()
    used: set[str] = set()
    for provider in _providers:
        used |= set(provider(host))
    return used


def mark_model_used(repo_id: str, host: Host | None = None, when: datetime | None = None) -> None:
    """Record that `repo_id` was just served on `host` (this machine by default)."""
    validate_repo_id(repo_id)
    host = host or Host.objects.this_machine()
    ModelUsage.objects.update_or_create(
        host=host, repo_id=repo_id, defaults={"last_used_at": when or timezone.now()}
    )


def last_used_times(host: Host) -> dict[str, datetime]:
    """When each model of `host` was last served, as `mark_model_used` recorded it."""
    return dict(ModelUsage.objects.filter(host=host).values_list("repo_id", "last_used_at"))
