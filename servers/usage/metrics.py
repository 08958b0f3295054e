"""Prometheus metrics, read from the database at scrape time (so every gunicorn worker, and
every web process, answers the same totals). See docs/gateway.md, "Metrics".

The counters are a checkpoint row (`UsageTotals`: every record up to an id, added up by beat
every few minutes) plus the records after it, grouped at the scrape: a scrape's cost follows
the records of the last minutes, not the retained history (docs/benchmarks.md §2g), and
pruning old records does not lower a counter.
"""

from __future__ import annotations

import itertools
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from accounts.api_keys import bearer_token
from common.client_address import is_local_client
from servers.models import (
    REFUSAL_CODES,
    UNKNOWN,
    ServerInstance,
    State,
    UsageRecord,
    UsageTotals,
    shown_state,
)
from servers.usage import days

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def allowed(request: HttpRequest) -> bool:
    """The admin bearer token, or a client on this machine when allowed (read through the
    trusted proxies: behind the nginx front, a client elsewhere is not local)."""
    token = settings.METRICS_TOKEN
    given = bearer_token(request.headers.get("Authorization"))
    if token and given and secrets.compare_digest(given.encode(), token.encode()):
        return True
    return settings.METRICS_ALLOW_LOCALHOST and is_local_client(request)


# --- the counters: a checkpoint row plus the records after it -------------------------------

QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_HISTOGRAMS = {
    "ttft_ms": TTFT_BUCKETS,
    "duration_ms": DURATION_BUCKETS,
    "queue_ms": QUEUE_BUCKETS,
}
TOTALS_SETTLE_SECONDS = 60.0  # a record this old has committed: the checkpoint may pass it


