"""What the Servers page's tiles show, and the 2-s poll made cheap.

Every open Servers page asks for the tiles every 2 s, and most polls find nothing changed. So
a poll reads what the tiles show as plain values — one query for the profiles with their
instance, host and owner, one for the newest usage record (`usage.shared_tile_stats`), the
process figures from `supervisor.stats` (a sample shared for a second) — with every text that
depends on the time already written out ("3 minutes") and the viewer's rights already decided
(`can_edit`). Those values are the tiles: their hash is the `version`, and the HTML is a pure
function of it. Hence:

* a poll that sends back the version it shows (`X-Tiles-Version`, static/js/servers.js) and
  still has it gets `204 No Content`, which htmx does not swap (nothing re-rendered or moved);
* any other poll gets the fragment rendered once per version and process (`fragment()`), so
  many viewers and a browser without the header cost one render between changes.

Nothing is cached that a change in the database would not show at once: the version is
computed from the rows of this request. Only the usage figures and the process sample are
shared, and only for a few seconds (see `usage.shared_tile_stats`, `supervisor.STATS_MAX_AGE`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.template.loader import get_template
from django.utils.timesince import timesince

from models_catalog.models import Host
from servers import services, supervisor, usage
from servers.models import ACTIVE_STATES, State, shown_state

FRAGMENTS_KEPT = 32  # rendered fragments kept per process (one per version: filter, viewer)

_COLUMNS = (
    "pk", "slug", "name", "model_id", "port", "description", "auto_start",
    "idle_timeout_minutes", "owner_id", "owner__email", "host__name", "host__last_heartbeat",
    "instance__state", "instance__desired_state", "instance__reason",
    "instance__state_changed_at", "instance__pid", "instance__process_create_time",
    "instance__started_at", "instance__exit_code", "instance__log_tail",
    "instance__restart_count", "instance__next_restart_at", "instance__last_error",
    "instance__last_error_kind",
)  # fmt: skip


@dataclass(frozen=True)
class Tile:
    """One server tile, as shown to one viewer now: plain values, no database access."""

    slug: str
    name: str
    model_id: str
    description: str
    host_name: str
    host_last_heard: str  # "3 minutes" ("" if never); shown while the host is offline
    port: int
    owner_email: str
    auto_start: bool
    idle_timeout_minutes: int
    shown: str  # the state a page shows (ServerProfile.shown_state)
    state: str  # the instance's stored state ("" without an instance row)
    uptime: str  # "1 hour, 3 minutes" while running
    pid: int | None
    rss: str  # "1.2 GB" ("" when the process is not measured here)
    cpu_percent: float | None
    usage: usage.TileStats | None
    reason: str
    state_changed_at: datetime | None
    reason_age: str  # "5 minutes"
    restart_attempt: int | None  # the automatic restart about to be tried, if any
    last_error: str
    log_tail: str  # only kept for a failed server
    exit_code: int | None
    can_edit: bool  # the viewer owns the profile or is an admin
    can_override_memory: bool  # an admin, and the last start was refused for memory


def _since(value: datetime | None) -> str:
    return timesince(value) if value else ""


def tiles_for(user, query: str = "", pk: int | None = None) -> list[Tile]:
    """The tiles `user` sees for the filter `query` (or for the one profile `pk`): one query
    for the profiles, one or two for the usage figures, whatever the number of servers."""
    profiles = services.profiles_for_tiles(query)
    if pk is not None:
        profiles = profiles.filter(pk=pk)
    rows = list(profiles.values_list(*_COLUMNS))
    figures = usage.shared_tile_stats()
    online: dict[str, bool] = {}
    tiles = []
    for row in rows:
        r = dict(zip(_COLUMNS, row, strict=True))
        host = r["host__name"]
        if host not in online:
            online[host] = Host.heartbeat_is_recent(r["host__last_heartbeat"])
        state = r["instance__state"] or ""
        shown = shown_state(online[host], state or None)
        sample = None
        if state in ACTIVE_STATES and host == settings.HOST_NAME:  # services.is_local
            sample = supervisor.stats(r["instance__pid"], r["instance__process_create_time"])
        failed = state == State.FAILED
        restart_attempt = None
        if failed and r["instance__next_restart_at"] and r["instance__desired_state"] == "running":
            restart_attempt = r["instance__restart_count"] + 1
        tiles.append(
            Tile(
                slug=r["slug"],
                name=r["name"],
                model_id=r["model_id"],
                description=r["description"],
                host_name=host,
                host_last_heard=_since(r["host__last_heartbeat"]) if shown == "unknown" else "",
                port=r["port"],
                owner_email=r["owner__email"],
                auto_start=r["auto_start"],
                idle_timeout_minutes=r["idle_timeout_minutes"],
                shown=shown,
                state=state,
                uptime=_since(r["instance__started_at"]) if shown == State.RUNNING else "",
                pid=r["instance__pid"],
                rss=filesizeformat(sample.rss) if sample else "",
                cpu_percent=sample.cpu_percent if sample else None,
                usage=figures.get(r["pk"]),
                reason=r["instance__reason"] or "",
                state_changed_at=r["instance__state_changed_at"],
                reason_age=_since(r["instance__state_changed_at"]) if r["instance__reason"] else "",
                restart_attempt=restart_attempt,
                last_error=r["instance__last_error"] or "",
                log_tail=(r["instance__log_tail"] or "") if failed else "",
                exit_code=r["instance__exit_code"],
                can_edit=bool(user.is_admin or user.pk == r["owner_id"]),
                can_override_memory=bool(
                    user.is_admin and r["instance__last_error_kind"] == "memory"
                ),
            )
        )
    return tiles


def version(tiles: list[Tile], query: str) -> str:
    """A short hash of everything the tiles fragment shows: same version, same HTML."""
    shown = repr((_markup(), query, tiles)).encode()
    return hashlib.blake2b(shown, digest_size=12).hexdigest()


@functools.cache
def _markup() -> str:
    """The template's own hash, so that a page open across a deploy gets the new markup."""
    source = get_template("servers/list.html").template.source
    return hashlib.blake2b(source.encode(), digest_size=8).hexdigest()


_fragments: OrderedDict[str, str] = OrderedDict()
_fragments_lock = threading.Lock()


def fragment(tiles: list[Tile], query: str, tiles_version: str) -> str:
    """The tiles partial (`servers/list.html#tiles`) for this version, rendered once per
    process and version (it depends on nothing else: no request, no viewer, no clock)."""
    with _fragments_lock:
        html = _fragments.get(tiles_version)
        if html is not None:
            _fragments.move_to_end(tiles_version)
            return html
    context = {"tiles": tiles, "q": query, "tiles_version": tiles_version}
    html = get_template("servers/list.html#tiles").render(context)
    with _fragments_lock:
        _fragments[tiles_version] = html
        while len(_fragments) > FRAGMENTS_KEPT:
            _fragments.popitem(last=False)
    return html
