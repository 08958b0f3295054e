"""What the Servers page's tiles show, and the 2-s poll made cheap.

Every open Servers page asks for the tiles every 2 s, and most polls find nothing changed. So
a poll reads what the tiles show as plain values — one query for the profiles with their
instance (with the memory and CPU figures its host's worker stored: servers/supervision/monitor.py),
host and owner, one for the usage records added since the last poll (`records.UsageWindow`) — with
every text that depends on the time already written out ("3 minutes") and the viewer's rights
already decided (`can_edit`). Those values are the tiles: their hash is the `version`, and the
HTML is a pure function of it. Hence:

* a poll that sends back the version it shows (`X-Tiles-Version`, static/js/servers.js) and
  still has it gets `204 No Content`, which htmx does not swap (nothing re-rendered or moved);
* any other poll gets the fragment rendered once per version and process (`fragment()`), so
  many viewers and a browser without the header cost one render between changes.

Nothing is cached that a change in the database would not show at once: the version is
computed from the rows of this request. The usage figures are this process's sums by minute,
brought up to date at each poll (see `records.UsageWindow`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.template.loader import get_template
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from common.rows import compiled_rows
from models_catalog.hosts import facts as host_facts
from models_catalog.hosts.facts import heard_ago
from servers import memory_plan
from servers.models import (
    ACTIVE_STATES,
    ServerProfile,
    State,
    may_edit,
    shown_state,
    slots,
)
from servers.sharing import admission
from servers.supervision import lifecycle, monitor
from servers.usage import records

FRAGMENTS_KEPT = 32  # rendered fragments kept per process (one per version: filter, viewer)
TILES_KEPT = 512  # rendered tiles kept per process (one per value of a tile)

_COLUMNS = (
    "pk", "slug", "name", "model_id", "engine", "port", "description", "auto_start",
    "idle_timeout_minutes", "owner_id", "owner__email", "host__name", "host__last_heartbeat",
    "instance__state", "instance__desired_state", "instance__reason",
    "instance__state_changed_at", "instance__pid", "instance__process_create_time",
    "instance__started_at", "instance__exit_code", "instance__log_tail",
    "instance__restart_count", "instance__next_restart_at", "instance__last_error",
    "instance__last_error_kind", "instance__rss", "instance__cpu_percent", "instance__stats_at",
    "instance__port", "instance__busy", "max_in_flight", "decode_concurrency",
    "host_id", "draft_model_id", "kv_bits",
)  # fmt: skip


@dataclass(frozen=True)
class Tile:
    """One server tile, as shown to one viewer now: plain values, no database access."""

    slug: str
    name: str
    model_id: str
    engine: str  # servers.models.Engine: which figures its usage is counted in
    description: str
    host_name: str
    host_last_heard: str  # "3 minutes" ("" if never); shown while the host is offline
    port: int  # the profile's
    serving_port: int | None  # the port a live server still uses when the profile's changed since
    owner_email: str
    auto_start: bool
    idle_timeout_minutes: int
    shown: str  # the state a page shows (ServerProfile.shown_state)
    state: str  # the instance's stored state ("" without an instance row)
    uptime: str  # "1 hour, 3 minutes" while running
    pid: int | None
    rss: str  # "1.2 GB" ("" without fresh figures from its host's worker)
    cpu_percent: float | None
    busy: str  # "Busy for 3 minutes with one request: …" ("" unless one has taken a while)
    usage: records.TileStats | None
    reason: str
    state_changed_at: datetime | None
    reason_age: str  # "5 minutes"
    restart_attempt: int | None  # the automatic restart about to be tried, if any
    restarts_used_up: int | None  # failed again after this many automatic restarts: no more
    last_error: str
    log_tail: str  # only kept for a failed server
    exit_code: int | None
    can_edit: bool  # the viewer owns the profile or is an admin
    can_override_memory: bool  # an admin, and the last start was refused for memory
    slots: int  # requests the portal lets through at once (servers/sharing)
    in_flight: int  # requests let through now
    waiting: int  # requests waiting in its fair queue
    need: str  # its memory need in the host's plan, "about 5.2 GB: weights …" ("" unknown)


def _since(value: datetime | None) -> str:
    return timesince(value) if value else ""


def tiles_for(user, query: str = "", pk: int | None = None) -> list[Tile]:
    """The tiles `user` sees for the filter `query` (or for the one profile `pk`): one query
    for the profiles, one for the usage figures, whatever the number of servers."""
    if query or pk is not None:
        profiles = lifecycle.profiles_for_tiles(query)
        if pk is not None:
            profiles = profiles.filter(pk=pk)
        rows = list(profiles.values_list(*_COLUMNS))
    else:  # the poll of every open Servers page: the same query each time, compiled once
        rows = compiled_rows(
            ServerProfile, "tiles", lambda: lifecycle.profiles_for_tiles().values_list(*_COLUMNS)
        )
    hidden = ServerProfile.objects.hidden_from(user)
    rows = [row for row in rows if row[0] not in hidden]
    queues = admission.queues(row[0] for row in rows)
    figures = records.shared_tile_stats()
    online: dict[str, bool] = {}
    now = timezone.now()
    tiles = []
    for row in rows:
        r = dict(zip(_COLUMNS, row, strict=True))
        host = r["host__name"]
        if host not in online:
            online[host] = host_facts.is_online(r["host__last_heartbeat"], now)
        state = r["instance__state"] or ""
        shown = shown_state(online[host], state or None)
        # Figures its host's worker measured lately (any host), while the server is up.
        measured = (
            state in ACTIVE_STATES
            and shown != "unknown"
            and r["instance__rss"] is not None
            and monitor.is_fresh(r["instance__stats_at"], r["instance__started_at"], now)
        )
        failed = state == State.FAILED
        restart_attempt = restarts_used_up = None
        if failed and r["instance__desired_state"] == "running":
            if r["instance__next_restart_at"]:
                restart_attempt = r["instance__restart_count"] + 1
            elif r["instance__restart_count"] >= settings.SERVER_MAX_RESTARTS:
                restarts_used_up = r["instance__restart_count"]
        tiles.append(
            Tile(
                slug=r["slug"],
                name=r["name"],
                model_id=r["model_id"],
                engine=r["engine"],
                description=r["description"],
                host_name=host,
                host_last_heard=heard_ago(r["host__last_heartbeat"]) if shown == "unknown" else "",
                port=r["port"],
                serving_port=(
                    r["instance__port"]
                    if state in ACTIVE_STATES and r["instance__port"] not in (None, r["port"])
                    else None
                ),
                owner_email=r["owner__email"],
                auto_start=r["auto_start"],
                idle_timeout_minutes=r["idle_timeout_minutes"],
                shown=shown,
                state=state,
                uptime=_since(r["instance__started_at"]) if shown == State.RUNNING else "",
                pid=r["instance__pid"] if shown == State.RUNNING else None,  # not the last run's
                rss=filesizeformat(r["instance__rss"]) if measured else "",
                cpu_percent=r["instance__cpu_percent"] if measured else None,
                busy=monitor.busy_notice(r["instance__busy"], now) if measured else "",
                usage=figures.get(r["pk"]),
                reason=r["instance__reason"] or "",
                state_changed_at=r["instance__state_changed_at"],
                reason_age=_since(r["instance__state_changed_at"]) if r["instance__reason"] else "",
                restart_attempt=restart_attempt,
                restarts_used_up=restarts_used_up,
                last_error=r["instance__last_error"] or "",
                log_tail=(r["instance__log_tail"] or "") if failed else "",
                exit_code=r["instance__exit_code"],
                can_edit=may_edit(user, r["owner_id"]),
                can_override_memory=bool(
                    user.is_admin and r["instance__last_error_kind"] == "memory"
                ),
                slots=slots(r["max_in_flight"], r["decode_concurrency"]),
                in_flight=queue.in_flight if (queue := queues.get(r["pk"])) else 0,
                waiting=queue.waiting if queue else 0,
                need=_need_text(r),
            )
        )
    return tiles


def _need_text(row: dict) -> str:
    need = memory_plan.remembered_need(
        row["host_id"], row["host__name"], row["model_id"], row["draft_model_id"], row["kv_bits"]
    )
    return memory_plan.describe(need) if need is not None else ""


def version(tiles: list[Tile], query: str) -> str:
    """A short hash of everything the tiles fragment shows: same version, same HTML."""
    shown = repr((_markup(), query, tiles)).encode()
    return hashlib.blake2b(shown, digest_size=12).hexdigest()


@functools.cache
def _markup() -> str:
    """The template's own hash, so that a page open across a deploy gets the new markup."""
    source = get_template("servers/list.html").template.source
    return hashlib.blake2b(source.encode(), digest_size=8).hexdigest()