@dataclass
class Totals:
    """What the counters say about a set of usage records: requests per (profile, source,
    status), prompt and completion tokens per profile, and per histogram and profile
    [count, sum in ms, count per bucket] (each bucket on its own, made cumulative when
    exposed)."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    tokens: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    # Requests refused for a limit or a busy server's queue, per (profile, reason).
    refusals: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    histograms: dict[str, dict[str, list]] = field(
        default_factory=lambda: {name: {} for name in _HISTOGRAMS}
    )

    def add(self, other: Totals) -> None:
        for key, n in other.requests.items():
            self.requests[key] += n
        for name, (prompt, completion) in other.tokens.items():
            self.tokens[name][0] += prompt
            self.tokens[name][1] += completion
        for key, n in other.refusals.items():
            self.refusals[key] += n
        for field_name, per_profile in other.histograms.items():
            mine = self.histograms.setdefault(field_name, {})
            for name, (n, total, buckets) in per_profile.items():
                if name not in mine:
                    mine[name] = [0, 0.0, [0] * len(buckets)]
                mine[name][0] += n
                mine[name][1] += total
                mine[name][2] = [a + b for a, b in zip(mine[name][2], buckets, strict=True)]

    def as_json(self) -> dict:
        return {
            "requests": [[*key, n] for key, n in sorted(self.requests.items())],
            "tokens": [[name, *pair] for name, pair in sorted(self.tokens.items())],
            "refusals": [[*key, n] for key, n in sorted(self.refusals.items())],
            "histograms": self.histograms,
            "bounds": {name: list(bounds) for name, bounds in _HISTOGRAMS.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> Totals:
        totals = cls()
        for profile, source, status, n in data.get("requests", ()):
            totals.requests[(profile, source, status)] = n
        for name, prompt, completion in data.get("tokens", ()):
            totals.tokens[name] = [prompt, completion]
        for profile, reason, n in data.get("refusals", ()):
            totals.refusals[(profile, reason)] = n
        bounds = data.get("bounds") or {}
        for field_name, per_profile in (data.get("histograms") or {}).items():
            # Buckets of another release's bounds cannot be added to these: that histogram
            # starts again (Prometheus reads it as a counter reset).
            if list(_HISTOGRAMS.get(field_name, ())) == bounds.get(field_name):
                totals.histograms[field_name] = {k: list(v) for k, v in per_profile.items()}
        return totals


def grouped_totals(records: QuerySet) -> Totals:
    """The counters of `records`, in grouped queries (one per profile and status, one for the
    refusals, one per histogram)."""
    totals = Totals()
    rows = (
        records.values_list("profile_name", "source", "status")
        .annotate(n=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        .order_by()
    )
    for profile, source, status, n, prompt, completion in rows:
        totals.requests[(profile, source, status)] += n
        totals.tokens[profile][0] += prompt or 0
        totals.tokens[profile][1] += completion or 0
    refused = (
        records.filter(error_code__in=REFUSAL_CODES)
        .values_list("profile_name", "error_code")
        .annotate(n=Count("id"))
        .order_by()
    )
    for profile, reason, n in refused:
        totals.refusals[(profile, reason)] += n
    for field_name, bounds in _HISTOGRAMS.items():
        # One conditional count per bucket, each bucket on its own (lower < value <= upper).
        edges = [None, *(bound * 1000 for bound in bounds)]
        aggregates = {
            f"b{i}": Count(
                "id",
                filter=Q(**{f"{field_name}__lte": high})
                & (Q() if low is None else Q(**{f"{field_name}__gt": low})),
            )
            for i, (low, high) in enumerate(itertools.pairwise(edges))
        }
        rows = (
            records.filter(**{f"{field_name}__isnull": False})
            .values("profile_name")
            .annotate(n=Count("id"), total=Sum(field_name), **aggregates)
            .order_by()
        )
        totals.histograms[field_name] = {
            row["profile_name"]: [
                row["n"], row["total"] or 0.0, [row[f"b{i}"] for i in range(len(bounds))]
            ]
            for row in rows
        }  # fmt: skip
    return totals


def advance_totals(settle_seconds: float = TOTALS_SETTLE_SECONDS) -> int:
    """Add the records finished more than `settle_seconds` ago that the checkpoint has not
    counted yet to it, and to the Usage page's day sums (servers/usage/days.py); beat does
    it every few minutes, and a prune first. Returns how many records were added."""
    cutoff = timezone.now() - timedelta(seconds=settle_seconds)
    with transaction.atomic():
        checkpoint, _ = UsageTotals.objects.select_for_update().get_or_create(pk=1)
        after = UsageRecord.objects.filter(pk__gt=checkpoint.up_to_id)
        up_to = after.filter(finished_at__lt=cutoff).aggregate(last=Max("pk"))["last"]
        if up_to is None:
            if checkpoint.days_time_zone != settings.TIME_ZONE:  # rebuilt, though none is new
                days.add(checkpoint, after.none(), checkpoint.up_to_id)
                checkpoint.save()
            return 0
        new = after.filter(pk__lte=up_to)
        count = new.count()
        days.add(checkpoint, new, up_to)
        totals = Totals.from_json(checkpoint.totals)
        totals.add(grouped_totals(new))
        checkpoint.totals = totals.as_json()
        checkpoint.up_to_id = up_to
        checkpoint.save()
    return count


def current_totals() -> Totals:
    """Every record's counters: the checkpoint's plus those of the records after it."""
    checkpoint = UsageTotals.objects.filter(pk=1).first()
    totals = Totals.from_json(checkpoint.totals) if checkpoint else Totals()
    up_to = checkpoint.up_to_id if checkpoint else 0
    totals.add(grouped_totals(UsageRecord.objects.filter(pk__gt=up_to)))
    return totals


def _histogram(
    name: str, doc: str, per_profile: dict[str, list], bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["profile"])
    for profile, (n, total, buckets) in sorted(per_profile.items()):
        cumulative, running = [], 0
        for bound, count in zip(bounds, buckets, strict=True):
            running += count
            cumulative.append((f"{bound:g}", running))
        cumulative.append(("+Inf", n))
        family.add_metric([profile], cumulative, total / 1000)
    return family


class UsageCollector:
    """Requests, tokens, TTFT and duration histograms, and server states, from the DB."""

    def collect(self):
        totals = current_totals()
        requests = CounterMetricFamily(
            "mlxportal_requests", "Requests through the portal to model servers.",
            labels=["profile", "source", "status"],
        )  # fmt: skip
        for key, n in sorted(totals.requests.items()):
            requests.add_metric(list(key), n)
        tokens = CounterMetricFamily(
            "mlxportal_tokens", "Tokens processed, by kind (prompt or completion).",
            labels=["profile", "kind"],
        )  # fmt: skip
        for name, (prompt, completion) in sorted(totals.tokens.items()):
            tokens.add_metric([name, "prompt"], prompt)
            tokens.add_metric([name, "completion"], completion)
        yield requests
        yield tokens
        yield _histogram(
            "mlxportal_time_to_first_token_seconds",
            "Time from sending a streamed request to its first generated token.",
            totals.histograms["ttft_ms"],
            TTFT_BUCKETS,
        )
        yield _histogram(
            "mlxportal_request_duration_seconds",
            "Time from sending a request to the end of its answer.",
            totals.histograms["duration_ms"],
            DURATION_BUCKETS,
        )
        states = GaugeMetricFamily(
            "mlxportal_server_state",
            "1 for the current state of each server, as the pages show it: unknown while its "
            "host is offline. `name` is the profile's name, the `profile` of the usage series.",
            labels=["profile", "name", "host", "state"],
        )  # fmt: skip
        running = 0
        for instance in ServerInstance.objects.select_related("profile__host"):
            profile = instance.profile
            shown = shown_state(profile.host.is_online, instance.state)
            running += shown == State.RUNNING
            for state in (*State.values, UNKNOWN):
                labels = [profile.slug, profile.name, profile.host.name, state]
                states.add_metric(labels, 1 if shown == state else 0)
        yield states
        yield GaugeMetricFamily("mlxportal_servers_running", "Servers running.", value=running)
        yield _histogram(
            "mlxportal_queue_wait_seconds",
            "Time a request waited in a server's fair queue before its turn (servers/sharing).",
            totals.histograms["queue_ms"],
            QUEUE_BUCKETS,
        )
        refusals = CounterMetricFamily(
            "mlxportal_refusals",
            "Requests refused for a person's limit or a busy server's queue, by reason.",
            labels=["profile", "reason"],
        )
        for (name, reason), n in sorted(totals.refusals.items()):
            refusals.add_metric([name, reason], n)
        yield refusals


def exposition(collectors: Iterable = ()) -> tuple[bytes, str]:
    """The metrics of the usage records, and of `collectors` (the URLs add the fair queues')."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
