"""The server log page hides the lines of the portal's own health checks (`GET /health` and
`GET /portal/status`, every few seconds: 200 lines in 10 minutes), so the last lines shown are
the server's own. A real mlx_lm.server, through the portal's entry point, probed for real."""

from __future__ import annotations

import httpx
import pytest

from servers.models import ServerInstance
from servers.supervision import probes
from tests.servers.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def _probe(server, times: int) -> None:
    for _ in range(times):
        assert probes.check_alive(server.url).ok
        probes.server_busy(server.port)  # None: it works on nothing


def test_the_log_page_leaves_out_the_health_checks(mlx_server, serve_profile, member_client):
    profile = serve_profile(mlx_server, "Tiny")
    ServerInstance.objects.filter(profile=profile).update(log_path=str(mlx_server.log_path))
    answer = httpx.post(
        f"{mlx_server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert answer.status_code == 200
    _probe(mlx_server, 60)  # 120 probe lines after the request
    wait_for(
        lambda: mlx_server.log_path.read_text().count('"GET /portal/status') >= 60,
        30,
        what="the probes' lines in the log",
    )

    page = member_client.get("/servers/tiny/log/?lines=5").content.decode()
    assert "POST /v1/chat/completions HTTP" in page  # buried under 120 probe lines in the file
    assert "GET /health" not in page and "GET /portal/status" not in page
    assert "without the portal's health checks" in page


@pytest.mark.parametrize(
    "line, probe",
    [
        ('127.0.0.1 - - [07/Dec/2026 01:05:47] "GET /health HTTP/1.1" 200 -', True),
        ('127.0.0.1 - - [07/Dec/2026 01:05:47] "GET /portal/status HTTP/1.0" 200 -', True),
        ('127.0.0.1 - - [07/Dec/2026 01:05:47] "POST /v1/chat/completions HTTP/1.1" 200 -', False),
        ('127.0.0.1 - - [07/Dec/2026 01:05:47] "GET /v1/models HTTP/1.1" 200 -', False),
        ("2026-12-07 01:05:47,726 - INFO - Prompt Cache: 0 sequences, 0.00 GB", False),
        ('"GET /healthy-looking HTTP/1.1" 404 -', False),
    ],
)
def test_probe_lines_are_told_from_the_servers_own(line, probe):
    assert probes.is_probe_line(line) is probe
