"""The fair queues as Prometheus gauges: requests in flight and waiting per server, now (read
from Redis at each scrape; config/urls.py adds this collector to /metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from servers.models import ServerProfile
from servers.models import slots as slots_of
from servers.sharing import admission


class QueueCollector:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        profiles = list(
            ServerProfile.objects.values_list("pk", "slug", "max_in_flight", "decode_concurrency")
        )
        queues = admission.queues(pk for pk, *_ in profiles)
        in_flight = GaugeMetricFamily(
            "mlxportal_queue_in_flight",
            "Requests the portal has let through to each server now (its fair queue).",
            labels=["profile"],
        )
        waiting = GaugeMetricFamily(
            "mlxportal_queue_waiting",
            "Requests waiting in each server's fair queue now.",
            labels=["profile"],
        )
        capacity = GaugeMetricFamily(
            "mlxportal_queue_slots",
            "Requests the portal lets through to each server at once.",
            labels=["profile"],
        )
        for pk, slug, max_in_flight, decode_concurrency in profiles:
            queue = queues.get(pk, admission.Queue(0, 0))
            in_flight.add_metric([slug], queue.in_flight)
            waiting.add_metric([slug], queue.waiting)
            capacity.add_metric([slug], slots_of(max_in_flight, decode_concurrency))
        yield in_flight
        yield waiting
        yield capacity
