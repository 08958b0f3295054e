"""Redis goes away and comes back while a model server runs and a download is active.

Everything runs for real on a Redis server of the test's own (a free port, no persistence):
the portal's Celery worker, the tiny model's `mlx_lm.server` it spawned, a throttled download
from the fake Hub. Figures: docs/reliability.md."""

from __future__ import annotations

import time

import psutil
import pytest
import redis
from django.test import Client
from django.urls import reverse

from models_catalog import downloads
from models_catalog.local import local_model_path
from models_catalog.models import Download
from servers import services, supervisor
from servers.models import State
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


def test_redis_restart_keeps_the_server_and_finishes_the_download(
    own_redis, hub, settings, served_model, hf_cache, make_profile, member, server_reaper,
    tmp_path,
):  # fmt: skip
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    began = time.monotonic()
    files = add_random_repo(hub, REPO, {BIG: 2_000_000}, seed=21)
    profile = make_profile("Outage", model_id=served_model)

    worker = new_worker(tmp_path).start()
    replacement: list = []
    try:
        worker.wait_ready()

        # A server started through the portal, by the worker on our Redis.
        instance = services.request_start(profile)
        wait_for(
            lambda: services.ServerInstance.objects.get(pk=instance.pk).state == State.RUNNING,
            90, 0.3, what=f"the server to run\n{worker.log_tail()}",
        )  # fmt: skip
        instance.refresh_from_db()
        pid, create_time = instance.pid, instance.process_create_time
        server_reaper((pid, create_time))
        assert psutil.Process(pid).ppid() == worker.pid

        # A download, throttled so that it is still active across the outage.
        hub.throttle_bps = 150_000
        download, _ = downloads.start_download(REPO, member)

        def partial_size() -> int:
            partial = partial_files(hf_cache, REPO)
            return max((p.stat().st_size for p in partial), default=0)

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

        hub.throttle_bps = None

        # The worker should reconnect. With celery/kombu 5.7 on Redis it may instead die of
        # "Unrecoverable error: AttributeError('NoneType' … 'hostname')" while restoring the
        # unacked message of its running task (docs/reliability.md); the deploy's service
        # manager (Restart=always) then starts it again, which is what we do here.
        from config.celery import app

        def reconnected_or_gone():
            if worker.process.poll() is not None:
                return "exited"
            try:
                replies = app.control.ping(destination=[worker.hostname], timeout=0.5)
            except redis.ConnectionError:  # this process's stale broker connection: retry
                return None
            return "reconnected" if any(worker.hostname in r for r in replies) else None

        outcome = wait_for(reconnected_or_gone, 60, 0.2, what=f"the worker\n{worker.log_tail()}")
        live = worker
        if outcome == "exited":
            live = new_worker(tmp_path).start()
            replacement.append(live)
            live.wait_ready()

        def healthy():
            response = Client().get("/healthz")
            return response.status_code == 200 and live.hostname in response.json()["workers"]

        wait_for(healthy, 60, 0.5, what=f"/healthz to be ok again\n{live.log_tail()}")
        reconnected = time.monotonic() - down_at - outage

        def completed():
            downloads.reconcile_downloads()
            download.refresh_from_db()
            assert download.state != Download.State.FAILED, download.error
            return download.state == Download.State.COMPLETED

        wait_for(completed, 60, 0.3, what=f"the download to complete\n{worker.log_tail()}")
        assert dir_digests(local_model_path(REPO)) == source_digests(files)
        assert partial_files(hf_cache, REPO) == []
        runs = download.runs.count()

        # The same server, once, and the supervisor agrees.
        services.reconcile()
        instance.refresh_from_db()
        assert instance.state == State.RUNNING
        assert (instance.pid, instance.process_create_time) == (pid, create_time)
        assert [p.pid for p in servers_on_port(profile.port)] == [pid]

        # The worker consumes tasks published after the restart: it stops the server.
        services.request_stop(profile)
        wait_for(
            lambda: services.ServerInstance.objects.get(pk=instance.pk).state == State.STOPPED,
            30, 0.2, what=f"the stop through the restarted Redis\n{worker.log_tail()}",
        )  # fmt: skip
        assert not supervisor.group_members(pid)
        assert servers_on_port(profile.port) == []
    finally:
        for process in (worker, *replacement):
            process.stop()
    report(
        f"redis restart: outage {outage:.1f} s; worker {outcome}; healthy {reconnected:.1f} s "
        f"after Redis came back; download of 2 MB completed in {runs} run(s); "
        f"total {time.monotonic() - began:.1f} s"
    )
