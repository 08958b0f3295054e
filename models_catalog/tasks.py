"""Celery tasks of the catalog: thin wrappers around functions tests call directly.

Nothing in the domain imports this module: work is sent to a host's queue by task name
(`models_catalog.hosts.queue.enqueue`), so the names below are part of that contract."""

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from models_catalog import downloads, library
from models_catalog.hosts.heartbeat import start_heartbeat, stop_heartbeat


@shared_task(name=downloads.RUN_TASK, ignore_result=True)
def download_model(download_id: int) -> str:
    """Routed to the download's host queue (`host.<name>`) by `downloads._enqueue`."""
    return downloads.run_download(download_id)


@shared_task(name=downloads.CLEANUP_TASK, ignore_result=True)
def cleanup_download(download_id: int) -> str:
    return downloads.cleanup_download(download_id)


@shared_task(name="models_catalog.reconcile_downloads", ignore_result=True)
def reconcile_downloads() -> dict[str, int]:
    """On Celery beat (CELERY_BEAT_SCHEDULE["reconcile-downloads"])."""
    return downloads.reconcile_downloads()


@shared_task(name=library.DELETE_TASK, ignore_result=True)
def delete_model(repo_id: str, deleted_by: str = "") -> str:
    """Routed to a host's queue by `library.delete_model`: remove the model from this
    machine's cache, then report the host's models again (the page's list follows)."""
    return library.delete_on_this_host(repo_id, deleted_by)


@worker_ready.connect
def _start_heartbeat(sender=None, **kwargs) -> None:
    """A worker of this host (MLX_PORTAL_HOST) came up: register the host and keep it online."""
    start_heartbeat()


@worker_shutdown.connect
def _stop_heartbeat(sender=None, **kwargs) -> None:
    stop_heartbeat()
