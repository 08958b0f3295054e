"""Helpers for the download tests: a fake-Hub repo with known bytes, cache inspection, waits."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from models_catalog.models import Download


@dataclass
class HubSetup:
    hub: object
    cache: Path


@pytest.fixture
def hf(hub, settings, tmp_path) -> HubSetup:
    """The portal's settings pointed at the fake Hub, with an empty cache and no token.
    Worker subprocesses started afterwards inherit both (tests/support/workers.py)."""
    cache = tmp_path / "hub"
    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_CACHE = cache
    settings.HF_TOKEN = ""
    return HubSetup(hub=hub, cache=cache)


@pytest.fixture
def purged_queues():
    """Empty this host's and the default Celery queues (messages left by earlier tests)."""
    from django.conf import settings

    from config.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in ("default", f"host.{settings.HOST_NAME}"):
            channel.queue_purge(queue)
    return True


def wait_until(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "", every: float = 0.05
) -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def add_random_repo(hub, repo_id: str, sizes: dict[str, int], seed: int = 7) -> dict[str, bytes]:
    """Serve a repo whose files are `{name: size}` random bytes (plus a config.json)."""
    rng = random.Random(seed)
    files = {"config.json": b'{"model_type": "llama", "hidden_size": 64}', "NOTICE": b""}
    files.update({name: rng.randbytes(size) for name, size in sizes.items()})
    hub.add_files(repo_id, files)
    return files


def source_digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def dir_digests(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }


def partial_files(cache: Path, repo_id: str) -> list[Path]:
    blobs = cache / ("models--" + repo_id.replace("/", "--")) / "blobs"
    return sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []


def state_of(download: Download) -> str:
    download.refresh_from_db()
    return download.state
