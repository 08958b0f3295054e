"""Usage of the model servers as the portal measures it: recording and the numbers shown.

`Measure` is what the gateway's relay measures of one request; `recorder(...)` gives the
callback the relay calls once the request has finished (servers/gateway/relay.py);
`UsageWindow` feeds the server tiles (one query a poll for all tiles: the records added since
the last); `summary()` the Usage page; servers/usage/metrics.py the Prometheus endpoint.
See docs/gateway.md, "Usage recording".
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from django.db.models import BigIntegerField, Count, Func, Q, Sum
from django.utils import timezone

from accounts.models import ApiKey, User
from common.rows import compiled_rows, insert_row
from servers.models import ServerProfile, UsageRecord
from servers.usage import days, metrics

#: What a transcription counts as prompt tokens (a limit's tokens per day, the Usage page): its
#: seconds of audio, as its server decoded them, at this rate (rounded up). A speech-to-text
#: server reports no tokens, and its work grows with the audio, not the text it writes; one
#: token per 100 ms is also how OpenAI counts a speaker's audio in its realtime API. An hour
#: of audio is 36,000 tokens. Embeddings count the input tokens their server reports.
AUDIO_TOKENS_PER_SECOND = 10


def audio_tokens(seconds: float) -> int:
    """The tokens a transcription of `seconds` of audio counts as (AUDIO_TOKENS_PER_SECOND)."""
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND - 1e-9) if seconds > 0 else 0


class Failure(Protocol):
    """What a failed request's error says (the gateway's GatewayError)."""

    status: int
    code: str | None


@dataclass
class Measure:
    """What the portal measured of one request (monotonic seconds; tokens from `usage`)."""

    sent_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: str = "ok"
    status_code: int = 200
    error_code: str = ""
    queued_ms: float | None = None  # time in the fair queue before the request was sent
    usage_reported: bool = False  # the server's usage counts arrived (else: relayed())
    inputs: int = 0  # the texts of an embeddings request
    audio_seconds: float = 0.0  # the audio of a transcription, as its server decoded it

    def token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            if usage.get("type") == "duration":  # a transcription's (OpenAI's shape)
                seconds = usage.get("seconds")
                if isinstance(seconds, int | float) and 0 <= seconds < 10**7:
                    self.audio_seconds = float(seconds)
                    self.prompt_tokens = audio_tokens(self.audio_seconds)
            self.usage_reported = True

    def relayed(self, tokens: int) -> None:
        """`tokens` more reached the client. Until the server's usage says how many it made,
        they are the completion tokens: a client that hangs up mid-stream (no usage chunk
        ever comes) is recorded with what it got, not 0."""
        if not self.usage_reported:
            self.completion_tokens += tokens

    def fail(self, error: Failure, status: str = "error") -> None:
        self.status, self.status_code, self.error_code = status, error.status, error.code or ""

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.sent_at) * 1000

    @property
    def duration_ms(self) -> float:
        return ((self.finished_at or time.monotonic()) - self.sent_at) * 1000


CANCELLED_STATUS_CODE = 499  # "client closed request", as nginx logs it

SPARK_BUCKETS = 12  # 12 x 5 minutes: the last hour
SPARK_MINUTES = 5


@dataclass(frozen=True)
class Caller:
    """Who makes a request and through what: the chat page (session) or the API (a key)."""

    user: User
    source: str = UsageRecord.Source.API
    api_key: ApiKey | None = None
    route: str = ""  # the route the client called, if it called one (servers/gateway/routing)


def record(
    caller: Caller,
    profile: ServerProfile,
    endpoint: str,
    stream: bool,
    started_at: datetime,
    measure: Measure,
) -> int:
    """Store one finished request (counts and times only, never text); returns its id."""
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
    # Compiled once per connection (common/rows.py): ~0.7 ms of CPU less per request than
    # `objects.create`, which compiled the INSERT each time (docs/benchmarks.md §1k).
    return insert_row(
        UsageRecord,
        {
            "user_id": getattr(caller.user, "pk", None) or None,
            "api_key_id": getattr(caller.api_key, "pk", None),
            "profile_id": profile.pk,
            "profile_name": profile.name,
            "host_id": profile.host_id,
            "source": caller.source,
            "endpoint": endpoint,
            "stream": stream,
            "prompt_tokens": measure.prompt_tokens,
            "completion_tokens": measure.completion_tokens,
            "inputs": measure.inputs,
            "audio_seconds": measure.audio_seconds,
            "ttft_ms": ttft,
            "generation_ms": generation,
            "duration_ms": duration,
            "status": status,
            "status_code": code,
            "error_code": measure.error_code[:40],
            "route_name": caller.route,
            "queue_ms": measure.queued_ms,
            "started_at": started_at,
            "finished_at": timezone.now(),
        },
    )


def recorder(
    caller: Caller, profile: ServerProfile, endpoint: str, stream: bool
) -> Callable[[Measure], int]:
    """The `on_finish` callback for one request, started now; it returns the record's id."""
    started_at = timezone.now()

    def finish(measure: Measure) -> int:
        return record(caller, profile, endpoint, stream, started_at, measure)

    return finish


