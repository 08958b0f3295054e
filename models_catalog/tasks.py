"""Celery tasks of the catalog: thin wrappers around functions tests call directly."""

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from models_catalog import downloads, library


@shared_task(name="models_catalog.download_model", ignore_result=True)
def download_model(download_id: int) -> str:
    """Routed to the download's host queue (`host.<name>`) by `downloads._enqueue`."""
    return downloads.run_download(download_id)


@shared_task(name="models_catalog.cleanup_download", ignore_result=True)
def cleanup_download(download_id: int) -> str:
    return downloads.cleanup_download(download_id)


@shared_task(name="models_catalog.reconcile_downloads", ignore_result=True)
def reconcile_downloads() -> dict[str, int]:
    """On Celery beat (CELERY_BEAT_SCHEDULE["reconcile-downloads"])."""
    return downloads.reconcile_downloads()


@shared_task(name="models_catalog.delete_model", ignore_result=True)
def delete_model(repo_id: str, deleted_by: str = "") -> str:
    """Routed to a host's queue by `library.delete_model`: remove the model from this
    machine's cache, then report the host's models again (the page's list follows)."""
    return library.delete_on_this_host(repo_id, deleted_by)


@worker_ready.connect
def _start_heartbeat(sender=None, **kwargs) -> None:
    """A worker of this host (MLX_PORTAL_HOST) came up: register the host and keep it online."""
    from models_catalog.heartbeat import start_heartbeat

    start_heartbeat()


@worker_shutdown.connect
def _stop_heartbeat(sender=None, **kwargs) -> None:
    from models_catalog.heartbeat import stop_heartbeat

    stop_heartbeat()
