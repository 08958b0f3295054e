"""Fixtures for the servers tests: models laid out in a temporary Hugging Face cache."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.servers.helpers import TINY_REPO, install_model
from tests.support.front import _free_port, start_gunicorn, wait_listening
from tests.support.mlx_server import RunningServer, start_mlx_server, stop_mlx_server
from tests.support.tiny_models import tiny_model_cache
from tests.support.workers import process_env


@pytest.fixture
def hf_cache(settings, tmp_path):
    """An empty HF cache for this test (settings.HF_HUB_CACHE points at it)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    settings.HF_HUB_CACHE = cache
    return cache


@pytest.fixture
def local_models(hf_cache):
    """Two placeholder models on disk: enough for forms, not for serving."""
    install_model(hf_cache, "mlx-community/Tiny-A-4bit")
    install_model(hf_cache, "acme/tiny-b")
    return ["mlx-community/Tiny-A-4bit", "acme/tiny-b"]


@pytest.fixture
def adapter_dir(settings, tmp_path):
    root = tmp_path / "adapters"
    (root / "my-lora").mkdir(parents=True)
    (root / "my-lora" / "adapter_config.json").write_text("{}")
    settings.SERVER_ADAPTER_DIRS = [root.resolve()]
    return root


@pytest.fixture
def make_profile(db, member):
    """`make_profile(name, model_id=…, port=…, owner=…, **fields)` saves a ServerProfile."""
    from django.utils.text import slugify

    from models_catalog.models import Host
    from servers.models import ServerProfile
    from servers.supervision.ports import suggest_port

    def make(name: str = "Tiny", model_id: str = "mlx-community/Tiny-A-4bit", **fields):
        taken = set(ServerProfile.objects.values_list("port", flat=True))
        fields.setdefault("port", suggest_port(taken))
        fields.setdefault("owner", member)
        fields.setdefault("host", Host.objects.this_machine())
        return ServerProfile.objects.create(
            name=name, slug=slugify(name), model_id=model_id, **fields
        )

    return make


@pytest.fixture
def served_model(hf_cache, tiny_model):
    """The real tiny text model (built once per machine) in this test's HF cache."""
    install_model(hf_cache, TINY_REPO, source=tiny_model)
    return TINY_REPO


@pytest.fixture
def clean_queues(settings):
    """Empty the Celery queues of this test's Redis database before and after the test, so a
    start request no worker consumed never reaches a later test's worker."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)

    def purge():
        keys = [*client.keys("host.*"), *client.keys("default*"), *client.keys("unacked*")]
        if keys:
            client.delete(*keys)

    purge()
    yield
    purge()


@pytest.fixture
def server_reaper():
    """Kills, at the end of the test, any server process group the test left behind."""
    from servers.supervision import supervisor

    tracked: list[tuple[int, float]] = []
    yield tracked.append
    for pid, create_time in tracked:
        supervisor.kill(pid, create_time)


# --- gateway, chat and usage -------------------------------------------------------------------


@pytest.fixture
def serve_profile(db, member):
    """`serve_profile(server, name, **fields)`: a profile whose instance is the real, already
    running `server` (a `RunningServer` of the harness) — what the supervisor records once it
    has started one. Tests share one real server per module this way."""
    from tests.support.profiles import running_profile

    def make(server, name: str = "Tiny", **fields):
        return running_profile(server, fields.pop("owner", member), name, **fields)

    return make


@pytest.fixture
def api_key(member):
    """A live API key of `member`: its secret."""
    from accounts.api_keys import create_api_key

    return create_api_key(member, "tests").secret


def variant_server(variant: str):
    """A module-scoped fixture: a real model server (the portal's entry point) on the tiny
    model `variant` (tests/support/tiny_models.py), shared by the tests of a module."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory) -> Iterator[RunningServer]:
        base = tmp_path_factory.mktemp(f"{variant}-server")
        cache = base / "hf-cache" / "hub"
        cache.mkdir(parents=True)
        running = start_mlx_server(
            tiny_model_cache(variant),
            log_path=base / "server.log",
            env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
        )
        try:
            yield running
        finally:
            stop_mlx_server(running)

    server.__doc__ = f"A real model server on the `{variant}` tiny model, shared by a module."
    return server


thinking_server = variant_server("thinking")
tools_server = variant_server("tools")


# --- the web tier as its own processes ----------------------------------------------------------


class Portal:
    """gunicorn as the Procfile starts it (its own processes: the counts are not this test
    process's), on a free port; `restart()` stops it and starts it again."""

    def __init__(self, directory, **procfile: str):
        self.directory, self.procfile = directory, procfile
        self.env = process_env()
        self.port = _free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Portal:
        self.process = start_gunicorn(self.directory, self.port, self.env, **self.procfile)
        wait_listening(self.process, "127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def portals(tmp_path) -> Iterator:
    """`portals(name, **procfile)` starts gunicorn as the Procfile does (e.g. WEB_WORKERS=\"1\"),
    stopped at the end of the test."""
    started: list[Portal] = []

    def start(name: str = "web", **procfile: str) -> Portal:
        directory = tmp_path / name
        directory.mkdir()
        started.append(Portal(directory, **procfile).start())
        return started[-1]

    yield start
    for portal in started:
        portal.stop()
