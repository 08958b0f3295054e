"""Celery tasks for model servers and usage: each loads what it needs by id and calls the
function a test can call (servers.supervision.lifecycle, servers.usage).

launch/stop run on the profile's host queue (`host.<name>`); reconcile fans out from beat to
every host queue; auto-start runs when a worker comes up. The task names are the messages'
contract (a message queued before an upgrade is still understood): they never change.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from accounts import locks
from models_catalog.models import Host
from servers import memory_plan
from servers.supervision import lifecycle, monitor
from servers.usage import metrics, records

# A host's supervision pass holds its lease at most this long (a dead worker's runs out).
RECONCILE_LEASE_SECONDS = 120


@shared_task(name="servers.tasks.launch_server")
def launch_server(instance_id: int, override_memory: bool = False) -> None:
    lifecycle.launch(instance_id, override_memory=override_memory, room=memory_plan.make_room)


@shared_task(name="servers.tasks.stop_server")
def stop_server(instance_id: int) -> None:
    lifecycle.stop(instance_id)


@shared_task(name="servers.tasks.reconcile")
def reconcile() -> None:
    """Beat entry point: ask each host that has profiles to reconcile its servers."""
    for host in Host.objects.filter(server_profiles__isnull=False).distinct():
        reconcile_host.apply_async(args=[host.pk], queue=host.queue, expires=10)


@shared_task(name="servers.tasks.reconcile_host")
def reconcile_host(host_id: int) -> None:
    """One supervision pass at a time per host, however many worker threads pick it up."""
    host = Host.objects.get(pk=host_id)
    with locks.lease(f"reconcile:{host.name}", RECONCILE_LEASE_SECONDS) as taken:
        if taken:
            lifecycle.reconcile(host)


@shared_task(name="servers.tasks.prune_usage")
def prune_usage() -> int:
    """Beat, daily: drop usage records older than USAGE_RETENTION_DAYS (0 keeps them all)."""
    if settings.USAGE_RETENTION_DAYS <= 0:
        return 0
    return records.prune(settings.USAGE_RETENTION_DAYS)


@shared_task(name="servers.tasks.advance_usage_totals")
def advance_usage_totals() -> int:
    """Beat, every few minutes: add the settled usage records to the /metrics checkpoint
    and the Usage page's day sums."""
    return metrics.advance_totals()


@shared_task(name="servers.tasks.autostart")
def autostart(host_name: str) -> None:
    lifecycle.autostart(Host.objects.get(name=host_name))


@worker_ready.connect
def _autostart_on_worker_ready(sender=None, **kwargs) -> None:
    """A worker of this host came up: start its auto-start profiles (through its queue)."""
    host = Host.objects.this_machine()
    autostart.apply_async(args=[host.name], queue=host.queue)


@worker_ready.connect
def _start_server_stats(sender=None, **kwargs) -> None:
    """Measure this host's running servers for the tiles (servers/supervision/monitor.py)."""
    monitor.start_sampler()


@worker_shutdown.connect
def _stop_server_stats(sender=None, **kwargs) -> None:
    monitor.stop_sampler()
