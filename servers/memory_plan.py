"""A host's memory plan: what its model servers need together, against what the host allows.

Each server that may hold memory (starting, running, stopping, restarting) counts its **need**
(models_catalog/memory.py: weights + KV cache for the model's context + a fixed overhead). The
host's **limit** is what its worker measured (models_catalog/hosts/facts.py: the GPU wired
limit on macOS; the available memory elsewhere, to which the plan adds back what the host's
servers hold now, as the worker measured them, since they are part of what is planned), capped
by an admin's "plan with at most" on the Hosts page.

A start must fit: the needs of the servers that run + its own ≤ the limit. When it does not,
the host's policy (an admin's choice on the Hosts page) applies:

* `refuse`: the start is refused, naming each server that uses the memory and its need;
* `evict-idle`: the least recently used running servers with no request in flight (neither in
  the portal's fair queue, servers/sharing, nor on the server itself, its `/portal/status`) and
  no request for `evict_idle_minutes` are stopped until it fits, then it starts; when they are
  not enough, it is refused as above, saying why none could go.

`make_room` is the one rule, called by `lifecycle.request_start` (a quick answer on the page,
nothing stopped) and by `lifecycle.launch` on the host's worker (stops what must go, just
before spawning). An admin's "Start anyway" skips it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.timesince import timesince

from models_catalog import memory
from models_catalog.hosts import facts as host_facts
from models_catalog.models import Host
from servers.models import ACTIVE_STATES, ServerInstance, ServerProfile, State
from servers.sharing import admission
from servers.supervision import lifecycle, probes

LIMIT_TEXT = {
    host_facts.LIMIT_WIRED: "the GPU wired limit, iogpu.wired_limit_mb",
    host_facts.LIMIT_MACOS_DEFAULT: "the share of memory macOS lets the GPU wire by default",
    host_facts.LIMIT_AVAILABLE: "the memory available to its servers",
}


def overhead() -> int:
    return settings.SERVER_MEMORY_OVERHEAD_MB * 1024 * 1024


def need_for(
    host: Host, model_id: str, draft_model_id: str = "", kv_bits: int | None = None
) -> memory.Need | None:
    """The need of a server of `model_id` (and its draft model) on `host`, for the model's
    context; None when the model is not on the host's disk (or its worker did not say)."""
    if not model_id:
        return None
    main = host.model_memory(model_id)
    if main is None:
        return None
    draft = host.model_memory(draft_model_id) if draft_model_id else None
    weights = main.weights + (draft.weights if draft else 0)
    return memory.need(weights, main.shape, main.context_length, kv_bits, overhead())


def profile_need(profile: ServerProfile) -> memory.Need | None:
    return need_for(profile.host, profile.model_id, profile.draft_model_id, profile.kv_bits)


# The tiles show each server's need at every poll (2 s): a need is remembered this long per
# process, so a poll does not read each model's snapshot folder (or another host's reported
# list) again. A new need (a profile edited, a model replaced) shows within that time.
NEED_MEMO_SECONDS = 10.0
_memo: dict[tuple, tuple[float, memory.Need | None]] = {}


def remembered_need(
    host_id: int, host_name: str, model_id: str, draft_model_id: str, kv_bits: int | None
) -> memory.Need | None:
    key = (host_id, model_id, draft_model_id, kv_bits, settings.SERVER_MEMORY_OVERHEAD_MB)
    now = time.monotonic()
    known = _memo.get(key)
    if known is None or now - known[0] > NEED_MEMO_SECONDS:
        # This machine's models are read from its disk: no need for its row.
        here = host_name == settings.HOST_NAME
        host = Host(pk=host_id, name=host_name) if here else Host.objects.filter(pk=host_id).first()
        need = need_for(host, model_id, draft_model_id, kv_bits) if host else None
        known = (now, need)
        if len(_memo) > 4096:
            _memo.clear()
        _memo[key] = known
    return known[1]


