"""Prometheus metrics, read from the database at scrape time (so every gunicorn worker, and
every web process, answers the same totals). See docs/gateway.md, "Metrics"."""

from __future__ import annotations

import ipaddress
import secrets
from collections import defaultdict

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpRequest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from accounts.api_keys import bearer_token
from servers.models import ServerInstance, State, UsageRecord

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def allowed(request: HttpRequest) -> bool:
    """Localhost (not through a proxy) when allowed, or the admin bearer token."""
    token = settings.METRICS_TOKEN
    given = bearer_token(request.headers.get("Authorization"))
    if token and given and secrets.compare_digest(given.encode(), token.encode()):
        return True
    if not settings.METRICS_ALLOW_LOCALHOST or any(h in request.META for h in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _histogram(
    name: str, doc: str, field: str, buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """A histogram per profile from one grouped query with one conditional count per bucket."""
    aggregates = {
        f"le_{i}": Count("id", filter=Q(**{f"{field}__lte": bound * 1000}))
        for i, bound in enumerate(buckets)
    }
    rows = (
        UsageRecord.objects.filter(**{f"{field}__isnull": False})
        .values("profile_name")
        .annotate(n=Count("id"), total=Sum(field), **aggregates)
        .order_by("profile_name")
    )
    family = HistogramMetricFamily(name, doc, labels=["profile"])
    for row in rows:
        cumulative = [(f"{bound:g}", row[f"le_{i}"]) for i, bound in enumerate(buckets)]
        cumulative.append(("+Inf", row["n"]))
        family.add_metric([row["profile_name"]], cumulative, (row["total"] or 0) / 1000)
    return family


class UsageCollector:
    """Requests, tokens, TTFT and duration histograms, and server states, from the DB."""

    def collect(self):
        requests = CounterMetricFamily(
            "mlxportal_requests", "Requests through the portal to model servers.",
            labels=["profile", "source", "status"],
        )  # fmt: skip
        tokens = CounterMetricFamily(
            "mlxportal_tokens", "Tokens processed, by kind (prompt or completion).",
            labels=["profile", "kind"],
        )  # fmt: skip
        per_profile: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        rows = (
            UsageRecord.objects.values("profile_name", "source", "status")
            .annotate(
                n=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
            )
            .order_by("profile_name", "source", "status")
        )
        for row in rows:
            requests.add_metric([row["profile_name"], row["source"], row["status"]], row["n"])
            per_profile[row["profile_name"]][0] += row["prompt"] or 0
            per_profile[row["profile_name"]][1] += row["completion"] or 0
        for name, (prompt, completion) in sorted(per_profile.items()):
            tokens.add_metric([name, "prompt"], prompt)
            tokens.add_metric([name, "completion"], completion)
        yield requests
        yield tokens
        yield _histogram(
            "mlxportal_time_to_first_token_seconds",
            "Time from sending a streamed request to its first generated token.",
            "ttft_ms",
            TTFT_BUCKETS,
        )
        yield _histogram(
            "mlxportal_request_duration_seconds",
            "Time from sending a request to the end of its answer.",
            "duration_ms",
            DURATION_BUCKETS,
        )
        states = GaugeMetricFamily(
            "mlxportal_server_state", "1 for the current state of each server.",
            labels=["profile", "host", "state"],
        )  # fmt: skip
        running = 0
        for instance in ServerInstance.objects.select_related("profile__host"):
            running += instance.state == State.RUNNING
            for state in State.values:
                states.add_metric(
                    [instance.profile.slug, instance.profile.host.name, state],
                    1 if instance.state == state else 0,
                )
        yield states
        yield GaugeMetricFamily("mlxportal_servers_running", "Servers running.", value=running)


def exposition() -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