class _Rendered:
    """HTML rendered once per key and process, the most recently used `kept` kept."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._html: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, render: Callable[[], str]) -> str:
        with self._lock:
            html = self._html.get(key)
            if html is not None:
                self._html.move_to_end(key)
                return html
        html = render()
        with self._lock:
            self._html[key] = html
            while len(self._html) > self.kept:
                self._html.popitem(last=False)
        return html


_fragments = _Rendered(FRAGMENTS_KEPT)
_tiles = _Rendered(TILES_KEPT)


def tile_html(tile: Tile) -> str:
    """One tile (`servers/list.html#tile`), rendered once per process and value of the tile.

    A new version usually changes a few tiles (a running server's CPU figure, say); the others
    are not rendered again. Rendering all twenty tiles of the status-poll bench cost ~13 ms of
    CPU, and every such render was among the slowest polls (docs/benchmarks.md §2f)."""
    key = hashlib.blake2b(repr((_markup(), tile)).encode(), digest_size=12).hexdigest()
    template = get_template("servers/list.html#tile")
    return _tiles.get(key, lambda: template.render({"tile": tile}))


def context(tiles: list[Tile], query: str, tiles_version: str) -> dict:
    """What `servers/list.html` and its `tiles` partial render the tiles from."""
    return {
        "tiles": tiles,
        # Safe: each tile is the output of the autoescaping template `servers/list.html#tile`,
        # which escaped every value of the tile (names, descriptions, log tails) itself.
        "tiles_html": [mark_safe(tile_html(tile)) for tile in tiles],  # noqa: S308
        "q": query,
        "tiles_version": tiles_version,
    }


def fragment(tiles: list[Tile], query: str, tiles_version: str) -> str:
    """The tiles partial (`servers/list.html#tiles`) for this version, rendered once per
    process and version (it depends on nothing else: no request, no viewer, no clock)."""
    return _fragments.get(
        tiles_version,
        lambda: get_template("servers/list.html#tiles").render(
            context(tiles, query, tiles_version)
        ),
    )
