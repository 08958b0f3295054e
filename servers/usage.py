"""Usage of the model servers as the portal measures it: recording and the numbers shown.

`recorder(...)` gives the callback a `gateway.Relay` calls once a request has finished;
`tile_stats()` feeds the server tiles (one query for all tiles); `summary()` the Usage page;
servers/metrics.py the Prometheus endpoint. See docs/gateway.md, "Usage recording".
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db.models import Avg, BigIntegerField, Count, F, Func, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from config.rows import compiled_rows
from servers.gateway import Measure
from servers.models import ServerProfile, UsageRecord

CANCELLED_STATUS_CODE = 499  # "client closed request", as nginx logs it

SPARK_BUCKETS = 12  # 12 x 5 minutes: the last hour
SPARK_MINUTES = 5


@dataclass(frozen=True)
class Caller:
    """Who makes a request and through what: the chat page (session) or the API (a key)."""

    user: object
    source: str = UsageRecord.Source.API
    api_key: object | None = None


def record(
    caller: Caller,
    profile: ServerProfile,
    endpoint: str,
    stream: bool,
    started_at: datetime,
    measure: Measure,
) -> UsageRecord:
    """Store one finished request (counts and times only, never text)."""
    ttft = measure.ttft_ms
    duration = measure.duration_ms
    generation = None
    if measure.completion_tokens:
        # Streams: first token → end. Whole answers: the portal cannot see the first token,
        # so prompt processing counts as generation (tokens/s a little under the truth).
        generation = max(duration - ttft, 0.001) if ttft is not None else duration
    status = measure.status
    code = measure.status_code
    if status == UsageRecord.Status.CANCELLED:
        code = CANCELLED_STATUS_CODE
    return UsageRecord.objects.create(
        user=caller.user if getattr(caller.user, "pk", None) else None,
        api_key=caller.api_key,
        profile=profile,
        profile_name=profile.name,
        host_id=profile.host_id,
        source=caller.source,
        endpoint=endpoint,
        stream=stream,
        prompt_tokens=measure.prompt_tokens,
        completion_tokens=measure.completion_tokens,
        ttft_ms=ttft,
        generation_ms=generation,
        duration_ms=duration,
        status=status,
        status_code=code,
        error_code=measure.error_code[:40],
        started_at=started_at,
        finished_at=timezone.now(),
    )


def recorder(
    caller: Caller, profile: ServerProfile, endpoint: str, stream: bool
) -> Callable[[Measure], None]:
    """The `on_finish` callback for one request, started now."""
    started_at = timezone.now()

    def finish(measure: Measure) -> None:
        record(caller, profile, endpoint, stream, started_at, measure)

    return finish


# --- the server tiles ---------------------------------------------------------------------------


@dataclass
class TileStats:
    """What a server tile shows: speed over the last 5 minutes, counts over the last hour."""

    tokens_per_second: float | None = None
    ttft_ms: float | None = None
    requests: int = 0
    messages: int = 0
    spark: list[int] = field(default_factory=lambda: [0] * SPARK_BUCKETS)

    @property
    def spark_points(self) -> str:
        return sparkline_points(self.spark)

    @property
    def spark_peak(self) -> int:
        return max(self.spark)


def sparkline_points(values: list[int], width: int = 120, height: int = 24) -> str:
    """SVG polyline points for `values`, scaled to fit `width` by `height` (pure)."""
    if not values:
        return ""
    peak = max(values) or 1
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{round(i * step, 1):g},{round(height - 1 - (v / peak) * (height - 2), 1):g}"
        for i, v in enumerate(values)
    )


class EpochMinute(Func):
    """Whole minutes since the Unix epoch (UTC) of a datetime column, as an integer.

    Computed by the database itself: `TruncMinute` on SQLite is a Python function that
    SQLite calls once per row (2,000 calls for a busy hour, a third of the tiles' cost).
    The same minute as `TruncMinute` in any time zone whose offset is whole minutes.
    """

    arity = 1
    output_field = BigIntegerField()
    # PostgreSQL (EXTRACT gives seconds since the epoch for timestamptz).
    template = "CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / 60) AS BIGINT)"

    def as_sqlite(self, compiler, connection, **extra):
        # Django stores datetimes as UTC text; strftime('%s') is SQLite's own C code.
        # '%%%%s': once for this template, once for the backend's placeholder conversion.
        template = "(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) / 60)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_mysql(self, compiler, connection, **extra):
        template = "FLOOR(UNIX_TIMESTAMP(%(expressions)s) / 60)"
        return self.as_sql(compiler, connection, template=template, **extra)


def tile_stats(now: datetime | None = None) -> dict[int, TileStats]:
    """Stats per profile id for every profile used in the last hour, in ONE query.

    The query groups the last hour's records by profile and minute (at most 60 rows per
    server); the 5-minute figures and the sparkline are folded from those rows here.
    """
    now = now or timezone.now()
    since = now - timedelta(hours=1)
    rows = (
        UsageRecord.objects.filter(started_at__gte=since, profile__isnull=False)
        .annotate(epoch_minute=EpochMinute("started_at"))
        .values("profile_id", "epoch_minute")
        .annotate(
            requests=Count("id"),
            messages=Count("id", filter=Q(status=UsageRecord.Status.OK)),
            tokens=Sum("completion_tokens", filter=Q(generation_ms__isnull=False)),
            generation_ms=Sum("generation_ms"),
            ttft_sum=Sum("ttft_ms"),
            ttft_count=Count("ttft_ms"),
        )
        .order_by()
    )
    stats: dict[int, TileStats] = defaultdict(TileStats)
    recent: dict[int, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0])
    recent_since = now - timedelta(minutes=SPARK_MINUTES)
    for row in rows:
        minute = datetime.fromtimestamp(row["epoch_minute"] * 60, tz=UTC)
        tile = stats[row["profile_id"]]
        tile.requests += row["requests"]
        tile.messages += row["messages"]
        age_minutes = (now - minute).total_seconds() / 60
        bucket = SPARK_BUCKETS - 1 - min(int(age_minutes // SPARK_MINUTES), SPARK_BUCKETS - 1)
        tile.spark[bucket] += row["requests"]
        if minute >= recent_since - timedelta(minutes=1):
            acc = recent[row["profile_id"]]
            acc[0] += row["tokens"] or 0
            acc[1] += row["generation_ms"] or 0.0
            acc[2] += row["ttft_sum"] or 0.0
            acc[3] += row["ttft_count"]
    for profile_id, (tokens, generation_ms, ttft_sum, ttft_count) in recent.items():
        tile = stats[profile_id]
        if tokens and generation_ms:
            tile.tokens_per_second = tokens / (generation_ms / 1000)
        if ttft_count:
            tile.ttft_ms = ttft_sum / ttft_count
    return dict(stats)


# Every open Servers page polls the tiles every 2 s; the figures change only when a record is
# added, or slowly as time passes (records leave the hour, the sparkline's buckets move).
TILE_STATS_MAX_AGE = 10.0  # seconds
_tile_stats_memo: tuple[tuple, float, dict[int, TileStats]] | None = None


def shared_tile_stats() -> dict[int, TileStats]:
    """`tile_stats()` as the tiles poll it: the last figures of this process while no record
    was added since (the newest record is the same) and they are under TILE_STATS_MAX_AGE
    seconds old; computed again otherwise. One small query (the newest record, by primary key)
    when the figures are reused, two when they are computed. Treat the result as read-only."""
    global _tile_stats_memo
    newest = tuple(
        compiled_rows(
            UsageRecord,
            "newest-usage",
            lambda: UsageRecord.objects.order_by("-pk").values_list(
                "pk", "started_at", "finished_at"
            )[:1],
        )
    )  # the timestamps too: an id can come back after a rollback (SQLite, the test suite)
    memo = _tile_stats_memo
    if memo is not None and memo[0] == newest and time.monotonic() - memo[1] < TILE_STATS_MAX_AGE:
        return memo[2]
    stats = tile_stats()
    _tile_stats_memo = (newest, time.monotonic(), stats)
    return stats


# --- the Usage page ----------------------------------------------------------------------------


@dataclass
class Summary:
    totals: dict
    by_model: list[dict]
    by_day: list[dict]
    by_user: list[dict]


_AGGREGATES = {
    "requests": Count("id"),
    "errors": Count("id", filter=Q(status=UsageRecord.Status.ERROR)),
    "prompt_sum": Sum("prompt_tokens"),
    "completion_sum": Sum("completion_tokens"),
    "avg_ttft_ms": Avg("ttft_ms"),
    "tokens_timed": Sum("completion_tokens", filter=Q(generation_ms__isnull=False)),
    "generation_ms": Sum("generation_ms"),
}


def _finish(row: dict) -> dict:
    row = dict(row)
    row["prompt_tokens"] = row.pop("prompt_sum", None) or 0
    row["completion_tokens"] = row.pop("completion_sum", None) or 0
    timed, ms = row.pop("tokens_timed", None), row.pop("generation_ms", None)
    row["tokens_per_second"] = (timed / (ms / 1000)) if timed and ms else None
    return row


def summary(start: date, end: date, user=None) -> Summary:
    """Usage from `start` to `end` (inclusive days, in the current time zone); one user's only
    when `user` is given, everyone's otherwise."""
    tz = timezone.get_current_timezone()
    since = datetime.combine(start, datetime.min.time(), tzinfo=tz)
    until = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    records = UsageRecord.objects.filter(started_at__gte=since, started_at__lt=until)
    if user is not None:
        records = records.filter(user=user)
    totals = _finish(records.aggregate(**_AGGREGATES))
    by_model = [
        _finish(row)
        for row in records.values(label=F("profile_name"))
        .annotate(**_AGGREGATES)
        .order_by("-requests", "label")
    ]
    by_day = [
        _finish(row)
        for row in records.annotate(day=TruncDate("started_at", tzinfo=tz))
        .values("day")
        .annotate(**_AGGREGATES)
        .order_by("day")
    ]
    by_user = []
    if user is None:
        by_user = [
            _finish(row)
            for row in records.values(label=F("user__email"))
            .annotate(**_AGGREGATES)
            .order_by("-requests", "label")
        ]
    return Summary(totals, by_model, by_day, by_user)


def daily_series(by_day: Iterable[dict], start: date, end: date) -> list[tuple[date, int]]:
    """Requests per day from `start` to `end`, with the empty days filled in (pure)."""
    counts = {row["day"]: row["requests"] for row in by_day}
    days = (end - start).days + 1
    return [(start + timedelta(d), counts.get(start + timedelta(d), 0)) for d in range(days)]


def prunable(older_than_days: float):
    """Usage records of requests that finished more than `older_than_days` days ago."""
    return UsageRecord.objects.filter(
        finished_at__lt=timezone.now() - timedelta(days=older_than_days)
    )


def prune(older_than_days: float) -> int:
    """Delete the usage records older than `older_than_days` days; returns how many went."""
    deleted, _ = prunable(older_than_days).delete()
    return deleted
