"""The heartbeat of a host: a thread inside each of its Celery workers.

Why a thread in the worker and not a beat-scheduled broadcast: the heartbeat must prove that
*this host's* worker is alive and measure *this machine* (memory, disk, the models in its
cache). A thread of the worker process does exactly that and stops when the worker stops (or is
killed); a broadcast from beat would also go silent when beat is down, and would report late
whenever the host's queue is busy with long tasks. The thread writes the host's row every
`MLX_PORTAL_HEARTBEAT_SECONDS`; a host whose row is older than `MLX_PORTAL_HOST_OFFLINE_AFTER`
shows offline (`Host.is_online`).
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Writes `Host.record_heartbeat()` for `host_name` every `interval` seconds."""

    def __init__(self, host_name: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{host_name}", daemon=True)
        self.host_name = host_name
        self.interval = interval
        self.stopped = threading.Event()

    def beat(self) -> None:
        from models_catalog.models import Host

        host, _ = Host.objects.get_or_create(name=self.host_name)
        host.record_heartbeat()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                close_old_connections()  # a long-lived thread: drop broken or aged connections
                self.beat()
            except Exception:  # the database may be away for a moment
                log.exception("Heartbeat of host %s failed; trying again", self.host_name)
            self.stopped.wait(self.interval)
        close_old_connections()

    def stop(self) -> None:
        self.stopped.set()


_heartbeat: Heartbeat | None = None
_lock = threading.Lock()


def start_heartbeat() -> Heartbeat:
    """Start this process's heartbeat for `settings.HOST_NAME` (once; later calls return it)."""
    global _heartbeat
    with _lock:
        if _heartbeat is None or not _heartbeat.is_alive():
            _heartbeat = Heartbeat(settings.HOST_NAME, settings.HOST_HEARTBEAT_SECONDS)
            _heartbeat.beat()  # registered before the worker takes its first task
            _heartbeat.start()
    return _heartbeat


def stop_heartbeat() -> None:
    global _heartbeat
    with _lock:
        if _heartbeat is not None:
            _heartbeat.stop()
            _heartbeat = None
