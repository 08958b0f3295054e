"""/metrics: Prometheus text from the database; localhost or the admin token only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from servers import tasks
from servers.models import ServerInstance, State, UsageRecord, UsageTotals
from servers.usage import metrics


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
    state = (("host", "local"), ("name", "Alpha"), ("profile", "alpha"), ("state", "running"))
    assert s[("mlxportal_server_state", state)] == 1
    assert s[("mlxportal_servers_running", ())] == 1


def test_a_server_on_an_offline_host_is_unknown_in_the_metrics_as_on_the_pages(
    recorded, admin_member
):
    from datetime import timedelta

    from models_catalog.models import Host
    from servers.models import ServerInstance, ServerProfile, State

    beta = Host.objects.create(name="beta", last_heartbeat=timezone.now() - timedelta(hours=1))
    far = ServerProfile.objects.create(
        name="Far", slug="far", model_id="a/b", host=beta, port=8120, owner=admin_member
    )
    ServerInstance.objects.create(profile=far, state=State.RUNNING, pid=1)
    s = samples(Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode())
    labels = (("host", "beta"), ("name", "Far"), ("profile", "far"))
    assert s[("mlxportal_server_state", (*labels, ("state", "unknown")))] == 1
    assert s[("mlxportal_server_state", (*labels, ("state", "running")))] == 0
    assert s[("mlxportal_servers_running", ())] == 1  # Alpha only


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


def test_metrics_allow_only_the_token_or_this_machine_as_docs_accounts_says(
    recorded, settings, admin_member
):
    """docs/accounts.md, "/metrics": no token is set by default, so a bearer token opens
    nothing; a session, even an admin's, does not count; headers the portal does not read
    make a client not local; the token works from this machine too."""
    remote = Client(REMOTE_ADDR="203.0.113.5")
    assert settings.METRICS_TOKEN == ""
    assert remote.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
    remote.force_login(admin_member)
    assert remote.get("/metrics").status_code == 403
    for header in ("HTTP_FORWARDED", "HTTP_X_REAL_IP"):
        local = Client().get("/metrics", REMOTE_ADDR="127.0.0.1", **{header: "127.0.0.1"})
        assert local.status_code == 403, header
    through_front = Client().get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="::1")
    assert through_front.status_code == 200  # a client of this machine, through the front
    settings.METRICS_TOKEN = "s3cret-token"
    settings.METRICS_ALLOW_LOCALHOST = False
    local = Client().get(
        "/metrics", REMOTE_ADDR="127.0.0.1", headers={"Authorization": "Bearer s3cret-token"}
    )
    assert local.status_code == 200


def scrape() -> dict:
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    return {k: v for k, v in samples(response.content.decode()).items() if "server" not in k[0]}


def add_record(profile, member, ttft=120.0, duration=2000.0, finished_ago=timedelta(0)):
    at = timezone.now() - finished_ago
    return UsageRecord.objects.create(
        user=member, profile=profile, profile_name=profile.name, source="chat",
        endpoint="chat/completions", prompt_tokens=7, completion_tokens=11, ttft_ms=ttft,
        duration_ms=duration, status="ok", started_at=at, finished_at=at,
    )  # fmt: skip


def test_the_checkpoint_keeps_the_counters_and_a_scrape_groups_only_what_came_after(
    recorded, member
):
    before = scrape()
    assert metrics.advance_totals(settle_seconds=0) == 3
    checkpoint = UsageTotals.objects.get()
    assert scrape() == before  # the same counters, from the row

    add_record(recorded, member)
    with CaptureQueriesContext(connection) as ctx:
        after = scrape()
    grouped = [q["sql"] for q in ctx.captured_queries if "servers_usagerecord" in q["sql"]]
    assert grouped and all(f'"id" > {checkpoint.up_to_id}' in sql for sql in grouped)
    chat = (("profile", "Alpha"), ("source", "chat"), ("status", "ok"))
    assert after[("mlxportal_requests_total", chat)] == 1
    ttft = "mlxportal_time_to_first_token_seconds"
    assert after[(f"{ttft}_count", (("profile", "Alpha"),))] == 3
    assert after[(f"{ttft}_bucket", (("le", "0.1"), ("profile", "Alpha")))] == 1
    assert after[(f"{ttft}_bucket", (("le", "0.25"), ("profile", "Alpha")))] == 2
    assert after[(f"{ttft}_sum", (("profile", "Alpha"),))] == pytest.approx(0.46)
    tokens = ("mlxportal_tokens_total", (("kind", "prompt"), ("profile", "Alpha")))
    assert after[tokens] == before[tokens] + 7

    assert metrics.advance_totals(settle_seconds=0) == 1
    assert scrape() == after


def test_records_are_counted_by_the_checkpoint_once_settled(recorded, member):
    add_record(recorded, member, finished_ago=timedelta(minutes=5))
    fresh = add_record(recorded, member)
    assert metrics.advance_totals() == 4  # all but the one that finished just now
    assert UsageTotals.objects.get().up_to_id == fresh.pk - 1
    total = scrape()[("mlxportal_request_duration_seconds_count", (("profile", "Alpha"),))]
    assert total == 5


def test_pruning_old_records_does_not_lower_the_counters(recorded, member, settings):
    add_record(recorded, member, finished_ago=timedelta(days=500))
    before = scrape()
    settings.USAGE_RETENTION_DAYS = 400
    assert tasks.prune_usage() == 1
    assert UsageRecord.objects.count() == 3
    assert scrape() == before


def test_a_checkpoint_with_other_buckets_starts_that_histogram_again(recorded):
    metrics.advance_totals(settle_seconds=0)
    checkpoint = UsageTotals.objects.get()
    checkpoint.totals["bounds"]["ttft_ms"] = [1.0, 2.0]
    checkpoint.save()
    s = scrape()
    assert ("mlxportal_time_to_first_token_seconds_count", (("profile", "Alpha"),)) not in s
    assert s[("mlxportal_request_duration_seconds_count", (("profile", "Alpha"),))] == 3


def test_beat_adds_up_the_usage_totals_every_few_minutes(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["usage-totals"]
    assert entry["task"] == tasks.advance_usage_totals.name
    assert entry["schedule"] <= 600
