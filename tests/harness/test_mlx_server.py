"""A real mlx_lm.server serves the tiny models: chat, streaming, thinking, start and stop."""

import json
import os
import socket
from pathlib import Path

import httpx
import pytest

from tests.support.mlx_server import RunningServer, start_mlx_server, stop_mlx_server
from tests.support.tiny_models import REPLY, THINKING_REPLY, THOUGHT

CHAT = [{"role": "user", "content": "Hello, who are you?"}]


def _stream(server: RunningServer, **body: object) -> tuple[list[dict], list[str]]:
    """POST a streaming chat completion; return (JSON chunks, raw SSE lines)."""
    chunks, lines = [], []
    payload = {"messages": CHAT, "stream": True, **body}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=payload, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            lines.append(line)
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks, lines


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_chat_completion_returns_the_tiny_reply(mlx_server: RunningServer) -> None:
    answer = mlx_server.chat(CHAT)
    choice = answer["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": REPLY}
    assert choice["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] >= 5
    assert answer["usage"]["prompt_tokens"] > 0
    assert answer["object"] == "chat.completion"


def test_streaming_chat_arrives_token_by_token(mlx_server: RunningServer) -> None:
    chunks, lines = _stream(mlx_server, stream_options={"include_usage": True})
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(pieces) == REPLY
    assert len([p for p in pieces if p]) >= 5  # several content chunks, not one blob
    assert lines[-1] == "data: [DONE]"
    assert chunks[-1]["usage"]["completion_tokens"] >= 5
    # mlx_lm.server sends SSE comments (": keepalive n/m") while it reads the prompt.
    assert all(line.startswith(("data: ", ":")) for line in lines)


def test_max_tokens_cuts_the_reply(mlx_server: RunningServer) -> None:
    answer = mlx_server.chat(CHAT, max_tokens=2)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert REPLY.startswith(answer["choices"][0]["message"]["content"])


def test_openai_client_talks_to_the_server(mlx_server: RunningServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{mlx_server.url}/v1", api_key="unused")
    reply = client.chat.completions.create(model="default_model", messages=CHAT)
    assert reply.choices[0].message.content == REPLY
    stream = client.chat.completions.create(model="default_model", messages=CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == REPLY


def test_models_endpoint_lists_the_model_path(mlx_server: RunningServer) -> None:
    data = httpx.get(f"{mlx_server.url}/v1/models", timeout=10).json()["data"]
    assert str(mlx_server.model_path.resolve()) in [m["id"] for m in data]


def test_thinking_model_splits_reasoning_and_honours_enable_thinking(
    mlx_server_factory,
) -> None:
    server = mlx_server_factory("thinking")
    message = server.chat(CHAT)["choices"][0]["message"]
    assert message["reasoning"] == THOUGHT
    assert message["content"] == THINKING_REPLY

    plain = server.chat(CHAT, chat_template_kwargs={"enable_thinking": False})
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": THINKING_REPLY}

    chunks, _ = _stream(server)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning", "") for d in deltas) == THOUGHT
    assert "".join(d.get("content", "") for d in deltas) == THINKING_REPLY


def test_quantized_model_is_served(mlx_server_factory, tiny_model_variant) -> None:
    server = mlx_server_factory("quantized", extra_args=["--max-tokens", "32"])
    assert server.chat(CHAT)["choices"][0]["message"]["content"] == REPLY
    assert server.model_path == tiny_model_variant("quantized")


def test_stop_terminates_the_process_group(tiny_model: Path, tmp_path: Path) -> None:
    server = start_mlx_server(tiny_model, log_path=tmp_path / "server.log")
    assert _port_open(server.port)
    assert os.getpgid(server.pid) == server.pid  # its own process group
    code = stop_mlx_server(server)
    assert code == -15  # SIGTERM was enough
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert not _port_open(server.port)
    assert "--model" in server.log_tail()


def test_a_broken_model_fails_fast_with_the_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(RuntimeError, match="could not load") as failure:
        start_mlx_server(broken, log_path=tmp_path / "server.log", timeout=60)
    assert "Traceback" in str(failure.value)  # the log tail explains why


def test_a_server_that_exits_is_reported_with_its_log(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with code 2") as failure:
        start_mlx_server(tiny_model, log_path=tmp_path / "server.log", extra_args=["--bogus"])
    assert "unrecognized arguments: --bogus" in str(failure.value)
