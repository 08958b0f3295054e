"""Asking a model server about itself, for supervision: is it ready (a real one-token chat
completion: the server loads its model on the first request, so an open port or `/health`
saying "ok" prove nothing), alive (`/health`), or busy (its `GET /portal/status`,
servers/supervision/mlx_entry.py)? Client requests reach the servers through the gateway's
transport (servers/gateway/transport.py), not here.
"""

from __future__ import annotations

import base64
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from servers.supervision.mlx_entry import STATUS_PATH

# One client (a pool) per process: a bare httpx.post() builds a client, and its TLS context,
# each time (~20 ms of CPU, taken from the model server that is starting on the same cores).
_client = httpx.Client(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=64))


# The access-log line a server writes for each of the portal's own checks (`/health`, every
# few seconds, and `GET /portal/status`): a log view hides them, or they bury what matters.
_PROBE_LINE = re.compile(
    r'"GET (?:/health|' + re.escape(STATUS_PATH) + r')(?:\?\S*)? HTTP/[\d.]+" \d{3}'
)


def is_probe_line(line: str) -> bool:
    """Whether a server's log line is only the record of one of the portal's probes."""
    return _PROBE_LINE.search(line) is not None


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""


def probe_ready(base_url: str, timeout: float = 30.0) -> ProbeResult:
    """Ask the server for a one-token chat completion; ok when it answers with a choice."""
    body = {
        # Each server's own model: mlx_lm.server's name for it, and what vlm_entry.py maps to
        # its model (mlx_vlm.server needs a `model`).
        "model": "default_model",
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": False,
    }
    try:
        response = _client.post(f"{base_url}/v1/chat/completions", json=body, timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"cannot connect ({exc.__class__.__name__})")
    if response.status_code != 200:
        return ProbeResult(False, f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        choices = response.json().get("choices")
    except ValueError:
        return ProbeResult(False, "the answer is not JSON")
    if not choices:
        return ProbeResult(False, "the answer has no choices")
    return ProbeResult(True, "answered a one-token chat completion")


PORT_POLL_INTERVAL = 0.025  # seconds between connection attempts to a starting server


def wait_for_port(
    base_url: str,
    timeout: float,
    *,
    interval: float = PORT_POLL_INTERVAL,
    keep_waiting: Callable[[], bool] | None = None,
) -> bool:
    """Try to connect to the server's port every `interval` s until it accepts (True), for
    at most `timeout` s, or until `keep_waiting()` (asked after each refusal) says no (False).

    A starting mlx_lm.server opens its port only once its model is loaded. A refused
    connection costs microseconds, so trying often notices that moment at once without
    competing for the CPU with the server; the readiness probe itself (a real completion)
    is sent only when the port accepts.
    """
    url = httpx.URL(base_url)
    address = (url.host, url.port or 80)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=max(interval, 0.5)):
                return True
        except OSError:
            pass
        if keep_waiting is not None and not keep_waiting():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))


def check_alive(base_url: str, timeout: float = 3.0) -> ProbeResult:
    """The cheap liveness check: `GET /health` answers 200 (the HTTP loop and generator live)."""
    try:
        response = _client.get(f"{base_url}/health", timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, f"/health gave no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"/health: cannot connect ({exc.__class__.__name__})")
    if response.status_code != 200:
        return ProbeResult(False, f"/health answered HTTP {response.status_code}")
    return ProbeResult(True, "ok")


def server_busy(port: int) -> dict[str, Any] | None:
    """What the model server on this host's `port` is working on, from its
    `GET /portal/status` (servers/supervision/mlx_entry.py): {"requests": n, "oldest": its
    oldest request}, or None when it works on nothing (or does not say)."""
    try:
        answer = _client.get(f"http://127.0.0.1:{port}{STATUS_PATH}", timeout=1.0)
        requests = answer.json().get("requests") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not isinstance(requests, list) or not requests:
        return None
    fields = ("age_seconds", "prompt_tokens_done", "prompt_tokens", "generated_tokens")
    number = lambda v: isinstance(v, int | float) and math.isfinite(v)  # noqa: E731
    oldest = max(
        (r for r in requests if isinstance(r, dict)),
        key=lambda r: r["age_seconds"] if number(r.get("age_seconds")) else 0,
        default={},
    )
    return {
        "requests": len(requests),
        "oldest": {
            **{f: oldest[f] for f in fields if number(oldest.get(f))},
            "stream": oldest.get("stream") is True,
        },
    }


# --- readiness of the other engines: a real request of their kind --------------------------------

# Half a second of silence: what the speech-to-text probe transcribes.
_SILENCE_WAV = (
    b"RIFF" + (36 + 16_000).to_bytes(4, "little") + b"WAVEfmt "
    + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    + (16_000).to_bytes(4, "little") + (32_000).to_bytes(4, "little")
    + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    + b"data" + (16_000).to_bytes(4, "little") + bytes(16_000)
)  # fmt: skip


def _post(base_url: str, path: str, body: dict, timeout: float) -> tuple[Any, ProbeResult | None]:
    try:
        response = _client.post(f"{base_url}{path}", json=body, timeout=timeout)
    except httpx.TimeoutException:
        return None, ProbeResult(False, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return None, ProbeResult(False, f"cannot connect ({exc.__class__.__name__})")
    if response.status_code != 200:
        return None, ProbeResult(False, f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        return response.json(), None
    except ValueError:
        return None, ProbeResult(False, "the answer is not JSON")


def probe_embeddings_ready(base_url: str, timeout: float = 30.0) -> ProbeResult:
    """Ask an embeddings server for the vector of one word; ok when it gives one."""
    data, failed = _post(base_url, "/v1/embeddings", {"input": "ping"}, timeout)
    if failed is not None:
        return failed
    rows = data.get("data") if isinstance(data, dict) else None
    if not rows or not isinstance(rows[0], dict) or not rows[0].get("embedding"):
        return ProbeResult(False, "the answer has no embedding")
    return ProbeResult(True, "answered an embeddings request")


def probe_transcription_ready(base_url: str, timeout: float = 30.0) -> ProbeResult:
    """Ask a speech-to-text server to transcribe half a second of silence; ok when it answers
    with a text (empty or not)."""
    body = {"file": base64.b64encode(_SILENCE_WAV).decode(), "response_format": "json"}
    data, failed = _post(base_url, "/v1/audio/transcriptions", body, timeout)
    if failed is not None:
        return failed
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return ProbeResult(False, "the answer has no text")
    return ProbeResult(True, "answered a transcription")


_READY_PROBES: dict[str, Callable[[str, float], ProbeResult]] = {
    "embeddings": probe_embeddings_ready,
    "speech-to-text": probe_transcription_ready,
}


def probe_ready_for(engine: str, base_url: str, timeout: float = 30.0) -> ProbeResult:
    """The readiness probe of a profile's engine: a real request of its kind (a one-token chat
    completion for the text engine)."""
    return _READY_PROBES.get(engine, probe_ready)(base_url, timeout)
