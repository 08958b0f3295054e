"""A model server SIGKILLed again and again under a real worker and a real beat (production
reconcile interval): each kill is shown `failed` with its exit reason within seconds, then
restarted with a growing back-off, at most SERVER_MAX_RESTARTS times; a user-stopped server is
never restarted. Figures: docs/reliability.md."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from django.conf import settings

from servers.models import ServerInstance, State
from servers.supervision import lifecycle, supervisor
from tests.reliability.conftest import servers_on_port, start_beat, stop_process
from tests.servers.helpers import wait_for
from tests.support.workers import new_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BACKOFF = 0.5  # the worker's MLX_PORTAL_SERVER_RESTART_BACKOFF: 0.5, 1, 2 s
MAX_RESTARTS = 3


def fresh(instance: ServerInstance) -> ServerInstance:
    instance.refresh_from_db()
    return instance


def tiles_html(client) -> str:
    response = client.get("/servers/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def test_a_server_killed_four_times_fails_visibly_restarts_with_back_off_then_gives_up(
    own_redis, served_model, make_profile, server_reaper, member_client, tmp_path
):
    profile = make_profile("Crashy", model_id=served_model)
    env = {
        "MLX_PORTAL_SERVER_RESTART_BACKOFF": str(BACKOFF),
        "MLX_PORTAL_SERVER_MAX_RESTARTS": str(MAX_RESTARTS),
    }
    worker = new_worker(tmp_path, **env).start()
    beat = start_beat(tmp_path, **env)  # the default reconcile interval, as in production
    detections, restarts = [], []
    try:
        worker.wait_ready()
        instance = lifecycle.request_start(profile)
        wait_for(lambda: fresh(instance).state == State.RUNNING, 120, 0.2,
                 what=f"the first start\n{worker.log_tail()}")  # fmt: skip
        server_reaper((instance.pid, instance.process_create_time))

        for kill in range(1, MAX_RESTARTS + 2):
            pid = fresh(instance).pid
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: fresh(instance).state == State.FAILED, 30, 0.05,
                     what=f"kill {kill} to show\n{worker.log_tail()}")  # fmt: skip
            detections.append(time.monotonic() - killed_at)
            assert instance.reason == "The server was killed by SIGKILL while running."
            assert instance.exit_code == -signal.SIGKILL
            page = tiles_html(member_client)
            assert "killed by SIGKILL" in page and "Crashy" in page

            if kill > MAX_RESTARTS:
                break  # the last kill: no more restarts
            assert instance.next_restart_at is not None
            failed_at = time.monotonic()
            wait_for(
                lambda pid=pid: fresh(instance).state == State.RUNNING and instance.pid != pid,
                120, 0.1, what=f"restart {kill}\n{worker.log_tail()}",
            )  # fmt: skip
            restarts.append(time.monotonic() - failed_at)
            server_reaper((instance.pid, instance.process_create_time))
            assert instance.restart_count == kill
            assert [p.pid for p in servers_on_port(profile.port)] == [instance.pid]

        # Given up: failed, no restart scheduled, and still so after two more reconcile passes.
        assert instance.restart_count == MAX_RESTARTS
        assert instance.next_restart_at is None
        passes = worker.log_path.read_text(errors="replace").count("reconcile_host")
        interval = settings.CELERY_BEAT_SCHEDULE["servers-reconcile"]["schedule"]
        wait_for(
            lambda: worker.log_path.read_text(errors="replace").count("reconcile_host")
            >= passes + 4,
            interval * 6 + 30, 0.2, what="two more reconcile passes",
        )  # fmt: skip
        assert fresh(instance).state == State.FAILED
        assert servers_on_port(profile.port) == []

        # A user stop ends the story: started again, stopped by the user, never restarted.
        instance = lifecycle.request_start(profile)
        wait_for(lambda: fresh(instance).state == State.RUNNING, 120, 0.2,
                 what=f"the manual start\n{worker.log_tail()}")  # fmt: skip
        server_reaper((instance.pid, instance.process_create_time))
        last_pid = instance.pid
        lifecycle.request_stop(profile)
        wait_for(lambda: fresh(instance).state == State.STOPPED, 40, 0.2, what="the stop")
        passes = worker.log_path.read_text(errors="replace").count("reconcile_host")
        wait_for(
            lambda: worker.log_path.read_text(errors="replace").count("reconcile_host")
            >= passes + 4,
            interval * 6 + 30, 0.2, what="two more reconcile passes",
        )  # fmt: skip
        assert fresh(instance).state == State.STOPPED
        assert servers_on_port(profile.port) == []
        assert not supervisor.group_members(last_pid)
        assert not psutil.pid_exists(last_pid) or (
            psutil.Process(last_pid).status() == psutil.STATUS_ZOMBIE
        )
    finally:
        stop_process(beat)
        worker.stop()
    print(
        "[reliability] server SIGKILL: killed → failed in "
        + " / ".join(f"{d:.1f}" for d in detections)
        + f" s (reconcile every {interval:g} s); failed → running again in "
        + " / ".join(f"{r:.1f}" for r in restarts)
        + f" s (back-off {BACKOFF:g} s doubling); gave up after {MAX_RESTARTS} restarts"
    )
