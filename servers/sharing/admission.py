"""Who may send a request to a server now: the limits of the person (requests per minute,
tokens per day, requests in flight) and the fair queue in front of each server. See
docs/sharing.md.

Everything is counted in Redis by the Lua scripts in `lua/` (one atomic step each, so two web
processes, or two hosts' web tiers, count as one): `enter()` asks for a turn and gets a
`Ticket` — admitted at once, queued, or refused with a `Refusal` that says which limit and when
to try again. A queued ticket waits (`Ticket.wait`) until a slot is free and its user's turn
comes: waiting users are served round robin, one ticket each, so one member's forty requests
delay a colleague's single one by at most one admission. `Ticket.release()` gives the slot back
and counts the request's tokens.

A ticket holds a lease that this process renews while the request lives (`_Keeper`): when a
web process dies, its slots come back after SHARING_LEASE_SECONDS. Tokens per day are counted
in Redis and rebuilt from the usage records (the truth) whenever the count is missing — after
a Redis loss, at a new day. When Redis cannot be reached, requests go through unlimited (the
portal keeps serving; the refusal is logged) and Redis is tried again after a few seconds.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db.models import F, Max, Sum
from django.utils import timezone
from redis.commands.core import Script

from accounts.teams import LIMIT_NAMES, UserLimits, describe
from servers.models import REFUSAL_CODES, ServerProfile, UsageRecord

log = logging.getLogger(__name__)

PREFIX = "mlxportal:share:"
RETRY_REDIS_AFTER = 5.0  # seconds without Redis before it is tried again
LOOK_EVERY = 1.0  # a waiting request looks at the queue (drops dead tickets) this often
GO_WAIT = 0.25  # and between looks, waits for its "go" this long at a time


@dataclass(eq=False)
class Refusal(Exception):
    """A request that may not go now: over a limit (429) or the server's queue is full or the
    wait too long (503). `message` names the limit and when it resets; `code` is one of
    REFUSAL_CODES."""

    message: str
    status: int
    error_type: str
    code: str  # one of servers.models.REFUSAL_CODES
    retry_after: int  # seconds

    def __post_init__(self) -> None:
        assert self.code in REFUSAL_CODES, self.code

    def __str__(self) -> str:
        return self.message


# --- Redis and the scripts ------------------------------------------------------------------


class _Redis:
    """The client and the scripts, made on first use (no I/O at import), and the back-off after
    a failure. Process-wide on purpose: one connection pool per process, as Django's cache."""

    def __init__(self) -> None:
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Script] = {}
        self._down_until = 0.0
        self._lock = threading.Lock()

    def client(self) -> redis.Redis:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(
                        settings.REDIS_URL,
                        socket_connect_timeout=1,
                        socket_timeout=2,
                        health_check_interval=30,
                    )
        return self._client

    def script(self, name: str) -> Script:
        if name not in self._scripts:
            folder = Path(__file__).with_name("lua")
            source = (folder / "common.lua").read_text() + (folder / f"{name}.lua").read_text()
            self._scripts[name] = self.client().register_script(source)
        return self._scripts[name]

    def run(self, name: str, *args: object) -> list:
        return self.script(name)(args=[PREFIX, *args])

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def failed(self, error: Exception) -> None:
        if not self.down:
            log.warning("Fair sharing is off for %ss: Redis failed (%s)", RETRY_REDIS_AFTER, error)
        self._down_until = time.monotonic() + RETRY_REDIS_AFTER


_redis = _Redis()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lease_ms() -> int:
    return int(settings.SHARING_LEASE_SECONDS * 1000)


# --- tokens per day ---------------------------------------------------------------------------


def day_start(now: datetime | None = None) -> datetime:
    """The start of today (or of `now`'s day) in settings.TIME_ZONE: when tokens per day reset."""
    local = timezone.localtime(now)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _tokens_key(user_id: int, day: datetime) -> str:
    return f"{PREFIX}u:{user_id}:tok:{day:%Y-%m-%d}"


