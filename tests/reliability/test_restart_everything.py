"""Web tier, worker and beat killed together while three model servers run: every server is
re-adopted (same pid, one process per port, none orphaned) and answers through the new web
tier's /v1, then stopped through the portal, leaving a clean process table. On a Redis of the
test's own. Figures: docs/reliability.md."""

from __future__ import annotations

import time

import httpx
import psutil
import pytest

from servers.models import ServerInstance, State
from servers.supervision import lifecycle, supervisor
from tests.reliability.conftest import (
    kill_group,
    servers_on_port,
    start_beat,
    start_web,
    stop_process,
)
from tests.servers.helpers import wait_for
from tests.support.mlx_server import free_port
from tests.support.tiny_models import REPLY
from tests.support.workers import new_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def state_of(instance: ServerInstance) -> str:
    instance.refresh_from_db()
    return instance.state


def web_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def ask(url: str, key: str, slug: str) -> str:
    """One chat completion through the web tier's /v1 gateway."""
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": slug, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_three_servers_survive_web_worker_and_beat_killed_together_and_stop_cleanly(
    own_redis, served_model, make_profile, server_reaper, api_key, tmp_path
):
    began = time.monotonic()
    profiles = [make_profile(f"Trio {n}", model_id=served_model) for n in range(3)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webs = [start_web(tmp_path, port)]
    first = new_worker(tmp_path).start()
    beat = start_beat(tmp_path, MLX_PORTAL_RECONCILE_INTERVAL="1")
    workers = [first]
    try:
        first.wait_ready()
        wait_for(lambda: web_answers(url), 60, 0.2, what="the web tier")
        instances = [lifecycle.request_start(p) for p in profiles]
        for instance in instances:
            wait_for(lambda i=instance: state_of(i) == State.RUNNING, 120, 0.3,
                     what=f"{instance} to run\n{first.log_tail()}")  # fmt: skip
            server_reaper((instance.pid, instance.process_create_time))
        started = time.monotonic() - began
        before = {i.pk: (i.pid, i.process_create_time) for i in instances}
        assert all(psutil.Process(pid).ppid() == first.pid for pid, _ in before.values())
        for profile in profiles:
            assert ask(url, api_key, profile.slug) == REPLY

        # Everything but the servers goes away at once: web, worker and beat are SIGKILLed.
        kill_group(webs[0])
        first.kill()
        beat.kill()
        beat.wait(10)
        assert all(supervisor.is_alive(*pair) for pair in before.values())

        restarted_at = time.monotonic()
        webs.append(start_web(tmp_path, port))
        second = new_worker(tmp_path).start()
        workers.append(second)
        beat = start_beat(tmp_path, MLX_PORTAL_RECONCILE_INTERVAL="1")
        second.wait_ready()
        wait_for(lambda: web_answers(url), 60, 0.2, what="the new web tier")

        # Beat's reconcile reaches the new worker (its log shows a completed pass).
        def reconciled() -> bool:
            log = second.log_path.read_text(errors="replace")
            return "servers.tasks.reconcile_host" in log and "succeeded" in log

        wait_for(reconciled, 30, 0.3, what=f"a reconcile pass\n{second.log_tail()}")
        readopted = time.monotonic() - restarted_at
        for instance in instances:
            assert state_of(instance) == State.RUNNING, instance.reason
            assert (instance.pid, instance.process_create_time) == before[instance.pk]
            assert [p.pid for p in servers_on_port(instance.port)] == [instance.pid]
            # Orphaned from the dead worker, adopted by init: alive, but nobody's zombie.
            assert psutil.Process(instance.pid).ppid() != first.pid
        # The new web tier reaches every re-adopted server.
        for profile in profiles:
            assert ask(url, api_key, profile.slug) == REPLY

        # Stop all three through the portal; the new worker stops servers it did not spawn.
        for profile in profiles:
            lifecycle.request_stop(profile)
        for instance in instances:
            wait_for(lambda i=instance: state_of(i) == State.STOPPED, 40, 0.3,
                     what=f"{instance} to stop\n{second.log_tail()}")  # fmt: skip
        for instance in instances:
            pid = before[instance.pk][0]
            assert not supervisor.group_members(pid)
            assert servers_on_port(instance.port) == []
            assert not psutil.pid_exists(pid) or (
                psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            )
    finally:
        stop_process(beat)
        for worker in workers:
            worker.stop()
        for web in webs:
            if web.poll() is None:
                kill_group(web)
    print(
        f"[reliability] restart everything: 3 servers running in {started:.1f} s; "
        f"re-adopted {readopted:.1f} s after new web, worker and beat started; "
        f"total {time.monotonic() - began:.1f} s"
    )
