"""Redis goes away and comes back while a model server runs and a download is active.

Everything runs for real on a Redis server of the test's own (a free port, no persistence):
the portal's Celery worker, the tiny model's `mlx_lm.server` it spawned, a throttled download
from the fake Hub. The worker must ride out the outage itself: the same process reconnects and
keeps consuming (celery 5.7.0 died here instead; docs/reliability.md has the root cause and
the figures)."""

from __future__ import annotations

import re
import time

import psutil
import pytest
import redis
from django.test import Client
from django.urls import reverse

from models_catalog import downloads
from models_catalog.local import local_model_path
from models_catalog.models import Download
from servers.models import State
from servers.supervision import lifecycle, supervisor
from tests.models_catalog.download_helpers import (
    add_random_repo,
    dir_digests,
    partial_files,
    source_digests,
)
from tests.reliability.conftest import servers_on_port
from tests.servers.helpers import wait_for
from tests.support.workers import new_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = "test-org/redis-outage"
BIG = "model.safetensors"


def report(line: str) -> None:
    print(f"[reliability] {line}")


def test_redis_restart_keeps_the_worker_the_server_and_the_download(
    own_redis, hub, settings, served_model, hf_cache, make_profile, member, server_reaper,
    tmp_path,
):  # fmt: skip
    from config.celery import app

    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    began = time.monotonic()
    files = add_random_repo(hub, REPO, {BIG: 2_000_000}, seed=21)

    worker = new_worker(tmp_path).start()
    try:
        worker.wait_ready()
        worker_pid = worker.pid
        worker_started = psutil.Process(worker_pid).create_time()
        # After the worker is up, so the free port it suggests is still free when we start.
        profile = make_profile("Outage", model_id=served_model)

        # A server started through the portal, by the worker on our Redis.
        instance = lifecycle.request_start(profile)
        wait_for(
            lambda: lifecycle.ServerInstance.objects.get(pk=instance.pk).state == State.RUNNING,
            90, 0.3, what=f"the server to run\n{worker.log_tail()}",
        )  # fmt: skip
        instance.refresh_from_db()
        pid, create_time = instance.pid, instance.process_create_time
        server_reaper((pid, create_time))
        assert psutil.Process(pid).ppid() == worker_pid

        # A download (an acks_late task), throttled so that it is still running across the
        # outage: its message is unacknowledged when the broker goes away.
        hub.throttle_bps = 150_000
        download, _ = downloads.start_download(REPO, member)

        def partial_size() -> int:
            sizes = [0]
            for path in partial_files(hf_cache, REPO):
                try:  # a file that completes between the listing and the stat is renamed
                    sizes.append(path.stat().st_size)
                except FileNotFoundError:
                    continue
            return max(sizes)

        wait_for(lambda: partial_size() > 100_000, 60, 0.1, what="download progress")

        # --- Redis goes down ----------------------------------------------------------------
        own_redis.stop()
        down_at = time.monotonic()
        assert not own_redis.answers()

        health = Client().get("/healthz")
        assert health.status_code == 503
        checks = health.json()["checks"]
        assert checks["redis"].startswith("down"), checks
        assert checks["database"] == "ok"

        page = Client()
        page.force_login(member)
        servers_url = reverse("servers:list")
        assert page.get(servers_url).status_code == 200  # degraded, not broken
        assert page.get(servers_url, headers={"HX-Request": "true"}).status_code == 200
        assert page.get(reverse("catalog:downloads")).status_code == 200

        # The download keeps going without the broker (its lease lives in the database).
        during = partial_size()
        wait_for(lambda: partial_size() > during, 30, 0.1, what="progress while Redis is down")
        assert supervisor.is_alive(pid, create_time)

        # --- Redis comes back on the same port ---------------------------------------------
        own_redis.start()
        outage = time.monotonic() - down_at
        back_at = time.monotonic()

        hub.throttle_bps = None

        def same_worker_answers() -> bool:
            # A worker that exits instead of reconnecting fails the test at once, with its log.
            assert worker.process.poll() is None, (
                f"the worker exited (code {worker.process.returncode}) instead of "
                f"reconnecting:\n{worker.log_tail(80)}"
            )
            try:
                replies = app.control.ping(destination=[worker.hostname], timeout=0.5)
            except redis.ConnectionError:  # this process's stale broker connection: retry
                return False
            return any(worker.hostname in r for r in replies)

        wait_for(same_worker_answers, 60, 0.2, what=f"the worker to reconnect\n{worker.log_tail()}")
        reconnected = time.monotonic() - back_at

        def healthy() -> bool:
            response = Client().get("/healthz")
            return response.status_code == 200 and worker.hostname in response.json()["workers"]

        wait_for(healthy, 60, 0.5, what=f"/healthz to be ok again\n{worker.log_tail()}")
        healthy_after = time.monotonic() - back_at

        def completed() -> bool:
            downloads.reconcile_downloads()
            download.refresh_from_db()
            assert download.state != Download.State.FAILED, download.error
            return download.state == Download.State.COMPLETED

        wait_for(completed, 60, 0.3, what=f"the download to complete\n{worker.log_tail()}")
        assert dir_digests(local_model_path(REPO)) == source_digests(files)
        assert partial_files(hf_cache, REPO) == []
        # Nothing duplicated: one run of the download, its task delivered once.
        assert download.runs.count() == 1
        log = worker.log_path.read_text(errors="replace")
        download_task = r"Task models_catalog\.download_model\[[^\]]+\] "
        assert len(re.findall(download_task + "received", log)) == 1
        assert len(re.findall(download_task + "succeeded", log)) == 1

        # The same server, once, and the supervisor agrees.
        lifecycle.reconcile()
        instance.refresh_from_db()
        assert instance.state == State.RUNNING
        assert (instance.pid, instance.process_create_time) == (pid, create_time)
        assert [p.pid for p in servers_on_port(profile.port)] == [pid]

        # The same worker process, after its acks_late task finished (celery 5.7.0's worker
        # left here), consumes a task published after the restart: it stops the server.
        lifecycle.request_stop(profile)
        wait_for(
            lambda: lifecycle.ServerInstance.objects.get(pk=instance.pk).state == State.STOPPED,
            30, 0.2, what=f"the stop through the restarted Redis\n{worker.log_tail()}",
        )  # fmt: skip
        assert not supervisor.group_members(pid)
        assert servers_on_port(profile.port) == []
        assert worker.process.poll() is None
        assert psutil.Process(worker_pid).create_time() == worker_started
        assert "Unrecoverable error" not in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
    report(
        f"redis restart: outage {outage:.1f} s; the same worker (pid {worker_pid}) answered "
        f"{reconnected:.1f} s and /healthz was ok {healthy_after:.1f} s after Redis came back; "
        f"download of 2 MB completed in {download.runs.count()} run(s); "
        f"total {time.monotonic() - began:.1f} s"
    )
