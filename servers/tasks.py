"""Celery tasks for model servers: thin wrappers around servers.services.

launch/stop run on the profile's host queue (`host.<name>`); reconcile fans out from beat to
every host queue; auto-start runs when a worker comes up.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from servers import services


@shared_task(name="servers.tasks.launch_server")
def launch_server(instance_id: int, override_memory: bool = False) -> None:
    services.launch(instance_id, override_memory=override_memory)


@shared_task(name="servers.tasks.stop_server")
def stop_server(instance_id: int) -> None:
    services.stop(instance_id)


@shared_task(name="servers.tasks.reconcile")
def reconcile() -> None:
    """Beat entry point: ask each host that has profiles to reconcile its servers."""
    from models_catalog.models import Host

    for host in Host.objects.filter(server_profiles__isnull=False).distinct():
        reconcile_host.apply_async(args=[host.pk], queue=host.queue, expires=10)


@shared_task(name="servers.tasks.reconcile_host")
def reconcile_host(host_id: int) -> None:
    import redis

    from models_catalog.models import Host

    host = Host.objects.get(pk=host_id)
    # One pass at a time per host, however many worker threads pick the task up.
    lock = redis.Redis.from_url(settings.REDIS_URL).lock(
        f"mlx-portal:reconcile:{host.name}", timeout=120, blocking=False
    )
    if not lock.acquire():
        return
    try:
        services.reconcile(host)
    finally:
        lock.release()


@shared_task(name="servers.tasks.prune_usage")
def prune_usage() -> int:
    """Beat, daily: drop usage records older than USAGE_RETENTION_DAYS (0 keeps them all)."""
    from servers import usage

    if settings.USAGE_RETENTION_DAYS <= 0:
        return 0
    return usage.prune(settings.USAGE_RETENTION_DAYS)


@shared_task(name="servers.tasks.advance_usage_totals")
def advance_usage_totals() -> int:
    """Beat, every few minutes: add the settled usage records to the /metrics checkpoint
    and the Usage page's day sums."""
    from servers import metrics

    return metrics.advance_totals()


@shared_task(name="servers.tasks.autostart")
def autostart(host_name: str) -> None:
    from models_catalog.models import Host

    services.autostart(Host.objects.get(name=host_name))


@worker_ready.connect
def _autostart_on_worker_ready(sender=None, **kwargs) -> None:
    """A worker of this host came up: start its auto-start profiles (through its queue)."""
    from models_catalog.models import Host

    host = Host.local()
    autostart.apply_async(args=[host.name], queue=host.queue)


@worker_ready.connect
def _start_server_stats(sender=None, **kwargs) -> None:
    """Measure this host's running servers for the tiles (servers/monitor.py)."""
    from servers.monitor import start_sampler

    start_sampler()


@worker_shutdown.connect
def _stop_server_stats(sender=None, **kwargs) -> None:
    from servers.monitor import stop_sampler

    stop_sampler()
