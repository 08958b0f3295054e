"""Start, probe and stop the portal's own server for the embeddings and speech-to-text engines
(``servers/supervision/engine_entry.py``) on a tiny model of ``tiny_engines``, as the portal runs
it: in a process group of its own, stdout and stderr in a log file. It counts as ready only when
a real request of its kind is answered (an embedding, a transcription). Stopped as
``mlx_server.stop_mlx_server`` stops a server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from servers.supervision.command import ENGINE_ENTRY as ENTRY

from .mlx_server import READY_TIMEOUT, RunningServer, free_port, stop_mlx_server
from .tiny_engines import tiny_engine_cache, wav_bytes

#: The engine of each tiny model of tiny_engines.
ENGINE_OF = {"embed": "embeddings", "whisper": "speech-to-text"}


def start_engine_server(
    name: str, *, log_path: Path | str, timeout: float = READY_TIMEOUT
) -> RunningServer:
    """Start the engine server on the tiny model `name` ("embed" or "whisper") and return once
    it answers a real request; RuntimeError with the log's tail otherwise."""
    model = tiny_engine_cache(name)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        sys.executable, ENTRY, "--engine", ENGINE_OF[name], "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = RunningServer(
        url=f"http://127.0.0.1:{port}", port=port, pid=process.pid, log_path=log_path,
        model_path=model, process=process,
    )  # fmt: skip
    try:
        _wait_until_ready(server, name, timeout)
    except BaseException:
        stop_mlx_server(server)
        raise
    return server


def request(url: str, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """One real request of the engine's kind, straight to the server at `url`: its JSON
    answer."""
    if name == "embed":
        path, body = "/v1/embeddings", {"input": "ping"}
    else:
        path = "/v1/audio/transcriptions"
        body = {"file": base64.b64encode(wav_bytes(0.5)).decode(), "response_format": "json"}
    call = urllib.request.Request(
        url + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(call, timeout=timeout) as answer:
        return json.loads(answer.read())


def _wait_until_ready(server: RunningServer, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt yet"
    while time.monotonic() < deadline:
        if (code := server.process.poll()) is not None:
            raise RuntimeError(f"engine server exited with {code}.\n{server.log_tail()}")
        try:
            answer = request(server.url, name, timeout=max(1.0, deadline - time.monotonic()))
            if answer.get("data") or isinstance(answer.get("text"), str):
                return
            last = f"unexpected answer {answer!r}"
        except (OSError, ValueError, urllib.error.HTTPError) as error:
            last = repr(error)
        time.sleep(0.2)
    raise RuntimeError(
        f"engine server not ready after {timeout:.0f}s ({last}).\n{server.log_tail()}"
    )
