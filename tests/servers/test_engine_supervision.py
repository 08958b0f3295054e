"""The embeddings and speech-to-text servers (servers/supervision/engine_entry.py) supervised as
every model server is: started by their engine's command line, ready when a real request of
their kind is answered, re-adopted, restarted after a crash, stopped leaving no process."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from servers.models import Engine, ServerInstance, State
from servers.supervision import lifecycle, probes, supervisor
from servers.supervision.command import ENGINE_ENTRY, MLX_ENTRY, build_engine_command
from servers.supervision.engine_entry import STATUS_PATH
from servers.supervision.mlx_entry import STATUS_PATH as MLX_STATUS_PATH
from tests.servers.helpers import install_model, wait_for
from tests.support.engine_server import request
from tests.support.tiny_engines import tiny_engine_cache

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fresh(instance: ServerInstance) -> ServerInstance:
    instance.refresh_from_db()
    return instance


def test_the_engine_command_line_runs_the_portal_entry_on_loopback_only():
    argv = build_engine_command("py", tiny_engine_cache("embed"), "embeddings", 8200)
    assert argv[:2] == ["py", ENGINE_ENTRY]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--engine") + 1] == "embeddings"
    with pytest.raises(ValueError):
        build_engine_command("py", tiny_engine_cache("embed"), "text", 8200)
    assert STATUS_PATH == MLX_STATUS_PATH  # the probes read both servers alike


def test_an_embeddings_server_starts_is_re_adopted_restarts_after_a_crash_and_stops(
    hf_cache, make_profile, clean_queues, server_reaper, settings
):
    settings.SERVER_RESTART_BACKOFF = 0.1
    install_model(hf_cache, "test-org/tiny-embed", source=tiny_engine_cache("embed"))
    profile = make_profile("Vectors", model_id="test-org/tiny-embed", engine=Engine.EMBEDDINGS)
    instance = lifecycle.request_start(profile)
    lifecycle.launch(instance.pk)
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.RUNNING, instance.reason
    assert instance.reason == "Ready: the model answered an embeddings request"
    assert instance.command[1] == ENGINE_ENTRY and MLX_ENTRY not in instance.command
    assert "--temp" not in instance.command  # a text profile's options do not apply
    assert len(request(instance.base_url, "embed")["data"][0]["embedding"]) == 64
    assert probes.server_busy(profile.port) is None  # its /portal/status: nothing in flight
    assert probes.check_alive(instance.base_url).ok

    # A start whose worker went away: the supervisor probes it with an embedding, adopts it.
    ServerInstance.objects.filter(pk=instance.pk).update(
        state=State.STARTING, started_at=timezone.now() - timedelta(seconds=20)
    )
    lifecycle.reconcile()
    instance = fresh(instance)
    assert (instance.state, instance.reason) == (
        State.RUNNING,
        "Ready (re-adopted by the supervisor)",
    )

    first = (instance.pid, instance.process_create_time)
    os.kill(instance.pid, signal.SIGKILL)
    wait_for(lambda: not supervisor.is_alive(*first), 10, what="the kill")
    lifecycle.reconcile()
    instance = fresh(instance)
    assert instance.state == State.FAILED
    assert instance.reason == "The server was killed by SIGKILL while running."
    assert "embeddings (mlx-embeddings" in instance.log_tail  # the server's log, for the tile

    wait_for(lambda: fresh(instance).next_restart_at <= timezone.now(), 5, what="back-off")
    lifecycle.reconcile()  # the back-off has passed: a restart is asked of the host's worker
    assert fresh(instance).state == State.RESTARTING
    lifecycle.launch(instance.pk)  # what the worker runs
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.RUNNING and instance.pid != first[0]
    assert instance.restart_count == 1

    lifecycle.request_stop(profile)
    lifecycle.stop(instance.pk)
    assert fresh(instance).state == State.STOPPED
    assert not supervisor.group_members(instance.pid)


def test_a_speech_to_text_server_is_ready_when_it_transcribes_and_stops_when_idle(
    hf_cache, make_profile, clean_queues, server_reaper
):
    install_model(hf_cache, "test-org/tiny-whisper", source=tiny_engine_cache("whisper"))
    profile = make_profile(
        "Ears", model_id="test-org/tiny-whisper", engine=Engine.SPEECH, idle_timeout_minutes=1
    )
    instance = lifecycle.request_start(profile)
    lifecycle.launch(instance.pk)
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.RUNNING, instance.reason
    assert instance.reason == "Ready: the model answered a transcription"
    assert probes.probe_ready_for("speech-to-text", instance.base_url).ok
    # A speech server is no chat server: the text probe fails on it.
    assert not probes.probe_ready(instance.base_url, timeout=5).ok

    ServerInstance.objects.filter(pk=instance.pk).update(
        last_request_at=timezone.now() - timedelta(minutes=2)
    )
    lifecycle.reconcile()
    instance = fresh(instance)
    assert instance.state == State.STOPPING and "Idle for 1 min" in instance.reason
    lifecycle.stop(instance.pk)
    assert fresh(instance).state == State.STOPPED
    assert not supervisor.is_alive(instance.pid, instance.process_create_time)
