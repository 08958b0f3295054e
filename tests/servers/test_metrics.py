"""/metrics: Prometheus text from the database; localhost or the admin token only."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from servers.models import ServerInstance, State, UsageRecord


@pytest.fixture
def recorded(make_profile, member):
    profile = make_profile("Alpha")
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(state=State.RUNNING)
    for ttft, duration, status in [
        (40.0, 900.0, "ok"),
        (300.0, 4000.0, "ok"),
        (None, 10.0, "error"),
    ]:
        UsageRecord.objects.create(
            user=member, profile=profile, profile_name=profile.name, source="api",
            endpoint="chat/completions", prompt_tokens=5, completion_tokens=20, ttft_ms=ttft,
            duration_ms=duration, status=status, started_at=timezone.now(),
        )  # fmt: skip
    return profile


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_from_localhost_count_requests_tokens_histograms_and_states(recorded):
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    s = samples(response.content.decode())
    assert (
        s[("mlxportal_requests_total", (("profile", "Alpha"), ("source", "api"), ("status", "ok")))]
        == 2
    )
    assert s[("mlxportal_tokens_total", (("kind", "completion"), ("profile", "Alpha")))] == 60
    ttft = "mlxportal_time_to_first_token_seconds"
    assert s[(f"{ttft}_bucket", (("le", "0.05"), ("profile", "Alpha")))] == 1
    assert s[(f"{ttft}_bucket", (("le", "0.5"), ("profile", "Alpha")))] == 2
    assert s[(f"{ttft}_count", (("profile", "Alpha"),))] == 2
    assert s[(f"{ttft}_sum", (("profile", "Alpha"),))] == pytest.approx(0.34)
    assert s[("mlxportal_request_duration_seconds_count", (("profile", "Alpha"),))] == 3
    state = (("host", "local"), ("profile", "alpha"), ("state", "running"))
    assert s[("mlxportal_server_state", state)] == 1
    assert s[("mlxportal_servers_running", ())] == 1


def test_metrics_refuse_remote_and_proxied_requests_without_the_token(recorded, settings):
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="::1").status_code == 200
    proxied = Client().get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert proxied.status_code == 403
    settings.METRICS_TOKEN = "s3cret-token"
    remote = Client(REMOTE_ADDR="203.0.113.5")
    assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    ok = remote.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and b"mlxportal_requests_total" in ok.content
    settings.METRICS_ALLOW_LOCALHOST = False
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
