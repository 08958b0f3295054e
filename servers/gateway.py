"""The only code that speaks HTTP to `mlx_lm.server`.

For now: the readiness probe (a real one-token chat completion: the server loads its model on
the first request, so an open port or `/health` saying "ok" prove nothing) and the liveness
check used by the reconcile loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""


def probe_ready(base_url: str, timeout: float = 30.0) -> ProbeResult:
    """Ask the server for a one-token chat completion; ok when it answers with a choice."""
    body = {
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": False,
    }
    try:
        response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=timeout)
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


def check_alive(base_url: str, timeout: float = 3.0) -> ProbeResult:
    """The cheap liveness check: `GET /health` answers 200 (the HTTP loop and generator live)."""
    try:
        response = httpx.get(f"{base_url}/health", timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, f"/health gave no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"/health: cannot connect ({exc.__class__.__name__})")
    if response.status_code != 200:
        return ProbeResult(False, f"/health answered HTTP {response.status_code}")
    return ProbeResult(True, "ok")
