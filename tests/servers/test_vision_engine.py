"""The vision engine: a profile with engine "vision" runs the real mlx_vlm.server (through
servers/supervision/vlm_entry.py) on the tiny Qwen2-VL, supervised like every server."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from PIL import Image

from servers.models import ServerInstance, State, UsageRecord
from servers.supervision import lifecycle, probes, supervisor
from servers.supervision.command import VLM_ENTRY
from servers.supervision.mlx_entry import STATUS_PATH as MLX_STATUS_PATH
from servers.supervision.vlm_entry import STATUS_PATH
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


ENDLESS = {"logit_bias": {"0": -100, "2": -100}}  # the tiny model never ends its reply


def status(server) -> dict:
    return httpx.get(f"{server.url}{STATUS_PATH}", timeout=10).json()


def test_a_vision_server_says_what_it_is_busy_with_and_stops_a_whole_answer_its_client_left(
    vision_server,
):
    """vlm_entry's /portal/status (the tiles' "busy", the memory plan's eviction) and a
    non-streamed request stopped when its client leaves (mlx-vlm generates it to the end)."""
    assert STATUS_PATH == MLX_STATUS_PATH  # the probes read every server alike
    assert status(vision_server)["requests"] == []
    assert probes.server_busy(vision_server.port) is None
    gone_before = status(vision_server)["stopped_for_gone_clients"]
    hi = [{"role": "user", "content": "hi"}]
    body = json.dumps({"model": "default_model", "max_tokens": 100_000, "messages": hi, **ENDLESS})
    body = body.encode()
    client = socket.create_connection(("127.0.0.1", vision_server.port))
    client.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    busy = wait_for(
        lambda: probes.server_busy(vision_server.port), timeout=60, every=0.05, what="busy"
    )
    assert busy["requests"] == 1
    (request,) = wait_for(
        lambda: [r for r in status(vision_server)["requests"] if r["generated_tokens"] > 5],
        timeout=60, every=0.05, what="tokens generated",
    )  # fmt: skip
    assert request["stream"] is False and request["prompt_tokens"] > 0
    client.close()  # the client leaves: the generation stops at its next token
    wait_for(
        lambda: status(vision_server)["stopped_for_gone_clients"] == gone_before + 1,
        timeout=10, every=0.05, what="the request stopped",
    )  # fmt: skip
    assert status(vision_server)["requests"] == []
    assert "Generation cancelled" in vision_server.log_path.read_text()

    # A whole answer and a stream that their clients read to the end are not counted as gone.
    assert image_chat(vision_server.url).json()["choices"][0]["message"]["content"] == REPLY
    streamed = {"model": "default_model", "max_tokens": 8, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with httpx.stream("POST", f"{vision_server.url}/v1/chat/completions", json=streamed,
                      timeout=60) as answer:  # fmt: skip
        assert any("[DONE]" in line for line in answer.iter_lines())
    assert status(vision_server) == {"requests": [], "stopped_for_gone_clients": gone_before + 1}


def test_through_the_gateway_a_whole_vision_answer_whose_client_left_is_stopped(
    vision_server, serve_profile, api_key, portals
):
    """gunicorn as shipped: the gateway closes its connection to the vision server when its
    client leaves (transport._Waiter), and the server stops generating."""
    serve_profile(vision_server, "Eyes", engine="vision")
    portal = portals(WEB_WORKERS="1", WEB_THREADS="4")
    gone_before = status(vision_server)["stopped_for_gone_clients"]
    body = json.dumps({"model": "eyes", "messages": [{"role": "user", "content": "hi"}], **ENDLESS})
    client = socket.create_connection(("127.0.0.1", portal.port))
    client.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        b"application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
        % (api_key.encode(), len(body), body.encode())
    )
    wait_for(
        lambda: [r for r in status(vision_server)["requests"] if r["generated_tokens"] > 5],
        timeout=60, every=0.05, what="tokens generated",
    )  # fmt: skip
    client.close()
    wait_for(
        lambda: status(vision_server)["stopped_for_gone_clients"] == gone_before + 1,
        timeout=30, every=0.05, what="the request stopped",
    )  # fmt: skip
    record = wait_for(lambda: UsageRecord.objects.filter(profile_name="Eyes").first(), 30)
    assert record.status == UsageRecord.Status.CANCELLED and record.stream is False
