"""The vision engine: a profile with engine "vision" runs the real mlx_vlm.server (through
servers/supervision/vlm_entry.py) on the tiny Qwen2-VL, supervised like every server."""

from __future__ import annotations

import base64
import io
import os
import signal
from pathlib import Path

import httpx
import pytest
from PIL import Image

from servers.models import ServerInstance, State
from servers.supervision import lifecycle, supervisor
from servers.supervision.command import VLM_ENTRY
from tests.servers.helpers import install_model, wait_for
from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

VISION_REPO = "mlx-community/tiny-vision-test"


def fresh(instance: ServerInstance) -> ServerInstance:
    instance.refresh_from_db()
    return instance


def image_chat(url: str, model: str = "default_model") -> httpx.Response:
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), "orange").save(buffer, "PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "text", "text": "What is it?"},
               {"type": "image_url", "image_url": {"url": image}}]  # fmt: skip
    body = {"model": model, "max_tokens": 30, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_a_vision_profile_runs_mlx_vlm_server_which_sees_an_image_and_is_supervised(
    hf_cache, make_profile, clean_queues, server_reaper, tiny_model_variant
):
    install_model(hf_cache, VISION_REPO, source=tiny_model_variant("vision"))
    profile = make_profile("Eyes", model_id=VISION_REPO, engine="vision", max_tokens=64)
    instance = lifecycle.request_start(profile)
    lifecycle.launch(instance.pk)  # what the host's worker runs
    instance = fresh(instance)
    server_reaper((instance.pid, instance.process_create_time))
    assert instance.state == State.RUNNING, instance.reason + instance.log_tail
    assert instance.command[1] == VLM_ENTRY
    assert instance.command[instance.command.index("--host") + 1] == "127.0.0.1"
    assert os.getpgid(instance.pid) == instance.pid

    url = lifecycle.upstream_for(profile)
    answer = image_chat(url)
    assert answer.json()["choices"][0]["message"]["content"] == REPLY
    # Any other model name is answered by its own model: nothing is loaded by name.
    assert image_chat(url, model="someone/else").status_code == 200
    embeddings = httpx.post(f"{url}/v1/embeddings", json={"model": "x", "input": "hi"})
    assert embeddings.status_code == 404
    log = Path(instance.log_path).read_text()
    assert "MLX Portal: mlx_vlm.server" in log and "nothing loads by name" in log

    lifecycle.reconcile()  # healthy: left alone
    assert fresh(instance).state == State.RUNNING

    pid, created = instance.pid, instance.process_create_time
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not supervisor.is_alive(pid, created), 10, what="the kill")
    lifecycle.reconcile()
    instance = fresh(instance)
    assert instance.state == State.FAILED
    assert instance.reason == "The server was killed by SIGKILL while running."
    assert "Application startup complete" in instance.log_tail
    assert instance.next_restart_at is not None  # restarted with back-off
