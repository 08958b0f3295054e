"""The portal's mlx_lm.server admits a new request into the running batch at once.

Stock mlx_lm.server (0.32) takes new requests off its queue only between 0.5-s slices of its
generation loop, or when the batch empties: a request that arrives while another streams waits
for it to finish. `servers/supervision/mlx_entry.py` makes the slice 5 ms. Both are checked against
a real server with the same measure: the shortest wait of short requests sent back to back
while a long stream runs, which the stock server cannot bring under most of its slice. The
stock case pins mlx_lm's behaviour: when an upgrade admits requests promptly on its own, it
fails, and the entry script can go.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from servers.supervision import mlx_entry
from tests.support.mlx_server import running_mlx_server
from tests.support.tiny_models import END_OF_TEXT, EOS

pytestmark = pytest.mark.timeout(180)


def _no_end_bias(model_dir) -> dict[str, int]:
    """logit_bias that keeps the tiny model from ending its reply (it runs to max_tokens)."""
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["added_tokens"]
    ids = {token["content"]: token["id"] for token in vocab}
    return {str(ids[EOS]): -100, str(ids[END_OF_TEXT]): -100}


def _stream(url: str, max_tokens: int, bias: dict, on_token) -> None:
    body = {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": max_tokens,
        "logit_bias": bias,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: {") and '"content": ""' not in line:
                on_token()


def _fastest_admission(url: str, bias: dict, *, enough: float, tries: int = 16) -> float:
    """The shortest wait, in seconds, of short requests sent back to back while one long stream
    runs, from a short request's send to its first token; the tries stop once one waited less
    than `enough`.

    The stock server admits new requests only where a 0.5 s slice of its loop ends, so from
    the second short request on (each sent just after the previous one was let in) every one
    waits most of a slice, however idle or loaded the machine: load only makes waits longer.
    The entry's 5 ms slice lets one in as soon as its request is read, so on a machine busy
    with other tests some of the tries, if not all, come in well under the stock floor."""
    stop = threading.Event()
    streaming = threading.Event()
    failure: list[BaseException] = []

    class Enough(Exception):
        pass

    def on_token() -> None:
        streaming.set()
        if stop.is_set():
            raise Enough  # hang up: the server stops generating for a client that left

    def long_stream() -> None:
        try:
            _stream(url, 20_000, bias, on_token)
        except Enough:
            pass
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            failure.append(exc)

    runner = threading.Thread(target=long_stream)
    runner.start()
    waits: list[float] = []
    try:
        assert streaming.wait(30), f"the long stream did not start: {failure}"
        for _ in range(tries):
            sent = time.monotonic()
            first: list[float] = []

            def on_first(first=first, sent=sent) -> None:
                if not first:
                    first.append(time.monotonic() - sent)

            _stream(url, 2, bias, on_first)
            assert first, "the short request got no token"
            waits.append(first[0])
            assert runner.is_alive(), f"the long stream ended early: {failure}"
            if len(waits) > 1 and min(waits[1:]) < enough:
                break
    finally:
        stop.set()
        runner.join(timeout=60)
    # The first short request comes at a random point of the stock server's slice.
    return min(waits[1:])


@pytest.mark.parametrize("stock", [False, True], ids=["portal-entry", "stock-mlx-lm"])
def test_a_new_request_joins_the_running_batch(tmp_path, tiny_model, stock):
    bias = _no_end_bias(tiny_model)
    with running_mlx_server(tiny_model, log_path=tmp_path / "server.log", stock=stock) as server:
        log = server.log_tail(200)
        assert ("join the running batch every 5 ms" in log) is not stock
        fastest = _fastest_admission(server.url, bias, enough=0.3)
    # The stock server's floor is most of its 0.5 s slice (0.42-0.58 s idle, 0.37 s with four
    # busy loops beside the other tests on two cores); the entry's fastest is 0.04-0.08 s (0.25 s
    # in the worst of those loaded runs). Without the entry's change its case meets the stock
    # floor and fails.
    assert (fastest < 0.3) is not stock, f"the fastest admission took {fastest:.3f} s"


def _listen_queue(port: int) -> int:
    """The size of the listen queue of the socket listening on `port` (Linux: the Send-Q
    that `ss` shows for a listening socket)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return int(out.split()[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) shows listen queues")
@pytest.mark.parametrize("stock", [False, True], ids=["portal-entry", "stock-mlx-lm"])
def test_the_server_listens_with_a_queue_deep_enough_for_a_burst(tmp_path, tiny_model, stock):
    """mlx_lm.server listens with socketserver's queue of 5: a burst of clients overflowed it
    (60 streams through the portal: 13 answered 503; here, 57 of 200 clients at once timed
    out on the stock server and none on the entry's)."""
    with running_mlx_server(tiny_model, log_path=tmp_path / "server.log", stock=stock) as server:
        queue = _listen_queue(server.port)
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert queue == (5 if stock else min(mlx_entry.LISTEN_BACKLOG, somaxconn))


CLIENTS = 200


def test_two_hundred_clients_at_once_are_all_answered(tmp_path, tiny_model):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16,
                       "stream": True}).encode()  # fmt: skip
    request = (
        b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    barrier = threading.Barrier(CLIENTS)
    answers: list[bytes | str] = []

    def client(port: int) -> None:
        barrier.wait(30)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(request)
                answer = b""
                while data := sock.recv(65536):
                    answer += data
            answers.append(answer)
        except OSError as exc:
            answers.append(repr(exc))

    with running_mlx_server(tiny_model, log_path=tmp_path / "server.log") as server:
        threads = [threading.Thread(target=client, args=(server.port,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    failed = [a for a in answers if not (isinstance(a, bytes) and a.endswith(b"data: [DONE]\n\n"))]
    assert len(answers) == CLIENTS and failed == []