# --- the server tiles ---------------------------------------------------------------------------


@dataclass
class TileStats:
    """What a server tile shows: speed over the last 5 minutes, counts over the last hour."""

    tokens_per_second: float | None = None
    ttft_ms: float | None = None
    requests: int = 0
    messages: int = 0
    inputs: int = 0  # embeddings' texts in the last hour
    audio_seconds: float = 0.0  # transcriptions' audio in the last hour
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


# The figures by minute: requests, messages (answered), tokens timed, generation ms, TTFT
# sum and count, embeddings' inputs, transcriptions' audio seconds; of one profile in one
# minute (whole minutes since the epoch, UTC).
type Minutes = dict[int, dict[int, list[float]]]  # profile id → minute → sums

HOUR_MINUTES = 60  # "the last hour": this minute and the 59 before it
RECENT_MINUTES = SPARK_MINUTES + 1  # speed and TTFT: this minute and the 5 before it


def _minute_of(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def _first_minute(now: datetime) -> datetime:
    """The start of the oldest minute of the last hour."""
    return datetime.fromtimestamp((_minute_of(now) - HOUR_MINUTES + 1) * 60, tz=UTC)


def _grouped_minutes(since: datetime, up_to_id: int | None = None) -> Minutes:
    """The records started since `since` (and with an id up to `up_to_id`), summed by profile
    and minute in ONE query: at most 60 rows per server, whatever the traffic."""
    records = UsageRecord.objects.filter(started_at__gte=since, profile__isnull=False)
    if up_to_id is not None:
        records = records.filter(pk__lte=up_to_id)
    rows = (
        records.annotate(epoch_minute=EpochMinute("started_at"))
        .values_list("profile_id", "epoch_minute")
        .annotate(
            requests=Count("id"),
            messages=Count("id", filter=Q(status=UsageRecord.Status.OK)),
            tokens=Sum("completion_tokens", filter=Q(generation_ms__isnull=False)),
            generation_ms=Sum("generation_ms"),
            ttft_sum=Sum("ttft_ms"),
            ttft_count=Count("ttft_ms"),
            inputs=Sum("inputs"),
            audio_seconds=Sum("audio_seconds"),
        )
        .order_by()
    )
    minutes: Minutes = defaultdict(dict)
    for profile_id, minute, *sums in rows:
        minutes[profile_id][minute] = [value or 0 for value in sums]
    return minutes


def _add_record(
    minutes: Minutes,
    profile_id: int | None,
    minute: int,
    status: str,
    completion_tokens: int | None,
    generation_ms: float | None,
    ttft_ms: float | None,
    inputs: int | None = 0,
    audio_seconds: float | None = 0.0,
) -> None:
    """One record into `minutes`, as `_grouped_minutes` sums it."""
    if profile_id is None:
        return
    sums = minutes[profile_id].setdefault(minute, [0, 0, 0, 0.0, 0.0, 0, 0, 0.0])
    sums[6] += inputs or 0
    sums[7] += audio_seconds or 0.0
    sums[0] += 1
    sums[1] += status == UsageRecord.Status.OK
    if generation_ms is not None:
        sums[2] += completion_tokens or 0
        sums[3] += generation_ms
    if ttft_ms is not None:
        sums[4] += ttft_ms
        sums[5] += 1


def _tiles_from_minutes(minutes: Minutes, now: datetime) -> dict[int, TileStats]:
    """The tiles' figures at `now` from the sums by minute (pure): counts and the sparkline
    over the last hour, speed and TTFT over the last 5 minutes (whole minutes both)."""
    current = _minute_of(now)
    stats: dict[int, TileStats] = {}
    for profile_id, by_minute in minutes.items():
        tile = TileStats()
        tokens = generation_ms = ttft_sum = ttft_count = 0
        for minute, (requests, messages, timed, ms, t_sum, t_count, *units) in by_minute.items():
            age = current - minute
            if not 0 <= age < HOUR_MINUTES:  # older than the hour (or from a clock ahead)
                continue
            tile.requests += requests
            tile.messages += messages
            tile.inputs += int(units[0]) if units else 0
            tile.audio_seconds += float(units[1]) if units else 0.0
            tile.spark[SPARK_BUCKETS - 1 - age // SPARK_MINUTES] += requests
            if age < RECENT_MINUTES:
                tokens += timed
                generation_ms += ms
                ttft_sum += t_sum
                ttft_count += t_count
        if not tile.requests:
            continue
        if tokens and generation_ms:
            tile.tokens_per_second = tokens / (generation_ms / 1000)
        if ttft_count:
            tile.ttft_ms = ttft_sum / ttft_count
        stats[profile_id] = tile
    return stats


def tile_stats(now: datetime | None = None) -> dict[int, TileStats]:
    """Stats per profile id for every profile used in the last hour, in ONE query (grouped by
    profile and minute). The tiles poll `UsageWindow.stats()`, which gives the same figures
    from the records added since it last looked."""
    now = now or timezone.now()
    return _tiles_from_minutes(_grouped_minutes(_first_minute(now)), now)


_NO_RECORD = (0, None)  # no record yet: every record is new


class UsageWindow:
    """The last hour's usage by profile and minute, kept by this process and brought up to
    date from the records added since: what a Servers page poll costs is the new records, not
    the hour's. Grouping the hour's records cost ~5 ms of CPU with 2,000 of them and ~95 ms
    with 72,000 (20 requests/s through the gateway), and a busy gateway adds a record between
    any two polls (docs/benchmarks.md §2g).

    The sums are loaded once with one grouped query (and again if the newest record seen is
    gone or changed: deleted, or a rolled-back transaction's id given to another record);
    then each call runs one query, for the records from the newest seen on (by id). An id
    skipped on the way is a *gap*: on PostgreSQL a record can commit after one with a higher
    id. Gaps are read again at each call until their record shows, or for `GAP_SECONDS`,
    after which the id is taken for a rolled-back insert. While one thread loads the sums,
    the others go on with those they have (only the first load is waited for). Thread-safe;
    treat the result as read-only.
    """

    GAP_SECONDS = 30.0
    LOAD_TAIL = 200  # at a load, the ids below the newest looked at for gaps
    MAX_GAPS = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the sums, the newest record seen, the gaps
        self._loading = threading.Lock()  # one load at a time
        self._minutes: Minutes = defaultdict(dict)
        self._newest: tuple[int, datetime | None] | None = None  # id, start of the newest seen
        self._gaps: dict[int, float] = {}  # id not seen below the newest → since when
        self._stale = True
        self._kept_from = 0  # the oldest minute kept
        self._stats: tuple[tuple, dict[int, TileStats]] | None = None

    def stats(self, now: datetime | None = None) -> dict[int, TileStats]:
        now = now or timezone.now()
        changed = None
        for _ in range(2):
            if self._stale:
                self._load(now, wait=self._newest is None)
            with self._lock:
                changed = self._catch_up(now)
                if changed is not None:
                    break
                self._stale = True  # the newest seen is gone: load again
        with self._lock:
            key = (self._newest, _minute_of(now))
            if changed or self._stats is None or self._stats[0] != key:
                self._stats = (key, _tiles_from_minutes(self._minutes, now))
            return self._stats[1]

    def _load(self, now: datetime, wait: bool) -> None:
        """The sums up to the newest record, with one grouped query (outside `_lock`), and
        the gaps among the ids just below it."""
        if not self._loading.acquire(blocking=wait):
            return  # another thread is loading them
        try:
            if not self._stale:
                return  # it just did
            newest = (
                UsageRecord.objects.order_by("-pk").values_list("pk", "started_at").first()
            )  # first: the sums stop at it, and records after it are the next catch-up's
            minutes: Minutes = defaultdict(dict)
            gaps: dict[int, float] = {}
            if newest:
                minutes = _grouped_minutes(_first_minute(now), newest[0])
                low = max(newest[0] - self.LOAD_TAIL, 0)
                present = set(
                    UsageRecord.objects.filter(pk__gt=low, pk__lte=newest[0]).values_list(
                        "pk", flat=True
                    )
                )
                noticed = time.monotonic()
                gaps = {pk: noticed for pk in range(low + 1, newest[0]) if pk not in present}
            with self._lock:
                self._minutes, self._newest = minutes, newest or _NO_RECORD
                self._gaps = gaps
                self._stale = False
                self._kept_from = 0
                self._stats = None
        finally:
            self._loading.release()

    def _catch_up(self, now: datetime) -> bool | None:
        """Fold in the records added since the last call (and those of gaps): whether
        anything changed; None when the newest record seen is no longer there as it was."""
        if self._newest is None or self._stale:
            return None
        newest_id = self._newest[0]
        expired = time.monotonic() - self.GAP_SECONDS
        self._gaps = {pk: noticed for pk, noticed in self._gaps.items() if noticed > expired}
        rows = compiled_rows(
            UsageRecord,
            "usage-since",
            lambda: UsageRecord.objects.filter(pk__gte=0)
            .annotate(epoch_minute=EpochMinute("started_at"))
            .order_by("pk")
            .values_list("pk", "started_at", "profile_id", "epoch_minute", "status",
                         "completion_tokens", "generation_ms", "ttft_ms", "inputs",
                         "audio_seconds"),
            params=[min(self._gaps, default=newest_id)],
        )  # fmt: skip
        changed = found = False
        expected = newest_id + 1 if newest_id else None  # the next id, if none is skipped
        for row in rows:
            pk = row[0]
            if pk == newest_id:
                if (pk, row[1]) != self._newest:
                    return None
                found = True
                continue
            if pk < newest_id:  # a gap's record at last, or one already counted
                if self._gaps.pop(pk, None) is None:
                    continue
            else:
                noticed = time.monotonic()
                for missing in range(expected or pk, min(pk, (expected or pk) + self.MAX_GAPS)):
                    self._gaps[missing] = noticed
                expected = pk + 1
                self._newest = (pk, row[1])
            _add_record(self._minutes, *row[2:])
            changed = True
        if newest_id and not found:
            return None
        self._forget_before(_minute_of(now) - HOUR_MINUTES + 1)
        return changed

    def _forget_before(self, minute: int) -> None:
        """Drop the sums of the minutes before `minute` (once a minute)."""
        if minute == self._kept_from:
            return
        self._kept_from = minute
        for by_minute in self._minutes.values():
            for old in [m for m in by_minute if m < minute]:
                del by_minute[old]


_window = UsageWindow()


def shared_tile_stats() -> dict[int, TileStats]:
    """The tiles' usage figures, from this process's `UsageWindow`: one small query a poll."""
    return _window.stats()


# --- the Usage page ----------------------------------------------------------------------------


@dataclass
class Summary:
    totals: dict
    by_model: list[dict]
    by_day: list[dict]
    by_user: list[dict]


def _finish(group: dict) -> dict:
    """A group of sums (days.add_up) as the page shows it."""
    row = {key: group[key] for key in ("day", "label") if key in group}
    for name in (
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "inputs",
        "audio_seconds",
    ):
        row[name] = group[name]
    count, timed, ms = group["ttft_count"], group["tokens_timed"], group["generation_ms"]
    row["avg_ttft_ms"] = group["ttft_sum_ms"] / count if count else None
    row["tokens_per_second"] = (timed / (ms / 1000)) if timed and ms else None
    return row


def _groups(rows: list[dict], key: str) -> list[dict]:
    """The page's rows of one table: days in order, models and users busiest first."""
    groups = [_finish(group) for group in days.add_up(rows, key)]
    if key == "day":
        return sorted(groups, key=lambda row: row["day"])
    return sorted(groups, key=lambda row: (-row["requests"], row["label"] or ""))


def summary(start: date, end: date, user=None, model: str = "", route: str = "") -> Summary:
    """Usage from `start` to `end` (inclusive days of settings.TIME_ZONE, the days the page
    shows); one user's only when `user` is given, everyone's otherwise; one model's (a
    profile's name) or one route's when given. Read from the day sums plus the records after
    the checkpoint (servers/usage/days.py)."""
    rows = days.rows_between(start, end, user=user, model=model, route=route)
    everything = days.add_up(rows, None) or [dict.fromkeys(days.SUMS, 0)]
    return Summary(
        totals=_finish(everything[0]),
        by_model=_groups(rows, "profile_name"),
        by_day=_groups(rows, "day"),
        by_user=_groups(rows, "email") if user is None else [],
    )


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
    """Delete the usage records older than `older_than_days` days; returns how many went.
    /metrics has counted them first (its checkpoint), so its counters do not drop."""
    metrics.advance_totals()
    deleted, _ = prunable(older_than_days).delete()
    return deleted
