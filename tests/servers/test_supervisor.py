"""Real mlx_lm.server processes: start, answer, hang, die, restart, re-adoption, stop."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import httpx
import psutil
import pytest
from django.utils import timezone

from accounts.audit.models import AuditEntry
from servers.models import ServerInstance, State
from servers.supervision import lifecycle, supervisor
from tests.servers.helpers import wait_for
from tests.support.mlx_server import model_servers
from tests.support.workers import new_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fresh(instance: ServerInstance) -> ServerInstance:
    instance.refresh_from_db()
    return instance


def group_alive(pgid: int) -> bool:
    return bool(supervisor.group_members(pgid))


def servers_on_port(port: int) -> list[psutil.Process]:
    return model_servers(port)


def chat(url: str) -> dict:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 40},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def test_a_started_server_answers_a_chat_and_an_idle_one_stops_leaving_no_process(
    served_model, make_profile, clean_queues, server_reaper
):
    from tests.support.tiny_models import REPLY

    profile = make_profile("Tiny", model_id=served_model, idle_timeout_minutes=1)
    instance = lifecycle.request_start(profile)
    assert instance.state == State.STARTING
    lifecycle.launch(instance.pk)  # what the host's worker runs; here in the test process
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.RUNNING, instance.reason
    assert instance.reason.startswith("Ready")
    assert psutil.Process(instance.pid).create_time() == pytest.approx(
        instance.process_create_time, abs=0.05
    )
    assert os.getpgid(instance.pid) == instance.pid  # its own process group
    assert os.getsid(instance.pid) == instance.pid  # and its own session
    assert "--allowed-origins" in instance.command

    assert lifecycle.upstream_for(profile) == f"http://127.0.0.1:{profile.port}"
    assert lifecycle.running_model_ids() == {served_model}
    answer = chat(lifecycle.upstream_for(profile))
    assert answer["choices"][0]["message"]["content"] == REPLY

    lifecycle.reconcile()  # a healthy server is left alone
    assert fresh(instance).state == State.RUNNING

    ServerInstance.objects.filter(pk=instance.pk).update(
        last_request_at=timezone.now() - timedelta(minutes=2)
    )
    lifecycle.reconcile()
    instance = fresh(instance)
    assert instance.state == State.STOPPING
    assert "Idle for 1 min" in instance.reason
    stop = AuditEntry.objects.get(action="server.stop")  # the audit log names the idle stop
    assert stop.actor_label == "system: idle stop" and stop.object_label == "Tiny"
    lifecycle.stop(instance.pk)
    instance = fresh(instance)
    assert instance.state == State.STOPPED
    assert instance.desired_state == "stopped"
    assert not supervisor.is_alive(instance.pid, instance.process_create_time)
    assert not group_alive(instance.pid)
    assert instance.exit_code is not None  # we are its parent: SIGTERM's status is known
    assert lifecycle.running_model_ids() == set()


def test_a_hung_server_is_marked_failed_and_killed(
    served_model, make_profile, clean_queues, server_reaper, settings
):
    settings.SERVER_PROBE_TIMEOUT = 0.5
    settings.SERVER_HUNG_CHECKS = 2
    profile = make_profile("Hangs", model_id=served_model)
    instance = lifecycle.request_start(profile)
    lifecycle.launch(instance.pk)
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.RUNNING

    os.kill(instance.pid, signal.SIGSTOP)  # alive, but answers nothing
    lifecycle.reconcile()
    assert fresh(instance).state == State.RUNNING and instance.failed_probes == 1
    lifecycle.reconcile()
    instance = fresh(instance)
    assert instance.state == State.FAILED
    assert "stopped answering" in instance.reason
    assert "Starting httpd" in instance.log_tail
    wait_for(lambda: not group_alive(instance.pid), 10, what="the hung group to be killed")


def test_a_start_that_never_answers_fails_with_the_log_tail(
    hf_cache, make_profile, clean_queues, server_reaper, settings
):
    from tests.servers.helpers import install_model

    settings.SERVER_START_TIMEOUT = 4
    install_model(hf_cache, "acme/broken")  # a config.json and no real weights
    profile = make_profile("Broken", model_id="acme/broken")
    instance = lifecycle.request_start(profile)
    lifecycle.launch(instance.pk)
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.FAILED
    assert "did not answer within 4 s" in instance.reason or "while starting" in instance.reason
    assert instance.log_tail  # what mlx_lm.server said, for the tile
    assert not group_alive(instance.pid)


def test_a_killed_server_fails_with_its_exit_reason_then_restarts_with_back_off(
    served_model, make_profile, clean_queues, server_reaper, settings, tmp_path
):
    settings.SERVER_RESTART_BACKOFF = 0.2
    profile = make_profile("Crashy", model_id=served_model)
    instance = lifecycle.request_start(profile)
    lifecycle.launch(instance.pk)
    instance = fresh(instance)
    first_pid, first_time = instance.pid, instance.process_create_time
    server_reaper((first_pid, first_time))
    assert instance.state == State.RUNNING

    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: not supervisor.is_alive(first_pid, first_time), 10, what="the kill")
    lifecycle.reconcile()
    instance = fresh(instance)
    assert instance.state == State.FAILED
    assert instance.reason == "The server was killed by SIGKILL while running."
    assert instance.exit_code == -signal.SIGKILL
    assert "Starting httpd" in instance.log_tail
    assert instance.next_restart_at is not None

    worker = new_worker(tmp_path).start()
    try:
        worker.wait_ready()

        def restarted():
            lifecycle.reconcile()
            current = fresh(instance)
            return current.state == State.RUNNING and current.pid != first_pid

        wait_for(restarted, 90, every=0.5, what="the automatic restart")
        server_reaper((instance.pid, instance.process_create_time))
        assert instance.restart_count == 1
        assert len(servers_on_port(profile.port)) == 1
    finally:
        worker.stop()
    lifecycle.request_stop(profile)
    lifecycle.stop(instance.pk)
    assert not group_alive(instance.pid)


def test_a_user_stopped_server_is_not_restarted(
    served_model, make_profile, clean_queues, server_reaper
):
    profile = make_profile("Stopped", model_id=served_model)
    instance = lifecycle.request_start(profile)
    ServerInstance.objects.filter(pk=instance.pk).update(
        state=State.FAILED, desired_state="stopped", next_restart_at=timezone.now()
    )
    lifecycle.reconcile()
    assert fresh(instance).state == State.FAILED


def test_a_worker_restart_re_adopts_the_server_without_a_second_copy(
    served_model, make_profile, clean_queues, server_reaper, tmp_path
):
    profile = make_profile("Survivor", model_id=served_model, auto_start=True)
    instance = profile.get_instance()
    first = new_worker(tmp_path).start()
    try:
        first.wait_ready()
        # Auto-start: the worker's worker_ready signal starts the profile, nobody asks.
        wait_for(lambda: fresh(instance).state == State.RUNNING, 90, what="the auto-start")
        server_reaper((instance.pid, instance.process_create_time))
        assert instance.desired_state == "running"
        assert psutil.Process(instance.pid).ppid() == first.pid  # the worker's own child
        assert lifecycle.ensure_running(profile, timeout=5) == instance.base_url  # no 2nd copy
    finally:
        first.kill()  # SIGKILL to the worker's whole process group, as a crash would
    assert supervisor.is_alive(instance.pid, instance.process_create_time)
    assert chat(instance.base_url)["choices"]

    second = new_worker(tmp_path).start()
    try:
        second.wait_ready()  # its worker_ready auto-start sees the server and leaves it alone
        lifecycle.reconcile()
        pid = fresh(instance).pid
        assert instance.state == State.RUNNING
        assert servers_on_port(profile.port) == [psutil.Process(pid)]

        lifecycle.request_stop(profile)  # the new worker stops a server it did not spawn
        wait_for(lambda: fresh(instance).state == State.STOPPED, 30, what="the stop")
        assert not group_alive(pid)
        assert servers_on_port(profile.port) == []

        # On demand, as the gateway will: the worker spawns it and we wait until it answers.
        url = lifecycle.ensure_running(profile, timeout=90)
        server_reaper((fresh(instance).pid, instance.process_create_time))
        assert url == instance.base_url and instance.state == State.RUNNING
        assert instance.reason.startswith("Ready")
        lifecycle.request_stop(profile)
        wait_for(lambda: fresh(instance).state == State.STOPPED, 30, what="the second stop")
        assert servers_on_port(profile.port) == []
    finally:
        second.stop()


def test_on_demand_start_is_refused_when_the_profile_does_not_allow_it(
    served_model, make_profile, clean_queues
):
    profile = make_profile("Manual", model_id=served_model, allow_on_demand=False)
    with pytest.raises(lifecycle.ServerUnavailable, match="does not allow starting it on demand"):
        lifecycle.ensure_running(profile, timeout=1)
    assert profile.get_instance().state == State.STOPPED
