"""Start, probe and stop a real ``mlx_lm.server`` process.

The server runs as the portal runs it, ``python servers/supervision/mlx_entry.py --model <dir>
--host 127.0.0.1 --port <free>`` (mlx_lm.server's own main, admitting new requests every few
ms), in a
process group of its own, with stdout and stderr in a log file. It counts as ready only when a
real one-token chat completion answers (its ``/health`` says "ok" before the model is loaded).
Stopping sends SIGTERM to the whole group, SIGKILL after a grace period, and checks that the
process is gone.

Facts about mlx-lm 0.32 worth knowing (read from ``mlx_lm/server.py``):

* The request's ``model`` field picks the model. ``"default_model"`` (the default when omitted)
  or the exact ``--model`` path mean the loaded model; any other value is loaded on the fly as a
  local path or Hugging Face repo id — a download. :func:`start_mlx_server` sets
  ``HF_HUB_OFFLINE=1`` unless told otherwise, so a wrong ``model`` fails fast instead.
* Thinking output comes back in ``message.reasoning`` / ``delta.reasoning`` (not
  ``reasoning_content``); ``chat_template_kwargs`` in the request body reaches the chat template
  (e.g. ``{"enable_thinking": false}``), as does ``--chat-template-args`` on the command line.
* ``GET /v1/models`` scans the Hugging Face cache (``HF_HUB_CACHE``) and adds the ``--model``
  path; when that cache directory does not exist it answers 200 with an empty body (the scan
  raises ``CacheNotFound`` after the headers went out).
* A model that fails to load does not stop the process: the generation thread dies, ``/health``
  answers 503 and every completion 404 ``{"error": "generation thread died"}``.
  :func:`wait_until_ready` recognises that and fails at once.
* While it reads a long prompt, a streaming answer carries SSE comments (``: keepalive n/m``).
* New requests join the running batch only between time slices of the generation loop, and a
  slice lasts 0.5 s unless the batch empties first; ``servers/supervision/mlx_entry.py`` makes it
  5 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from servers.supervision.command import ENGINE_ENTRY, MLX_ENTRY, VLM_ENTRY

READY_TIMEOUT = 90.0
STOP_GRACE = 10.0


@dataclass
class RunningServer:
    """A live ``mlx_lm.server`` process."""

    url: str
    port: int
    pid: int
    log_path: Path
    model_path: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def chat(self, messages: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
        """POST a non-streaming ``/v1/chat/completions`` request and return the JSON answer."""
        payload = {"messages": messages, **body}
        return _post_json(f"{self.url}/v1/chat/completions", payload, timeout=60.0)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_mlx_server(
    model_path: Path | str,
    *,
    log_path: Path | str,
    port: int | None = None,
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT,
    python: str = sys.executable,
    stock: bool = False,
    vision: bool = False,
) -> RunningServer:
    """Start ``mlx_lm.server`` on ``model_path`` and return once it answers a chat completion.

    ``extra_args`` are appended to the command line (e.g. ``["--max-tokens", "64"]``). ``env``
    entries are added to the current environment (``HF_HUB_OFFLINE`` defaults to ``1``). On a
    time-out or an early exit the process is stopped and ``RuntimeError`` carries the log tail.
    The server runs as the portal runs it (``servers/supervision/mlx_entry.py``), or as mlx_lm
    ships it (``python -m mlx_lm server``) with ``stock``. With ``vision`` it is
    ``mlx_vlm.server`` as the portal runs it (``servers/supervision/vlm_entry.py``): the vision
    engine, for the ``vision`` tiny model.
    """
    model_path = Path(model_path)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    launcher = [VLM_ENTRY] if vision else ["-m", "mlx_lm", "server"] if stock else [MLX_ENTRY]
    command = [
        python, *launcher,
        "--model", str(model_path), "--host", host, "--port", str(port),
        *extra_args,
    ]  # fmt: skip
    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    child_env.update(env or {})
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # its own session and process group
        )
    server = RunningServer(
        url=f"http://{host}:{port}",
        port=port,
        pid=process.pid,
        log_path=log_path,
        model_path=model_path,
        process=process,
    )
    try:
        wait_until_ready(server, timeout=timeout)
    except BaseException:
        stop_mlx_server(server)
        raise
    return server


def wait_until_ready(server: RunningServer, *, timeout: float = READY_TIMEOUT) -> None:
    """Poll until a one-token chat completion succeeds; raise ``RuntimeError`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt yet"
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(
                f"mlx_lm.server exited with code {code} before it was ready.\n{server.log_tail()}"
            )
        try:
            answer = _post_json(
                f"{server.url}/v1/chat/completions",
                {
                    "model": "default_model",  # mlx_vlm.server needs one (vlm_entry.py maps it)
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                },
                timeout=min(30.0, max(1.0, deadline - time.monotonic())),
            )
            if answer.get("choices"):
                return
            last_error = f"unexpected answer {answer!r}"
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            if "generation thread died" in body:
                # The model failed to load: the process lives on, answering /health with 503.
                raise RuntimeError(
                    f"mlx_lm.server could not load {server.model_path} (generation thread died)."
                    f"\n{server.log_tail()}"
                ) from None
            last_error = f"HTTP {error.code}: {body[:200]}"
        except (OSError, ValueError) as error:  # refused, reset, timeout, bad JSON
            last_error = repr(error)
        time.sleep(0.2)
    raise RuntimeError(
        f"mlx_lm.server on port {server.port} not ready after {timeout:.0f}s ({last_error}).\n"
        f"{server.log_tail()}"
    )


def stop_mlx_server(server: RunningServer, *, grace: float = STOP_GRACE) -> int | None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds; return the exit
    code. Raises ``AssertionError`` if the process still exists afterwards."""
    process = server.process
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # The group may hold children (none today, but resource trackers exist in some setups).
    _signal_group(process.pid, signal.SIGKILL)
    assert not _pid_exists(process.pid), f"mlx_lm.server pid {process.pid} survived stop"
    return process.returncode


@contextlib.contextmanager
def running_mlx_server(
    model_path: Path | str, *, log_path: Path | str, **kwargs: Any
) -> Iterator[RunningServer]:
    """``with running_mlx_server(model, log_path=...) as server:`` — start, yield, always stop."""
    server = start_mlx_server(model_path, log_path=log_path, **kwargs)
    try:
        yield server
    finally:
        stop_mlx_server(server)


def is_model_server(cmdline: Sequence[str]) -> bool:
    """Whether a process's command line is a model server: mlx_lm.server as the portal runs it
    (servers/supervision/mlx_entry.py) or as mlx_lm ships it (`python -m mlx_lm server`), or
    mlx_vlm.server as the portal runs it (servers/supervision/vlm_entry.py), or the portal's
    engine server (servers/supervision/engine_entry.py)."""
    return (
        MLX_ENTRY in cmdline
        or VLM_ENTRY in cmdline
        or ENGINE_ENTRY in cmdline
        or ("mlx_lm" in cmdline and "server" in cmdline)
    )


def model_servers(port: int | None = None) -> list[psutil.Process]:
    """Live mlx_lm.server processes (not zombies), those listening on `port` when given (by
    their command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or not is_model_server(cmd):
            continue
        if port is None or str(port) in cmd:
            found.append(proc)
    return found


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the child leads its own group, so its pgid is its pid


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _post_json(url: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
