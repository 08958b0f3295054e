"""A client that leaves stops the model server's work on its request; a long request shows on
its tile; a burst of clients is served (the outside attack's findings 2, 3 and 6).

Everything runs as shipped: gunicorn from the Procfile behind nginx with the shipped config
(tests/support/front.py), a real mlx_lm.server through the portal's entry point
(servers/supervision/mlx_entry.py), real clients — raw sockets, the `openai` client, Chromium on the
chat page. The long prompt is real work: ~50,000 tokens that a tiny model whose config allows a
131,072-token context reads in chunks of 2,048, for many seconds. Each test asserts on the
server having dropped the request (its `GET /portal/status`), never on a time.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest
from django.conf import settings as django_settings
from django.test import Client

from servers.models import ServerInstance, UsageRecord
from servers.supervision import monitor
from servers.tiles import tiles_for
from tests.servers.helpers import install_model, wait_for
from tests.support.front import ShippedPortal, shipped_portal
from tests.support.mlx_server import running_mlx_server
from tests.support.tiny_models import REPLY, tiny_model_cache
from tests.support.workers import process_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

LONG_REPO = "test-org/tiny-long-context"
LONG_CONTEXT = 131_072
HI = [{"role": "user", "content": "hi"}]


def long_prompt(words: int = 8_000) -> str:
    """About 6 tokens a word for the tiny tokenizer: ~50,000 tokens for 8,000 words."""
    rng = random.Random(7)
    vocabulary = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dogs",
        "while",
        "servers",
        "hum",
        "along",
    ]
    return " ".join(rng.choice(vocabulary) + str(rng.randint(0, 999)) for _ in range(words))


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    """The tiny text model, its config allowing a 131,072-token context (llama's rotary
    positions take any length; only the config's limit changes)."""
    model = tmp_path_factory.mktemp("long-model") / "model"
    shutil.copytree(tiny_model_cache("text"), model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = LONG_CONTEXT
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.fixture(scope="module")
def long_server(long_model, tmp_path_factory):
    with running_mlx_server(
        long_model,
        log_path=tmp_path_factory.mktemp("long-server") / "server.log",
        extra_args=["--portal-context-length", str(LONG_CONTEXT)],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def front(long_model, django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator:
    """The web tier as shipped (2 gunicorn workers x 32 threads, as the Procfile), with its
    own model cache holding the long-context model (so the gateway knows its context)."""
    directory = tmp_path_factory.mktemp("cancel-front")
    cache = directory / "hub"
    install_model(cache, LONG_REPO, source=long_model)
    with django_db_blocker.unblock():
        env = process_env(HF_HUB_CACHE=str(cache))
    with shipped_portal(directory, env) as portal:
        yield portal


def status(server) -> dict:
    return httpx.get(f"{server.url}/portal/status", timeout=10).json()


def reading_its_prompt(server) -> dict | None:
    """The request the server is reading a prompt for, once it has read a chunk of it."""
    requests = status(server)["requests"]
    return next((r for r in requests if 0 < r["prompt_tokens_done"] < r["prompt_tokens"]), None)


def post_raw(portal: ShippedPortal, key: str, body: dict) -> socket.socket:
    """Send a gateway request and return the connection, without reading the answer."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", portal.front_port), timeout=30)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    return sock


def follow_up_is_answered(portal: ShippedPortal, key: str) -> None:
    client = openai.OpenAI(base_url=f"{portal.url}/v1", api_key=key, max_retries=0, timeout=60)
    answer = client.chat.completions.create(model="long", messages=HI, max_tokens=16)
    assert answer.choices[0].message.content == REPLY


@pytest.fixture
def long_profile(long_server, serve_profile):
    return serve_profile(long_server, "Long", model_id=LONG_REPO, max_tokens=16)


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
def test_a_client_that_leaves_mid_prompt_stops_the_servers_work(
    front, long_server, long_profile, api_key, stream, settings
):
    gone_before = status(long_server)["stopped_for_gone_clients"]
    body = {"model": "long", "messages": [{"role": "user", "content": long_prompt()}],
            "stream": stream}  # fmt: skip
    sock = post_raw(front, api_key, body)
    request = wait_for(lambda: reading_its_prompt(long_server), 120, what="the prompt read")

    # While it reads, its tile says so (the worker's sampler, called here as its thread does).
    settings.SERVER_BUSY_NOTICE_SECONDS = 0.1
    monitor.sample_servers()
    busy = ServerInstance.objects.get(profile=long_profile).busy
    assert busy["requests"] == 1 and busy["oldest"]["prompt_tokens"] == request["prompt_tokens"]
    tile = next(t for t in tiles_for(long_profile.owner) if t.slug == "long")
    assert tile.busy.startswith("Busy for") and "reading its prompt" in tile.busy
    assert f"of {request['prompt_tokens']:,} tokens" in tile.busy

    sock.close()  # the client gives up
    wait_for(
        lambda: status(long_server)["stopped_for_gone_clients"] == gone_before + 1,
        60,
        what="the server to stop the request of the client that left",
    )
    assert status(long_server)["requests"] == []
    follow_up_is_answered(front, api_key)
    wait_for(lambda: UsageRecord.objects.filter(profile_name="Long").count() == 2, 30)
    first = UsageRecord.objects.filter(profile_name="Long").order_by("pk").first()
    assert first.status == UsageRecord.Status.CANCELLED and first.stream is stream
    monitor.sample_servers()
    assert ServerInstance.objects.get(profile=long_profile).busy is None


def test_stop_on_the_chat_page_stops_the_servers_work_on_a_long_prompt(
    front, long_server, long_profile, member, browser
):
    gone_before = status(long_server)["stopped_for_gone_clients"]
    client = Client()
    client.force_login(member)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    context = browser.new_context(base_url=front.url)
    context.add_cookies(
        [{"name": django_settings.SESSION_COOKIE_NAME, "value": cookie, "url": front.url}]
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto("/servers/chat/?profile=long")
        page.fill("#chat-input", long_prompt())
        page.click("#chat-send")
        wait_for(lambda: reading_its_prompt(long_server), 120, what="the prompt read")
        page.click("#chat-stop")
        wait_for(
            lambda: status(long_server)["stopped_for_gone_clients"] == gone_before + 1,
            60,
            what="the server to stop the chat's request",
        )
        assert status(long_server)["requests"] == []
        # The server answers at once: a new chat's first message is answered.
        page.goto("/servers/chat/?profile=long")
        page.fill("#chat-input", "hi")
        page.click("#chat-send")
        page.wait_for_selector(f".msg-assistant:has-text('{REPLY}')")
    finally:
        context.close()
    records = UsageRecord.objects.filter(profile_name="Long", source="chat").order_by("pk")
    wait_for(lambda: records.count() == 2, 30, what="both chat requests recorded")
    assert records.first().status == UsageRecord.Status.CANCELLED


BURST = 60


def test_a_burst_of_streams_is_served_without_a_503(front, long_server, long_profile, api_key):
    """60 streams at once through the front: every one gets its whole reply (mlx_lm.server's
    listen queue of 5 reset 13 of them: 503 server_unreachable)."""
    barrier = threading.Barrier(BURST)
    results: list[object] = []

    def one() -> None:
        client = openai.OpenAI(
            base_url=f"{front.url}/v1", api_key=api_key, max_retries=0, timeout=120
        )
        barrier.wait(30)
        try:
            stream = client.chat.completions.create(
                model="long", messages=HI, max_tokens=16, stream=True
            )
            results.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
        except openai.APIError as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert results == [REPLY] * BURST
