"""A daemon thread that does one thing every few seconds, for the Celery worker's own duties
(the host's heartbeat, its servers' figures): started when the worker is ready, stopped
with it, and silent when the worker dies, which is what makes its absence mean something."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections

log = logging.getLogger(__name__)


class Periodic(threading.Thread):
    """Calls `action()` every `interval` seconds until `stop()`. A failure (the database away
    for a moment, say) is logged and tried again at the next turn."""

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.action = action
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                close_old_connections()  # a long-lived thread: drop broken or aged connections
                self.action()
            except Exception:
                log.exception("%s failed; trying again in %g s", self.name, self.interval)
            self.stopped.wait(self.interval)
        close_old_connections()

    def stop(self) -> None:
        self.stopped.set()


_running: dict[str, Periodic] = {}
_lock = threading.Lock()


def start_once(key: str, make: Callable[[], Periodic], run_first: bool = False) -> Periodic:
    """Start the thread `make()` builds under `key` in this process, unless one runs already
    (a second `worker_ready`, say); `run_first`: its action runs once here before it starts
    (the heartbeat registers its host before the worker takes its first task)."""
    with _lock:
        thread = _running.get(key)
        if thread is None or not thread.is_alive():
            thread = _running[key] = make()
            if run_first:
                thread.action()
            thread.start()
        return thread


def stop(key: str) -> None:
    with _lock:
        thread = _running.pop(key, None)
    if thread is not None:
        thread.stop()
