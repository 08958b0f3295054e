"""Fixtures for the hosts tests: a second host, its Redis queue, fast heartbeats."""

from __future__ import annotations

import json

import pytest

from tests.models_catalog.download_helpers import hf  # noqa: F401


class Queues:
    """The Celery queues in this test's Redis database, read without consuming them."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def purge(self) -> None:
        keys = [*self.client.keys("host.*"), *self.client.keys("default*")]
        keys += self.client.keys("unacked*")
        if keys:
            self.client.delete(*keys)

    def tasks(self, queue: str) -> list[tuple[str, list]]:
        """`(task name, args)` of each message waiting in `queue`, oldest first."""
        messages = [json.loads(raw) for raw in reversed(self.client.lrange(queue, 0, -1))]
        return [(m["headers"]["task"], json.loads(_body(m))[0]) for m in messages]


def _body(message: dict) -> str:
    import base64

    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    return body


@pytest.fixture
def queues(settings):
    queues = Queues(settings.REDIS_URL)
    queues.purge()
    yield queues
    queues.purge()
