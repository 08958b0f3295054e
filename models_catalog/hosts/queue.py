"""Sending work to a host: the one helper that puts a Celery task on a host's queue.

Everything that must happen on one machine (downloading into its cache, deleting from it,
spawning and stopping its model servers) is a task on that host's queue, `host.<name>`, which
only its workers consume (docs/hosts.md, "Routing"). Every caller sends it the same way:

    from models_catalog.hosts.queue import enqueue

    enqueue("models_catalog.download_model", download.host, args=[download.pk],
            on_failure=lambda exc: ...)   # Redis did not take the message

* **After the commit.** The message goes out once the caller's transaction commits
  (`transaction.on_commit`; at once outside a transaction), so a worker never picks up a task
  for a row it cannot see yet, and a rolled-back change sends nothing.
* **By name.** The task is sent by its registered name (`celery.current_app.send_task`), so a
  domain module never imports `tasks.py`: tasks import the domain, never the reverse.
* **When Redis does not take it** (kombu's OperationalError, a redis error, an OSError: the
  broker is down or unreachable), `on_failure(exc)` is called with the error, from the
  on-commit callback: it says so where the user will see it (a row's reason, a message) or
  raises an exception of the caller's own, which then propagates from the commit (at once,
  outside a transaction). Without `on_failure` the error propagates as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kombu.exceptions
import redis
from celery import current_app
from django.db import transaction

from models_catalog.hosts.models import Host

log = logging.getLogger(__name__)

#: What publishing raises when Redis (the broker) does not take a message.
QUEUE_ERRORS: tuple[type[Exception], ...] = (
    kombu.exceptions.OperationalError,
    redis.RedisError,
    OSError,
)


def enqueue(
    task_name: str,
    host: Host,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> None:
    """Send the task registered as `task_name` to `host`'s queue once the current transaction
    commits, with `args` and `kwargs` (JSON-serialisable). When the broker does not take the
    message, `on_failure(error)` is called (and the failure logged); without it, the error
    propagates from the commit."""
    queue = host.queue
    call_args = list(args)
    call_kwargs = dict(kwargs or {})

    def send() -> None:
        try:
            current_app.send_task(task_name, args=call_args, kwargs=call_kwargs, queue=queue)
        except QUEUE_ERRORS as exc:
            log.warning("Cannot queue %s on %s: %r", task_name, queue, exc)
            if on_failure is None:
                raise
            on_failure(exc)

    transaction.on_commit(send)
