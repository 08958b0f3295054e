"""The portal as shipped for a host: gunicorn (the Procfile's web line, 1 x 4 threads here)
behind nginx running deploy/nginx/mlx-portal.conf (tests/support/front.py).

Slow clients — connections trickling a login POST's body, or their headers — hold a gunicorn
thread each for as long as they like when they reach it; more of them than threads and nothing
else is served (checked by hand against gunicorn alone: /healthz timed out). Behind the front
they never reach gunicorn: /healthz keeps answering, and the front's time-outs close them.
The front must also keep who the client is: the portal reads the client's address through it
(config/client_address.py) for the wrong-API-key counter and /metrics."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers.helpers import wait_for
from tests.support.front import lan_address, shipped_portal
from tests.support.workers import process_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THREADS = 4  # gunicorn's threads: fewer than the slow clients below
FAILURES_PER_MINUTE = 3


@dataclass
class Portal:
    port: int
    lan: str | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def portal(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Portal]:
    """gunicorn on 127.0.0.1 behind the front; the front also listens on this machine's LAN
    address when it has one, to be reached from "elsewhere"."""
    lan = lan_address()
    hosts = ",".join(filter(None, ["127.0.0.1", "localhost", lan]))
    with django_db_blocker.unblock():
        env = process_env(
            DJANGO_ALLOWED_HOSTS=hosts,
            MLX_PORTAL_API_KEY_FAILURES_PER_MINUTE=str(FAILURES_PER_MINUTE),
        )
    directory = tmp_path_factory.mktemp("front")
    with shipped_portal(
        directory, env, lan=lan, WEB_WORKERS="1", WEB_THREADS=str(THREADS)
    ) as shipped:
        yield Portal(port=shipped.front_port, lan=lan)


# --- slow clients ----------------------------------------------------------------------------


class SlowClient:
    """A connection that sends the first bytes of a request and then one byte per `trickle()`."""

    def __init__(self, port: int, request: bytes, sent_at_once: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(request[:sent_at_once])
        self.rest = request[sent_at_once:]
        self.closed = False

    @classmethod
    def body(cls, port: int) -> SlowClient:
        """A login POST whose headers arrive whole and whose body never does."""
        body = b"login=someone%40example.com&password=" + b"x" * 4000
        head = (
            f"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return cls(port, head + body, len(head) + 10)

    @classmethod
    def headers(cls, port: int) -> SlowClient:
        """A login POST whose headers arrive a byte at a time."""
        head = (
            f"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "User-Agent: slowloris\r\nAccept: text/html\r\n" + "X-Padding: abcdef\r\n" * 20
        ).encode()
        return cls(port, head, 20)

    def trickle(self) -> None:
        if self.rest and not self.closed:
            with contextlib.suppress(OSError):
                self.sock.send(self.rest[:1])
                self.rest = self.rest[1:]

    def is_closed(self) -> bool:
        """Whether the other side has closed the connection (after any answer it sent)."""
        while not self.closed and select.select([self.sock], [], [], 0)[0]:
            try:
                self.closed = self.sock.recv(65536) == b""
            except OSError:
                self.closed = True
        return self.closed

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def trickling(clients: list[SlowClient], every: float = 0.5) -> Iterator[None]:
    """Each client sends a byte every `every` seconds until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            for client in clients:
                client.trickle()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_slow_clients_do_not_starve_the_portal_behind_the_front(portal, celery_worker):
    bodies = [SlowClient.body(portal.port) for _ in range(2 * THREADS)]
    clients = bodies + [SlowClient.headers(portal.port) for _ in range(THREADS)]
    try:
        with trickling(clients):
            # More slow connections than gunicorn has threads hold before and after each
            # answer (the header tricklers only at first: the front gives a header 10 s).
            for holding in (clients, bodies, bodies):
                assert not any(c.is_closed() for c in holding)
                health = httpx.get(f"{portal.url}/healthz", timeout=5)
                assert health.status_code == 200, health.text
                assert not any(c.is_closed() for c in holding)
        # They stop sending: the front's time-outs (10 s for a header, 10 s between body
        # reads) close every one of them.
        wait_for(lambda: all(c.is_closed() for c in clients), timeout=30, every=0.5,
                 what="the front to close the slow connections")  # fmt: skip
    finally:
        for client in clients:
            client.close()
    assert httpx.get(f"{portal.url}/healthz", timeout=5).status_code == 200


# --- who the client is -------------------------------------------------------------------------


def _wrong_key(n: int) -> dict[str, str]:
    return {"Authorization": f"Bearer mlxp_{'x' * 40}{n:03d}"}


def test_the_portal_sees_the_real_client_through_the_front(portal):
    """A client on another machine (here: this machine's LAN address, not loopback) is not
    "localhost" for /metrics, however it forges X-Forwarded-For, and its wrong API keys lock
    out itself, not every client of the front."""
    if portal.lan is None:
        pytest.skip("this machine has no address but loopback to reach the front from")
    remote = httpx.Client(base_url=f"http://{portal.lan}:{portal.port}", timeout=10)
    local = httpx.Client(base_url=portal.url, timeout=10)
    with remote, local:
        assert local.get("/metrics").status_code == 200  # a scraper on this machine
        assert remote.get("/metrics").status_code == 403
        forged = {"X-Forwarded-For": "127.0.0.1"}
        assert remote.get("/metrics", headers=forged).status_code == 403

        statuses = [remote.get("/v1/models", headers=_wrong_key(n)).status_code for n in range(5)]
        assert statuses == [401] * FAILURES_PER_MINUTE + [429] * (5 - FAILURES_PER_MINUTE)
        assert local.get("/v1/models", headers=_wrong_key(9)).status_code == 401
        assert remote.get("/v1/models", headers={**_wrong_key(10), **forged}).status_code == 429


def test_a_browser_form_passes_django_s_csrf_check_through_the_front(portal):
    """nginx passes the Host header with its port: Django compares it with the form's Origin."""
    with httpx.Client(base_url=portal.url, timeout=30) as browser:
        page = browser.get("/accounts/login/")
        assert page.status_code == 200
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
        assert token is not None
        response = browser.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token[1].decode(), "login": "nobody@example.com",
                  "password": "wrong-password"},
            headers={"Origin": portal.url, "Referer": f"{portal.url}/accounts/login/"},
        )  # fmt: skip
    assert response.status_code == 200, response.text[:500]
    assert b"not correct" in response.content


def _front_body_limit() -> int:
    """The shipped front's body limit for /v1 (its first `client_max_body_size`), in bytes."""
    conf = (
        Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "mlx-portal.conf"
    ).read_text()
    return int(re.search(r"client_max_body_size (\d+)m;", conf).group(1)) * 1024 * 1024


def test_a_v1_body_over_the_front_s_limit_gets_an_openai_shaped_413(portal):
    response = httpx.post(
        f"{portal.url}/v1/chat/completions", content=b"x" * (_front_body_limit() + 1),
        headers={"Content-Type": "application/json"}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