def describe(need: memory.Need | None) -> str:
    """ "about 5.2 GB: weights 4.3 GB, KV cache 640 MB for 40,960 tokens, overhead 512 MB"."""
    if need is None:
        return "unknown (the model is not on the host's disk)"
    if need.kv_cache is None:
        kv = "KV cache unknown (its config does not say)"
    else:
        bits = f" at {need.kv_bits} bits" if need.kv_bits else ""
        kv = f"KV cache {filesizeformat(need.kv_cache)} for {need.context:,} tokens{bits}"
    return (
        f"about {filesizeformat(need.total)}: weights {filesizeformat(need.weights)}, {kv}, "
        f"overhead {filesizeformat(need.overhead)}"
    )


@dataclass(frozen=True)
class Use:
    """One server that holds (or is about to hold) memory on the host."""

    profile_id: int
    slug: str
    name: str
    state: str
    need: memory.Need | None
    last_used: datetime | None  # its last request, else when it became ready
    in_flight: int  # requests the portal let through, waiting in its queue, or on the server
    rss: int | None

    @property
    def bytes(self) -> int:
        return self.need.total if self.need else 0

    def idle_minutes(self, now: datetime) -> float:
        if self.last_used is None:
            return float("inf")
        return max(0.0, (now - self.last_used).total_seconds() / 60)


@dataclass(frozen=True)
class Plan:
    host: Host
    limit: int  # bytes; 0: not known (the host's worker has not reported it)
    limit_text: str
    uses: list[Use]

    @property
    def used(self) -> int:
        return sum(use.bytes for use in self.uses)

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)

    def bar(self) -> list[dict]:
        """The bar's parts, left to right: each server's need, then what is free; `x` and
        `width` in percent of the bar."""
        parts, x = [], 0.0
        for use in self.uses:
            width = self.percent(use.bytes)
            parts.append({"name": use.name, "bytes": use.bytes, "state": use.state, "x": x,
                          "width": width, "free": False})  # fmt: skip
            x += width
        if self.free:
            parts.append({"name": "free", "bytes": self.free, "state": "", "x": x,
                          "width": self.percent(self.free), "free": True})  # fmt: skip
        return parts

    def percent(self, part: int) -> float:
        """`part` as a percentage of the bar (the limit, or what is used when it is more)."""
        whole = max(self.limit, self.used)
        return round(100 * part / whole, 2) if whole else 0.0


def _in_flight(instance: ServerInstance, queue: admission.Queue | None) -> int:
    busy = instance.busy or {}
    on_server = busy.get("requests") if isinstance(busy.get("requests"), int) else 0
    return (queue.in_flight + queue.waiting if queue else 0) + on_server


def host_plan(host: Host, *, leave_out: int | None = None) -> Plan:
    """The host's plan now: each server that may hold memory (but the profile `leave_out`,
    the one being started) with its need, and the limit."""
    instances = list(
        ServerInstance.objects.filter(profile__host=host, state__in=ACTIVE_STATES)
        .exclude(profile_id=leave_out)
        .select_related("profile")
        .order_by("profile__name")
    )
    queues = admission.queues(i.profile_id for i in instances)
    uses = []
    for instance in instances:
        profile = instance.profile
        profile.host = host
        uses.append(
            Use(
                profile_id=profile.pk,
                slug=profile.slug,
                name=profile.name,
                state=instance.state,
                need=profile_need(profile),
                last_used=instance.last_request_at or instance.ready_at or instance.started_at,
                in_flight=_in_flight(instance, queues.get(profile.pk)),
                rss=instance.rss,
            )
        )
    limit = host.memory_limit
    if limit and host.memory_limit_kind == host_facts.LIMIT_AVAILABLE:
        limit += sum(use.rss or 0 for use in uses)  # what they hold is not "available"
    text = LIMIT_TEXT.get(host.memory_limit_kind, "what its worker measured")
    if host.memory_cap_mb is not None and (not limit or host.memory_cap_mb * 1024**2 < limit):
        limit, text = host.memory_cap_mb * 1024 * 1024, "an admin's cap on the Hosts page"
    return Plan(host, limit, text, uses)


