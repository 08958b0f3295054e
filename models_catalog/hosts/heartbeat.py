"""The heartbeat of a host: a thread inside each of its Celery workers.

Why a thread in the worker and not a beat-scheduled broadcast: the heartbeat must prove that
*this host's* worker is alive and measure *this machine* (memory, disk, the models in its
cache). A thread of the worker process does exactly that and stops when the worker stops (or is
killed); a broadcast from beat would also go silent when beat is down, and would report late
whenever the host's queue is busy with long tasks. The thread writes the host's row every
`MLX_PORTAL_HEARTBEAT_SECONDS`; a host whose row is older than `MLX_PORTAL_HOST_OFFLINE_AFTER`
shows offline (`Host.is_online`). It is the only writer of a host's facts (besides a delete
its worker carried out, which reports at once: `library.delete_on_this_host`).
"""

from __future__ import annotations

from django.conf import settings

from common import periodic
from common.periodic import Periodic
from models_catalog.hosts.models import Host


class Heartbeat(Periodic):
    """Writes `Host.record_heartbeat()` for `host_name` every `interval` seconds."""

    def __init__(self, host_name: str, interval: float) -> None:
        super().__init__(f"heartbeat-{host_name}", interval, self.beat)
        self.host_name = host_name

    def beat(self) -> None:
        host, _ = Host.objects.get_or_create(name=self.host_name)
        host.record_heartbeat()


def start_heartbeat() -> Periodic:
    """Start this process's heartbeat for `settings.HOST_NAME` (once; later calls return it).
    It beats once before this returns: the host is registered before the worker takes its
    first task."""

    def make() -> Periodic:
        return Heartbeat(settings.HOST_NAME, settings.HOST_HEARTBEAT_SECONDS)

    return periodic.start_once("heartbeat", make, run_first=True)


def stop_heartbeat() -> None:
    periodic.stop("heartbeat")
