"""pytest plugin: tiny models, the fake Hub and real mlx_lm.server processes.

Register it from the root ``tests/conftest.py``::

    pytest_plugins = ["tests.support.fixtures"]

Plain pytest only (no Django). See ``tests/README.md`` for what each fixture gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .engine_server import start_engine_server
from .fake_hub import FakeHub
from .mlx_server import READY_TIMEOUT, RunningServer, start_mlx_server, stop_mlx_server
from .tiny_models import tiny_model_cache

__all__ = [
    "HfEnv",
    "embed_server",
    "fake_hub",
    "hf_env",
    "hub",
    "mlx_server",
    "mlx_server_factory",
    "tiny_model",
    "tiny_model_variant",
    "vision_server",
    "whisper_server",
]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The ``text`` tiny model directory (built once per machine, then reused). Read-only."""
    return tiny_model_cache("text")


@pytest.fixture(scope="session")
def tiny_model_variant() -> Callable[[str], Path]:
    """Factory: ``tiny_model_variant("thinking") -> Path`` for any variant. Read-only dirs."""
    return tiny_model_cache


@pytest.fixture(scope="session")
def fake_hub() -> Iterator[FakeHub]:
    """A running :class:`FakeHub` for the whole session: the built-in catalog plus the tiny
    models as ``test-org/tiny-llama``, ``-4bit``, ``tiny-vision``, ``tiny-thinking``,
    ``tiny-tools``, the gated ``test-org/tiny-llama-gated`` and the private
    ``test-org/tiny-llama-private``. Prefer ``hub``, which resets the knobs around each test."""
    server = FakeHub(with_catalog=True)
    server.add_tiny_models()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub(fake_hub: FakeHub) -> Iterator[FakeHub]:
    """The session's :class:`FakeHub` with knobs and request log reset before and after the
    test."""
    fake_hub.reset()
    try:
        yield fake_hub
    finally:
        fake_hub.reset()


@dataclass(frozen=True)
class HfEnv:
    """What :func:`hf_env` pointed ``huggingface_hub`` at."""

    endpoint: str
    home: Path
    cache_dir: Path


@pytest.fixture
def hf_env(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HfEnv:
    """Point ``huggingface_hub`` (this process *and* child processes) at the fake hub, with an
    empty cache and no token, for one test.

    ``huggingface_hub.constants`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE`` and the
    token path once, at import; so besides the environment (for subprocesses) the already
    imported constants are patched too. Code calling ``snapshot_download()`` or ``HfApi()``
    without ``endpoint=`` then reaches the fake hub.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    cache_dir = home / "hub"
    cache_dir.mkdir(parents=True)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return HfEnv(endpoint=hub.url, home=home, cache_dir=cache_dir)


def _server_env(base: Path) -> dict[str, str]:
    # mlx_lm.server's GET /v1/models scans the Hugging Face cache and fails if it is missing.
    cache = base / "hf-cache" / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def mlx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real ``mlx_lm.server`` on the ``text`` tiny model, shared by the tests of a module
    (ready = a real chat completion answered; stopped and checked gone at teardown)."""
    base = tmp_path_factory.mktemp("mlx-server")
    server = start_mlx_server(
        tiny_model_cache("text"), log_path=base / "server.log", env=_server_env(base)
    )
    try:
        yield server
    finally:
        stop_mlx_server(server)


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real ``mlx_vlm.server`` (the vision engine, as the portal runs it) on the ``vision``
    tiny model (a Qwen2-VL), shared by the tests of a module."""
    base = tmp_path_factory.mktemp("vlm-server")
    server = start_mlx_server(
        tiny_model_cache("vision"), log_path=base / "server.log", env=_server_env(base),
        vision=True,
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_mlx_server(server)


@pytest.fixture
def mlx_server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory for extra servers in one test: ``mlx_server_factory("thinking",
    extra_args=["--max-tokens", "32"])`` (a variant name or a model directory). Every server it
    started is stopped at teardown."""
    started: list[RunningServer] = []

    def start(
        model: str | Path = "text",
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = READY_TIMEOUT,
    ) -> RunningServer:
        path = Path(model) if os.sep in str(model) else tiny_model_cache(str(model))
        server = start_mlx_server(
            path,
            log_path=tmp_path / f"mlx-server-{len(started)}.log",
            extra_args=extra_args or [],
            env={**_server_env(tmp_path), **(env or {})},
            timeout=timeout,
        )
        started.append(server)
        return server

    try:
        yield start
    finally:
        errors = []
        for server in started:
            try:
                stop_mlx_server(server)
            except AssertionError as error:
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The portal's embeddings server (servers/supervision/engine_entry.py) on the tiny BERT of
    tiny_engines, shared by a module's tests (ready = an embedding answered)."""
    server = start_engine_server("embed", log_path=tmp_path_factory.mktemp("embed") / "log")
    try:
        yield server
    finally:
        stop_mlx_server(server)


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The portal's speech-to-text server on the tiny Whisper of tiny_engines, shared by a
    module's tests (ready = a transcription answered)."""
    server = start_engine_server("whisper", log_path=tmp_path_factory.mktemp("whisper") / "log")
    try:
        yield server
    finally:
        stop_mlx_server(server)
