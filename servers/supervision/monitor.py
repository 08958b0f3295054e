"""The figures of this host's running model servers (memory and CPU of each process tree),
measured by the host's Celery worker and stored on the instance rows.

A thread of each host's worker (started when the worker is ready, like its heartbeat) calls
`sample_servers()` every `MLX_PORTAL_SERVER_STATS_SECONDS` (2 s). The Servers page's tiles
then read the figures with the rest of the row, in the one query they make, for this host's
servers and every other host's alike; the web tier never walks the process table.

Why not in the web tier, as it was: psutil reads /proc, one system call after another, and
each call lets go of the GIL. In a gunicorn worker busy with other requests, each time it
takes the GIL back costs up to the switch interval (5 ms), so a refresh that costs 5 ms of
CPU took 15 ms of wall time at the median and up to 190 ms, and the tiles poll that did it
was the p99 of the status-poll bench (docs/benchmarks.md §2f). And a web tier can only
measure its own machine's processes: another host's servers showed no figures at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.timesince import timesince

from common import periodic
from common.periodic import Periodic
from servers.models import ACTIVE_STATES, ServerInstance, State
from servers.supervision import probes, supervisor


def sample_servers(host_name: str | None = None) -> int:
    """Measure every active server of `host_name` (this host) that has a process, and store
    its figures (rss, cpu_percent, stats_at, and for a running one what it is `busy` with) on
    its instance; returns how many were measured. A process that is gone is stored without
    figures: the supervisor marks it failed."""
    rows = ServerInstance.objects.filter(
        profile__host__name=host_name or settings.HOST_NAME,
        state__in=ACTIVE_STATES,
        pid__isnull=False,
    ).values_list("pk", "pid", "process_create_time", "state", "port")
    children = supervisor.children_map() if rows else {}
    samples = [
        (
            pk,
            supervisor.stats(pid, create_time, children),
            probes.server_busy(port) if state == State.RUNNING and port else None,
        )
        for pk, pid, create_time, state, port in rows
    ]
    now = timezone.now()
    with transaction.atomic():  # one commit per pass, after the measuring
        for pk, sample, busy in samples:
            ServerInstance.objects.filter(pk=pk).update(
                rss=sample.rss if sample else None,
                cpu_percent=sample.cpu_percent if sample else None,
                busy=busy if sample else None,
                stats_at=now,
            )
    return sum(sample is not None for _, sample, _ in samples)


def max_age() -> timedelta:
    """How old figures may be and still be shown: a few missed samples, at least 10 s."""
    return timedelta(seconds=max(3 * settings.SERVER_STATS_SECONDS, 10.0))


def is_fresh(
    stats_at: datetime | None, started_at: datetime | None = None, now: datetime | None = None
) -> bool:
    """Whether figures measured at `stats_at` describe the process started at `started_at`
    (none from before a restart) and are recent enough to show."""
    if stats_at is None or (started_at is not None and stats_at < started_at):
        return False
    return (now or timezone.now()) - stats_at <= max_age()


def start_sampler() -> Periodic:
    """Start this process's sampler for `settings.HOST_NAME` (once; later calls return it)."""
    name = f"server-stats-{settings.HOST_NAME}"
    make = lambda: Periodic(name, settings.SERVER_STATS_SECONDS, sample_servers)  # noqa: E731
    return periodic.start_once("server-stats", make)


def stop_sampler() -> None:
    periodic.stop("server-stats")


def busy_notice(busy: dict[str, Any] | None, now: datetime | None = None) -> str:
    """What a tile says of a server whose oldest request has taken SERVER_BUSY_NOTICE_SECONDS
    or more ("" otherwise): one long prompt can keep a server from everyone else (pure but for
    the setting)."""
    oldest = (busy or {}).get("oldest") or {}
    age = oldest.get("age_seconds") or 0
    if age < settings.SERVER_BUSY_NOTICE_SECONDS:
        return ""
    now = now or timezone.now()
    text = f"Busy for {timesince(now - timedelta(seconds=age), now)} with one request"
    done, total = oldest.get("prompt_tokens_done") or 0, oldest.get("prompt_tokens") or 0
    generated = oldest.get("generated_tokens") or 0
    if generated:
        text += f": {generated:,} tokens generated"
    elif total:
        text += f": reading its prompt, {done:,} of {total:,} tokens"
    others = busy["requests"] - 1
    if others > 0:
        text += f" ({others} more request{'s' if others > 1 else ''} in progress)"
    return text + "."
