"""Fixtures of the catalog's download tests: the portal pointed at the fake Hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


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


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Django 6's PBKDF2 takes ~1.5 s per user on this machine; these tests never log in by
    password."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
