"""Worker and beat restarted while three model servers run: every server is re-adopted (same
pid, one process per port, none orphaned), then stopped through the portal, leaving a clean
process table. On a Redis of the test's own. Figures: docs/reliability.md."""

from __future__ import annotations

import time

import psutil
import pytest

from servers import services, supervisor
from servers.models import ServerInstance, State
from tests.reliability.conftest import servers_on_port, start_beat, stop_process
from tests.servers.helpers import wait_for
from tests.support.workers import new_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def state_of(instance: ServerInstance) -> str:
    instance.refresh_from_db()
    return instance.state


def test_three_servers_survive_a_worker_and_beat_restart_and_stop_cleanly(
    own_redis, served_model, make_profile, server_reaper, tmp_path
):
    began = time.monotonic()
    profiles = [make_profile(f"Trio {n}", model_id=served_model) for n in range(3)]
    first = new_worker(tmp_path).start()
    beat = start_beat(tmp_path, MLX_PORTAL_RECONCILE_INTERVAL="1")
    workers = [first]
    try:
        first.wait_ready()
        instances = [services.request_start(p) for p in profiles]
        for instance in instances:
            wait_for(lambda i=instance: state_of(i) == State.RUNNING, 120, 0.3,
                     what=f"{instance} to run\n{first.log_tail()}")  # fmt: skip
            server_reaper((instance.pid, instance.process_create_time))
        started = time.monotonic() - began
        before = {i.pk: (i.pid, i.process_create_time) for i in instances}
        assert all(psutil.Process(pid).ppid() == first.pid for pid, _ in before.values())

        # Everything but the servers goes away at once: the worker crashes, beat is stopped.
        first.kill()
        stop_process(beat)
        assert all(supervisor.is_alive(*pair) for pair in before.values())

        restarted_at = time.monotonic()
        second = new_worker(tmp_path).start()
        workers.append(second)
        beat = start_beat(tmp_path, MLX_PORTAL_RECONCILE_INTERVAL="1")
        second.wait_ready()

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

        # Stop all three through the portal; the new worker stops servers it did not spawn.
        for profile in profiles:
            services.request_stop(profile)
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
    print(
        f"[reliability] restart everything: 3 servers running in {started:.1f} s; "
        f"re-adopted {readopted:.1f} s after the new worker and beat started; "
        f"total {time.monotonic() - began:.1f} s"
    )
