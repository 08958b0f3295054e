"""Clients that leave in the middle of a stream, again and again, leak nothing: no pooled
connection stays busy, no socket to the model server stays open, and the web process ends
with as many threads and file descriptors as it started with (a small tolerance for the
live server's own bookkeeping). Real mlx_lm.server, real HTTP through pytest-django's live
server. Figures: docs/reliability.md."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import psutil
import pytest

from servers.gateway import transport
from servers.models import UsageRecord
from tests.servers.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DISCONNECTS = 100
ENDLESS = {"logit_bias": {"0": -100, "2": -100}}
TOLERANCE_THREADS = 3
TOLERANCE_FDS = 10


def _established_to(port: int) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def _settled(port: int) -> bool:
    return transport.connections_in_use() == 0 and _established_to(port) == 0


def test_a_hundred_clients_leaving_mid_stream_leak_no_connection_thread_or_file(
    mlx_server, serve_profile, api_key, live_server
):
    serve_profile(mlx_server, "Tiny", max_tokens=4000)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            "max_tokens": 4000, **ENDLESS}  # fmt: skip
    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"{live_server.url}/v1/chat/completions"
    me = psutil.Process()

    def one_disconnect(client: httpx.Client) -> None:
        with client.stream("POST", url, json=body, headers=headers) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("choices"):
                    break  # the first token: hang up

    # One round first, so the pool, the live server and Django are warm.
    with httpx.Client(timeout=30) as client:
        one_disconnect(client)
    wait_for(lambda: UsageRecord.objects.count() == 1, 30, what="the first record")
    wait_for(lambda: _settled(mlx_server.port), 30, what="the warm-up to settle")
    threads_before, fds_before = threading.active_count(), me.num_fds()

    started = time.monotonic()
    for _ in range(DISCONNECTS):
        with httpx.Client(timeout=30) as client:  # a new client each time, as scripts do
            one_disconnect(client)
    elapsed = time.monotonic() - started

    wait_for(
        lambda: UsageRecord.objects.count() == DISCONNECTS + 1, 60, what="every request recorded"
    )
    wait_for(lambda: _settled(mlx_server.port), 30, what="the upstream connections to close")
    wait_for(
        lambda: threading.active_count() <= threads_before + TOLERANCE_THREADS,
        30,
        what="request threads to end",
    )
    assert set(UsageRecord.objects.values_list("status", flat=True)) == {"cancelled"}
    fds_after = me.num_fds()
    assert fds_after <= fds_before + TOLERANCE_FDS, (fds_before, fds_after)
    # The model server is still fine for the next caller.
    answer = httpx.post(url, json={"model": "tiny", "messages": body["messages"]},
                        headers=headers, timeout=30).json()  # fmt: skip
    assert answer["choices"][0]["message"]["content"]
    report = os.environ.get("MLX_PORTAL_RELIABILITY_REPORT")
    if report:  # figures for docs/reliability.md
        with open(report, "a") as out:
            out.write(
                f"disconnects={DISCONNECTS} seconds={elapsed:.1f} threads={threads_before}->"
                f"{threading.active_count()} fds={fds_before}->{fds_after}\n"
            )
