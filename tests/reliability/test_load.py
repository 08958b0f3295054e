"""50 simulated members for 60 s (MLX_PORTAL_LOAD_SECONDS to change it) against the web tier as
the Procfile runs it (gunicorn gthread, 2 workers, 32 threads each): pages, the servers tiles
partial the page polls, and chats through `/v1` on the real tiny model. No error may happen;
the figures go to docs/reliability.md, never asserted."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter

import httpx
import pytest
from django.conf import settings
from django.test import Client

from tests.reliability.conftest import kill_group, start_web
from tests.servers.helpers import wait_for
from tests.support.mlx_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

USERS = 50
SECONDS = float(os.environ.get("MLX_PORTAL_LOAD_SECONDS", "60"))
PAGES = ["/servers/", "/servers/chat/", "/servers/usage/", "/models/downloads/", "/models/local/"]
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}


@pytest.fixture
def web(tmp_path):
    """The Procfile's web tier on a free port; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_web(tmp_path, port, workers=2, threads=32)
    try:
        wait_for(
            lambda: answers(url), 60, 0.2, what=f"gunicorn\n{(tmp_path / 'web.log').read_text()}"
        )
        yield url
    finally:
        kill_group(process)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def test_fifty_members_browse_poll_and_chat_without_an_error(
    web, mlx_server, serve_profile, make_user, api_key
):
    serve_profile(mlx_server, "Tiny")
    cookies = []
    for n in range(USERS):
        client = Client()
        client.force_login(make_user(f"load{n}@example.com"))
        cookies.append(client.cookies[settings.SESSION_COOKIE_NAME].value)

    lock = threading.Lock()
    latencies: dict[str, list[float]] = {"page": [], "tiles": [], "chat": []}
    errors: list[str] = []
    statuses: Counter = Counter()
    deadline = time.monotonic() + SECONDS

    def user(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(
            base_url=web,
            cookies={settings.SESSION_COOKIE_NAME: cookies[n]},
            timeout=60,
        ) as http:
            while time.monotonic() < deadline:
                roll = rng.random()
                began = time.monotonic()
                try:
                    if roll < 0.5:
                        kind = "tiles"
                        response = http.get("/servers/", headers={"HX-Request": "true"})
                    elif roll < 0.85:
                        kind = "page"
                        response = http.get(rng.choice(PAGES))
                    else:
                        kind = "chat"
                        response = http.post(
                            "/v1/chat/completions",
                            json=CHAT,
                            headers={"Authorization": f"Bearer {api_key}"},
                        )
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    with lock:
                        errors.append(f"{exc.__class__.__name__}: {exc}")
                    continue
                elapsed = time.monotonic() - began
                with lock:
                    statuses[response.status_code] += 1
                    latencies[kind].append(elapsed)
                    if response.status_code >= 500 or (
                        kind == "chat" and response.status_code != 200
                    ):
                        errors.append(f"{kind} {response.status_code}: {response.text[:200]}")
                    elif kind != "chat" and response.status_code != 200:
                        errors.append(f"{kind} {response.status_code}")
                time.sleep(rng.uniform(0.05, 0.3))  # think time between clicks

    threads = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(USERS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 120)
    duration = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a simulated user never finished"

    total = sum(statuses.values())
    lines = [f"load: {USERS} users, {SECONDS:g} s, {total} requests in {duration:.1f} s, "
             f"statuses {dict(statuses)}, errors {len(errors)}"]  # fmt: skip
    for kind, values in latencies.items():
        if values:
            values.sort()
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            lines.append(
                f"  {kind}: {len(values)} requests, p50 {statistics.median(values) * 1000:.0f} ms,"
                f" p99 {p99 * 1000:.0f} ms"
            )
    print("[reliability] " + "\n".join(lines))
    assert errors == [], errors[:10]
    assert 0 < total < USERS * SECONDS * 20  # bounded: think time caps each user's pace
    assert latencies["chat"], "no chat went through"