def tokens_today(user_id: int) -> int:
    """Prompt + completion tokens `user_id` used today (TIME_ZONE's day): Redis's count, rebuilt
    from the usage records when it is missing. Raises redis.RedisError."""
    key = _tokens_key(user_id, day_start())
    client = _redis.client()
    counted = client.hget(key, "n")
    if counted is not None:
        return int(counted)
    totals = UsageRecord.objects.filter(user_id=user_id, finished_at__gte=day_start()).aggregate(
        n=Sum(F("prompt_tokens") + F("completion_tokens")), upto=Max("pk")
    )
    n, upto = totals["n"] or 0, totals["upto"] or 0
    if client.hsetnx(key, "n", n):
        client.hset(key, "upto", upto)
        client.expire(key, 2 * 86400)
        return n
    return int(client.hget(key, "n") or 0)


def _until_tomorrow() -> int:
    tomorrow = day_start() + timedelta(days=1)
    return max(1, math.ceil((tomorrow - timezone.localtime()).total_seconds()))


# --- refusals ---------------------------------------------------------------------------------


def _in(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _limit_refusal(
    code: str, limits: UserLimits, retry_ms: int, used: int | None = None
) -> Refusal:
    retry = max(1, math.ceil(retry_ms / 1000))
    reached = f"You have reached your limit of {describe(limits, code)}"
    if code == "tokens_per_day":
        return Refusal(
            f"{reached}: {used:,} used today. It resets at midnight ({settings.TIME_ZONE}), "
            f"in {_in(retry)}.",
            429,
            "insufficient_quota",
            code,
            retry,
        )
    if code == "requests_per_minute":
        when = f"A request counts for a minute: try again in {_in(retry)}."
    else:
        when = "Try again when one of your requests has finished."
    return Refusal(f"{reached}. {when}", 429, "rate_limit_exceeded", code, retry)


def _queue_refusal(code: str, profile: ServerProfile, retry: int = 5) -> Refusal:
    name = profile.name
    if code == "queue_full":
        text = f"“{name}” is busy: its queue is full ({profile.queue_length} waiting)."
    elif code == "queue_share":
        text = (
            f"“{name}” is busy, and you already have {max(1, profile.queue_length // 2)} "
            "requests waiting for it: half of its queue."
        )
    else:
        text = (
            f"“{name}” is busy: your request waited {profile.queue_wait_seconds} s for a turn "
            "without getting one."
        )
    return Refusal(f"{text} Try again in a few seconds.", 503, "server_busy", code, retry)


# --- tickets ----------------------------------------------------------------------------------


@dataclass
class Ticket:
    """One request's place: admitted, queued (waiting for a turn) or open (Redis was down:
    not counted). Release it exactly once, when the request has finished."""

    profile: ServerProfile
    user_id: int
    id: str
    state: str  # "admitted", "queued" or "open"
    waiting: int = 0  # requests waiting for this server, when last looked
    queued_at: float | None = None
    admitted_at: float | None = None
    released: bool = False

    @property
    def queued_ms(self) -> float | None:
        if self.queued_at is None:
            return None
        return ((self.admitted_at or time.monotonic()) - self.queued_at) * 1000

    def wait(self, still_there: Callable[[], bool] = lambda: True) -> Iterator[int]:
        """Wait for a turn, yielding the number of requests waiting whenever it changes (the
        chat shows it). Returns once admitted; raises Refusal when the wait is over, and
        leaves the queue on any exception or when `still_there()` says the client left
        (then raises ClientLeft)."""
        if self.state != "queued":
            return
        deadline = (self.queued_at or time.monotonic()) + self.profile.queue_wait_seconds
        last_look = time.monotonic()
        shown = None
        try:
            while True:
                if shown != self.waiting:
                    shown = self.waiting
                    yield self.waiting
                if not still_there():
                    raise ClientLeft
                now = time.monotonic()
                if now >= deadline:
                    raise _queue_refusal("queue_wait", self.profile)
                try:
                    go = _redis.client().blpop(
                        [f"{PREFIX}t:{self.id}"], timeout=min(GO_WAIT, deadline - now)
                    )
                    if go is not None or time.monotonic() - last_look >= LOOK_EVERY:
                        last_look = time.monotonic()
                        looked = _redis.run(
                            "look", self.profile.pk, self.id, _now_ms(), _lease_ms()
                        )
                        if looked[0] == b"admitted":
                            self.state, self.admitted_at = "admitted", time.monotonic()
                            return
                        if looked[0] == b"gone":  # dropped (lease lost): ask again
                            raise _queue_refusal("queue_wait", self.profile)
                        self.waiting = int(looked[1])
                except redis.RedisError as error:
                    _redis.failed(error)  # go through uncounted rather than fail
                    self.state, self.admitted_at = "open", time.monotonic()
                    _keeper.forget(self)
                    return
        except BaseException:
            self.release()
            raise

    def release(self, tokens: int = 0, record_id: int | None = None) -> None:
        """Give the slot (or the place in the queue) back, and count `tokens` for today."""
        if self.released:
            return
        self.released = True
        _keeper.forget(self)
        if self.state == "open":
            return
        try:
            _redis.run(
                "release",
                self.profile.pk,
                self.id,
                _now_ms(),
                _lease_ms(),
                self.user_id,
                tokens,
                record_id or 0,
                _tokens_key(self.user_id, day_start()),
            )
        except redis.RedisError as error:
            _redis.failed(error)  # its lease runs out instead


class ClientLeft(Exception):
    """The client went away while its request waited in the queue."""


def enter(user, profile: ServerProfile, limits: UserLimits) -> Ticket:
    """Ask for a turn on `profile`'s server for `user` under `limits`: a Ticket admitted or
    queued (call `wait`), or Refusal."""
    ticket = Ticket(profile, user.pk, uuid.uuid4().hex, "open")
    if _redis.down:
        return ticket
    tokens_key = _tokens_key(user.pk, day_start())
    slots = profile.slots
    args = (
        profile.pk,
        user.pk,
        ticket.id,
        _now_ms(),
        _lease_ms(),
        slots,
        max(1, slots - profile.reserved_slots),
        profile.queue_length,
        max(1, profile.queue_length // 2),
        -1 if limits.requests_per_minute is None else limits.requests_per_minute,
        -1 if limits.concurrent_requests is None else limits.concurrent_requests,
        -1 if limits.tokens_per_day is None else limits.tokens_per_day,
        tokens_key,
    )
    try:
        answer = _redis.run("acquire", *args)
        if answer[0] == b"count":  # today's tokens not counted in Redis yet (or any more)
            tokens_today(user.pk)
            answer = _redis.run("acquire", *args)
    except redis.RedisError as error:
        _redis.failed(error)
        return ticket
    state = answer[0].decode()
    if state == "count":  # the count vanished again at once (a FLUSHDB): not counted now
        return ticket
    if state == "refused":
        code = answer[1].decode()
        if code.startswith("queue_"):
            raise _queue_refusal(code, profile)
        if code == "tokens_per_day":
            raise _limit_refusal(code, limits, _until_tomorrow() * 1000, used=int(answer[3]))
        raise _limit_refusal(code, limits, int(answer[2]))
    ticket.state = state
    if state == "queued":
        ticket.queued_at = time.monotonic()
        ticket.waiting = int(answer[1])
    _keeper.keep(ticket)
    return ticket


# --- leases -----------------------------------------------------------------------------------


class _Keeper:
    """Renews the leases of this process's live tickets, from one daemon thread started with
    the first ticket. Process-wide on purpose: the leases are this process's."""

    def __init__(self) -> None:
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def keep(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets[ticket.id] = ticket
            # A forked worker (gunicorn) has no thread of its parent's: start its own.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="sharing-leases", daemon=True
                )
                self._thread.start()

    def forget(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets.pop(ticket.id, None)

    def _run(self) -> None:
        while True:
            time.sleep(settings.SHARING_LEASE_SECONDS / 3)
            with self._lock:
                live = list(self._tickets.values())
            if not live:
                continue
            args: list[object] = []
            for ticket in live:
                args += [ticket.profile.pk, ticket.user_id, ticket.id]
            try:
                _redis.run("renew", 0, _now_ms() + _lease_ms(), *args)
            except redis.RedisError as error:
                _redis.failed(error)


_keeper = _Keeper()


# --- what pages and /metrics show -------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    in_flight: int
    waiting: int


def queues(profile_ids) -> dict[int, Queue]:
    """Requests admitted and waiting per server (one round trip); empty when Redis is down."""
    ids = list(profile_ids)
    if not ids or _redis.down:
        return {}
    try:
        pipe = _redis.client().pipeline(transaction=False)
        now = _now_ms()
        for pk in ids:
            pipe.zcount(f"{PREFIX}p:{pk}:in", now, "+inf")
            pipe.zcount(f"{PREFIX}p:{pk}:wait", now, "+inf")
        counts = pipe.execute()
    except redis.RedisError as error:
        _redis.failed(error)
        return {}
    return {pk: Queue(counts[2 * i], counts[2 * i + 1]) for i, pk in enumerate(ids)}


@dataclass(frozen=True)
class Standing:
    """One person's use now against their limits (None where Redis could not tell)."""

    limits: UserLimits
    tokens_today: int | None
    requests_last_minute: int | None
    in_flight: int | None
    day_left_seconds: int

    def share(self, name: str) -> float | None:
        """The part of the limit `name` used, from 0 to 1 (None: no limit, or not known)."""
        limit = getattr(self.limits, name)
        used = {
            "tokens_per_day": self.tokens_today,
            "requests_per_minute": self.requests_last_minute,
            "concurrent_requests": self.in_flight,
        }[name]
        if limit is None or used is None:
            return None
        return min(1.0, used / limit) if limit else 1.0

    @property
    def rows(self) -> list[dict]:
        """A row per limit for the pages: name, used, limit, where it comes from, part used."""
        used = {
            "requests_per_minute": self.requests_last_minute,
            "tokens_per_day": self.tokens_today,
            "concurrent_requests": self.in_flight,
        }
        return [
            {
                "name": LIMIT_NAMES[name],
                "key": name,
                "used": used[name],
                "limit": getattr(self.limits, name),
                "source": self.limits.source.get(name, ""),
                "percent": None if self.share(name) is None else round(self.share(name) * 100),
            }
            for name in used
        ]

    @property
    def resets_in(self) -> str:
        return _in(self.day_left_seconds)


def standing(user, limits: UserLimits) -> Standing:
    """`user`'s use now: tokens today, requests in the last minute, requests in flight."""
    tokens = minute = flight = None
    if not _redis.down:
        try:
            tokens = tokens_today(user.pk)
            now = _now_ms()
            client = _redis.client()
            minute = client.zcount(f"{PREFIX}u:{user.pk}:rpm", now - 60000, "+inf")
            flight = client.zcount(f"{PREFIX}u:{user.pk}:in", now, "+inf")
        except redis.RedisError as error:
            _redis.failed(error)
    return Standing(limits, tokens, minute, flight, _until_tomorrow())


def admission_log(profile_id: int) -> list[tuple[str, str, int]]:
    """(what, ticket, user id) of the last admissions and queueings of a server, oldest first:
    the order the portal let requests through (the fairness test reads it)."""
    entries = _redis.client().lrange(f"{PREFIX}p:{profile_id}:log", 0, -1)
    rows = []
    for entry in reversed(entries):
        what, ticket, user = entry.decode().split()
        rows.append((what, ticket, int(user)))
    return rows


def forget_everything() -> None:
    """Drop every count and queue (the tests start each from nothing; nothing else calls it)."""
    client = _redis.client()
    keys = list(client.scan_iter(f"{PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    _redis._down_until = 0.0


def next_turn(key: str) -> int:
    """A counter that goes up by one at each call, shared by every web process (0 when Redis
    is down): a route's least-busy pick takes turns among members equally busy with it."""
    if _redis.down:
        return 0
    try:
        return int(_redis.client().incr(f"{PREFIX}turn:{key}"))
    except redis.RedisError as error:
        _redis.failed(error)
        return 0
