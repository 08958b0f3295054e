"""Serve: from a model on a host's disk to a running server in one action (the catalog's, My
models' and a finished download's "Serve" button).

`serve_model` finds the profile the person may use for that model on that host (their own
first) or creates one from the model's characteristics — its name, a free port, sampling from
its `generation_config.json`, a reply length bounded by its context
(`servers.validation.profile_defaults`) and its engine (`model_engine`) — then asks for it to
start. The caller opens the chat on it (the Servers page for a model that does not chat). A
model that is not on the host's disk is refused with what to do: download it first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts.audit import log as audit
from accounts.models import User
from models_catalog.characteristics import engine_of
from models_catalog.local import generation_config, list_local_models, model_config, serving_facts
from models_catalog.models import CatalogModel, Download, Host
from models_catalog.validators import validate_repo_id
from servers.models import ServerInstance, ServerProfile, State
from servers.supervision import lifecycle, ports
from servers.validation import RESERVED_SLUGS, profile_defaults

NAME_MAX = ServerProfile._meta.get_field("name").max_length or 80


class ServeRefused(Exception):
    """Serve cannot happen; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Served:
    profile: ServerProfile
    created: bool  # a new profile (else an existing one of the same model was used)
    start_error: str = ""  # the start was refused (the profile exists; the chat says so)


def on_disk(repo_id: str, host: Host) -> bool:
    return repo_id in host.model_ids()


def existing_profile(repo_id: str, host: Host, user) -> ServerProfile | None:
    """The profile of `repo_id` on `host` that Serve reuses: one `user` may see, their own
    first, then one already running, then the oldest."""
    profiles = list(
        ServerProfile.objects.visible_to(user)
        .filter(model_id=repo_id, host=host)
        .select_related("instance", "host")
        .order_by("created_at", "pk")
    )

    def rank(profile: ServerProfile) -> tuple[bool, bool]:
        instance = getattr(profile, "instance", None)
        running = instance is not None and instance.state == State.RUNNING
        return (profile.owner_id != user.pk, not running)

    return min(profiles, key=rank) if profiles else None


def _context_length(repo_id: str, host: Host) -> int | None:
    if host.is_this_machine and (known := serving_facts(repo_id).context_length):
        return known
    row = CatalogModel.objects.filter(repo_id=repo_id).only("context_length").first()
    return row.context_length if row is not None else None


def _unique(base: str, taken: set[str], limit: int) -> str:
    """`base`, or `base-2`, `base-3`… (within `limit` characters) that is not in `taken`."""
    candidate, n = base[:limit], 2
    while candidate in taken:
        suffix = f"-{n}"
        candidate, n = base[: limit - len(suffix)] + suffix, n + 1
    return candidate


def model_engine(repo_id: str, host: Host) -> str:
    """The engine that serves `repo_id` (models_catalog.characteristics.engine_of): from its
    config.json on this host's disk, else the catalog's copy, and the catalog's tags."""
    return model_engines([repo_id], host)[repo_id]


def model_engines(repo_ids: Iterable[str], host: Host) -> dict[str, str]:
    """`model_engine` of each of `repo_ids`, reading the catalog in one query (the profile
    form asks it for every model on the disk)."""
    wanted = list(dict.fromkeys(repo_ids))
    rows = {
        row.repo_id: row
        for row in CatalogModel.objects.filter(repo_id__in=wanted).only(
            "repo_id", "config", "api_config", "tags"
        )
    }
    engines = {}
    for repo_id in wanted:
        row = rows.get(repo_id)
        config = model_config(repo_id) if host.is_this_machine else None
        if config is None and row is not None:
            config = row.config if isinstance(row.config, dict) else row.api_config
        tags = row.tags if row is not None and isinstance(row.tags, list) else []
        engines[repo_id] = engine_of(config if isinstance(config, dict) else {}, tags)
    return engines


def new_profile_fields(repo_id: str, host: Host) -> dict:
    """A new profile's fields for `repo_id` on `host`: its name (the repo's), a unique slug, a
    free port, the engine that fits it and the defaults from its generation_config.json and
    context."""
    name_base = repo_id.split("/", 1)[-1]
    names = set(ServerProfile.objects.values_list("name", flat=True))
    slugs = set(ServerProfile.objects.values_list("slug", flat=True)) | RESERVED_SLUGS
    name = _unique(name_base, names, NAME_MAX)
    slug = _unique(slugify(name_base)[:80] or "model", slugs, 80)
    taken = set(ServerProfile.objects.filter(host=host).values_list("port", flat=True))
    try:
        port = ports.suggest_port(taken, check_os=host.is_this_machine)
    except LookupError as exc:
        raise ServeRefused(str(exc)) from None
    config = generation_config(repo_id) if host.is_this_machine else None
    defaults = profile_defaults(config, _context_length(repo_id, host))
    engine = model_engine(repo_id, host)
    return {
        "name": name, "slug": slug, "model_id": repo_id, "engine": engine, "host": host,
        "port": port, **defaults,
    }  # fmt: skip


def serve_model(repo_id: str, user, host: Host | None = None) -> Served:
    """Start serving `repo_id` on `host` (this machine by default) for `user`: their profile of
    it (or one they may use), else a new one; then ask for it to start."""
    host = host or Host.objects.this_machine()
    try:
        validate_repo_id(repo_id)
    except ValidationError as exc:
        raise ServeRefused(exc.messages[0]) from None
    if not on_disk(repo_id, host):
        raise ServeRefused(
            f"{repo_id} is not on {host.name}'s disk: download it first, then press Serve."
        )
    profile, created = existing_profile(repo_id, host, user), False
    for _attempt in range(3):  # another Serve may take the same name or port at once
        if profile is not None:
            break
        try:
            with transaction.atomic():
                profile = ServerProfile.objects.create(
                    owner=user, **new_profile_fields(repo_id, host)
                )
                profile.get_instance()
                audit.record(
                    user, audit.Action.PROFILE_CREATE, profile,
                    detail=f"Created by Serve for {repo_id}.",
                )  # fmt: skip
            created = True
        except IntegrityError:
            profile = existing_profile(repo_id, host, user)
    if profile is None:
        raise ServeRefused("Another profile took the same name or port a moment ago: try again.")
    try:
        lifecycle.request_start(profile, user)
    except lifecycle.StartRefused as exc:
        return Served(profile, created, start_error=str(exc))
    return Served(profile, created)


@dataclass(frozen=True)
class Step:
    key: str
    done: bool


def first_steps() -> list[Step]:
    """An admin's first steps on a new portal, each checked from what is: people approved
    (someone besides the first admin, and nobody waiting), a model downloaded (on this host's
    disk, or a finished download on any host), and a model served (a server has answered)."""
    approved = User.objects.filter(status=User.Status.APPROVED).count()
    waiting = User.objects.filter(status=User.Status.PENDING).exists()
    downloaded = Download.objects.filter(state=Download.State.COMPLETED).exists() or bool(
        list_local_models()
    )
    served = ServerInstance.objects.exclude(ready_at=None).exists()
    return [
        Step("approve", approved > 1 and not waiting),
        Step("download", downloaded),
        Step("serve", served),
    ]
