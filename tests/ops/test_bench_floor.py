"""The gateway bench's floor and its CPU meter: the floor relays a real model server's stream
whole (threads and event loop alike), and the meter reads a process's CPU finer than a clock
tick."""

import asyncio
import concurrent.futures
import io
import json
import subprocess
import sys

import psutil
import pytest

from bench import floor_relay
from bench.gateway_stream import CpuMeter

BODY = json.dumps({
    "model": "default_model", "max_tokens": 12, "stream": True,
    "messages": [{"role": "user", "content": "Say hello."}],
}).encode()  # fmt: skip


def _events(raw: bytes) -> list[str]:
    return [event for event in raw.decode().split("\n\n") if event.strip()]


def _tokens(events: list[str]) -> str:
    text = ""
    for event in events[:-1]:
        if not event.startswith("data: "):
            continue  # a comment (the server's keep-alive)
        chunk = json.loads(event.removeprefix("data: "))
        for choice in chunk["choices"]:
            text += choice.get("delta", {}).get("content") or ""
    return text


def test_the_threaded_floor_passes_the_whole_stream_on(mlx_server, monkeypatch):
    monkeypatch.setenv("BENCH_FLOOR_UPSTREAM", f"127.0.0.1:{mlx_server.port}")
    status = []
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions",
        "CONTENT_LENGTH": str(len(BODY)), "wsgi.input": io.BytesIO(BODY),
    }  # fmt: skip
    body = floor_relay.application(environ, lambda line, headers: status.append(line))
    try:
        raw = b"".join(body)
    finally:
        body.close()
    events = _events(raw)
    assert status == ["200 OK"]
    assert events[-1] == "data: [DONE]"
    assert _tokens(events)  # the reply's text came through


def test_the_event_loop_floor_passes_the_same_stream_on(mlx_server, monkeypatch):
    monkeypatch.setenv("BENCH_FLOOR_UPSTREAM", f"127.0.0.1:{mlx_server.port}")
    sent: list[dict] = []

    async def call() -> None:
        messages = [{"type": "http.request", "body": BODY, "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST"}
        await floor_relay.asgi(scope, receive, send)

    # On a thread of its own: a browser test before this one in the same process leaves
    # Playwright's event loop running on this thread, where asyncio.run() refuses to start.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, call()).result(timeout=60)
    events = _events(b"".join(message.get("body", b"") for message in sent[1:]))
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert events[-1] == "data: [DONE]"
    assert _tokens(events)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="a process's CPU clock by pid is Linux's (clock_getcpuclockid); elsewhere the meter "
    "reads psutil's ticks",
)
def test_the_meter_reads_a_process_cpu_finer_than_a_clock_tick():
    # The child burns ~55 ms of CPU, says how much its own clock counted, then waits; the
    # meter reads it from outside. A reading in clock ticks (10 ms) would be off by up to one.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "end = time.process_time() + 0.055\n"
         "while time.process_time() < end: pass\n"
         "print(time.process_time(), flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        own = float(child.stdout.readline())
        measured = CpuMeter._cpu([psutil.Process(child.pid)])
    finally:
        child.communicate("", timeout=30)
    assert abs(measured - own) < 0.001, (measured, own)