def choose_evictions(uses: list[Use], room: int, min_idle_minutes: float, now: datetime):
    """The least recently used running servers with nothing in flight and idle for at least
    `min_idle_minutes`, oldest first, until they free `room` bytes; None when they cannot (a
    pure function of its arguments)."""
    candidates = sorted(
        (
            u
            for u in uses
            if u.state == State.RUNNING
            and u.in_flight == 0
            and u.idle_minutes(now) >= min_idle_minutes
        ),
        key=lambda u: u.last_used or datetime.min.replace(tzinfo=now.tzinfo),
    )
    chosen, freed = [], 0
    for use in candidates:
        if freed >= room:
            break
        chosen.append(use)
        freed += use.bytes
    return chosen if freed >= room else None


def _why_not(use: Use, minutes: int, now: datetime) -> str:
    if use.state != State.RUNNING:
        return f"“{use.name}” is {use.state}"
    if use.in_flight:
        return (
            f"“{use.name}” has {use.in_flight} request{'s' if use.in_flight > 1 else ''} in flight"
        )
    if use.idle_minutes(now) < minutes:
        when = timesince(use.last_used, now) if use.last_used else "just now"
        return f"“{use.name}” was used {when} ago"
    return f"“{use.name}” is idle, but not enough"


def refusal(profile: ServerProfile, need: memory.Need, plan: Plan, now: datetime) -> str:
    """The message of a start that does not fit: what it needs, the limit, who uses what."""
    host = plan.host
    users = (
        "; ".join(f"“{u.name}” {filesizeformat(u.bytes)} ({u.state})" for u in plan.uses)
        or "no server"
    )
    message = (
        f"Not enough memory on {host.name} for “{profile.name}”: it needs "
        f"{describe(need)}. {host.name} plans for {filesizeformat(plan.limit)} "
        f"({plan.limit_text}), and {filesizeformat(plan.used)} of it is used by: {users}."
    )
    if host.memory_policy == Host.MemoryPolicy.EVICT_IDLE and plan.uses:
        minutes = host.evict_idle_minutes
        reasons = ", ".join(_why_not(u, minutes, now) for u in plan.uses)
        message += (
            f" None can be stopped to make room (only running servers idle for {minutes} "
            f"min or more, with no request in flight): {reasons}."
        )
    return (
        message + " Stop one of them, quantize the KV cache, or serve a smaller model; an "
        "admin can start it anyway."
    )


def make_room(profile: ServerProfile, *, evict: bool) -> None:
    """Check the profile's start against its host's plan; raise lifecycle.StartRefused
    ("memory") when it does not fit. Under `evict-idle`, with `evict` (on the host's worker),
    stop the idle servers it takes first; without (a page's quick check) only see that they
    would make room."""
    host = Host.objects.get(pk=profile.host_id)
    profile.host = host
    need = profile_need(profile)
    plan = host_plan(host, leave_out=profile.pk)
    if need is None or not plan.limit or plan.used + need.total <= plan.limit:
        return  # fits, or nothing known to plan with (the worker checks its free memory)
    now = timezone.now()
    if host.memory_policy == Host.MemoryPolicy.EVICT_IDLE:
        if evict:  # what the servers are doing now, not 2 s ago
            plan = _with_fresh_busy(plan)
        room = plan.used + need.total - plan.limit
        victims = choose_evictions(plan.uses, room, host.evict_idle_minutes, now)
        if victims is not None:
            if evict:
                for use in victims:
                    idle = timesince(use.last_used, now) if use.last_used else "never used"
                    lifecycle.evict(
                        use.profile_id,
                        f"Stopped to make room for “{profile.name}” on {host.name}: idle for "
                        f"{idle}, and {host.name}'s memory plan stops idle servers "
                        f"(it needed {filesizeformat(room)} more)",
                    )
            return
    raise lifecycle.StartRefused(refusal(profile, need, plan, now), "memory")


def _with_fresh_busy(plan: Plan) -> Plan:
    """The plan with each running server's requests asked of the server itself, now."""
    ids = [u.profile_id for u in plan.uses]
    instances = {i.profile_id: i for i in ServerInstance.objects.filter(profile_id__in=ids)}
    uses = []
    for use in plan.uses:
        instance = instances.get(use.profile_id)
        if use.state == State.RUNNING and instance is not None and instance.port:
            busy = probes.server_busy(instance.port)
            if busy:
                use = Use(**{**use.__dict__, "in_flight": use.in_flight + busy["requests"]})
        uses.append(use)
    return Plan(plan.host, plan.limit, plan.limit_text, uses)
