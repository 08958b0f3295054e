"""Seeing the sharing: a person's use against their limits (Usage and API keys pages), an
admin's view of today per person and per group, a tile's queue, and /metrics' queue gauges,
wait histogram and refusals by reason. In process, against the real Redis."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Limits
from accounts.teams import NO_LIMITS, limits_for
from servers.models import UsageRecord
from servers.sharing import admission
from servers.tiles import tiles_for
from tests.servers.test_metrics import samples

pytestmark = pytest.mark.django_db


def used(user, profile, tokens=0, error_code="", queue_ms=None, status_code=200):
    return UsageRecord.objects.create(
        user=user, profile=profile, profile_name=profile.name, source="api",
        endpoint="chat/completions", prompt_tokens=tokens, completion_tokens=0,
        status="error" if error_code else "ok", status_code=status_code, error_code=error_code,
        queue_ms=queue_ms, started_at=timezone.now(), finished_at=timezone.now(),
    )  # fmt: skip


def test_a_member_sees_their_use_against_their_limits_on_the_usage_and_api_keys_pages(
    member, member_client, make_profile
):
    team = Group.objects.create(name="Research")
    Limits.objects.create(group=team, tokens_per_day=1000, requests_per_minute=10)
    member.groups.add(team)
    profile = make_profile()
    used(member, profile, tokens=250)
    admission.enter(member, profile, limits_for(member))  # one in flight now, one this minute

    standing_url = reverse("servers:standing")
    for page in (reverse("servers:usage"), reverse("accounts:api-keys")):
        assert f'hx-get="{standing_url}"' in member_client.get(page).content.decode()
    html = member_client.get(standing_url).content.decode()
    tokens_row = html.split('data-testid="limit-tokens_per_day"')[1].split("</tr>")[0]
    assert "<td>250</td>" in tokens_row and "<td>1000</td>" in tokens_row
    assert "group Research" in tokens_row and 'value="25"' in tokens_row
    minute_row = html.split('data-testid="limit-requests_per_minute"')[1].split("</tr>")[0]
    assert "<td>1</td>" in minute_row and "<td>10</td>" in minute_row
    flight_row = html.split('data-testid="limit-concurrent_requests"')[1].split("</tr>")[0]
    assert "<td>1</td>" in flight_row and "no limit" in flight_row
    assert "reset at midnight" in html


def test_a_member_without_limits_sees_no_limits_section(member_client):
    html = member_client.get(reverse("servers:standing")).content.decode()
    assert 'data-testid="standing"' in html and "Your limits" not in html


def test_admins_see_today_per_person_and_per_group_and_members_may_not(
    admin_member, member, member_client, make_user, make_profile
):
    admin_client = Client()
    admin_client.force_login(admin_member)
    team = Group.objects.create(name="Research")
    Limits.objects.create(group=team, tokens_per_day=5000)
    member.groups.add(team)
    other = make_user("other@example.com")
    profile = make_profile()
    used(member, profile, tokens=120)
    used(member, profile, error_code="tokens_per_day", status_code=429)
    used(other, profile, tokens=30)
    old = used(other, profile, tokens=999)
    UsageRecord.objects.filter(pk=old.pk).update(
        finished_at=timezone.now() - timezone.timedelta(days=2)
    )

    html = admin_client.get(reverse("servers:sharing-today")).content.decode()
    rows = html.split('data-testid="today-user"')[1:]
    mine = next(r for r in rows if "member@example.com" in r).split("</tr>")[0]
    assert "<td>2</td><td>120</td><td>1</td>" in mine and "5000" in mine
    theirs = next(r for r in rows if "other@example.com" in r).split("</tr>")[0]
    assert "<td>1</td><td>30</td><td>0</td>" in theirs
    group = html.split('data-testid="today-group"')[1].split("</tr>")[0]
    assert "Research" in group and "<td>1</td><td>1</td><td>2</td><td>120</td><td>1</td>" in group
    assert member_client.get(reverse("servers:sharing-today")).status_code == 403


def test_a_tile_shows_requests_in_flight_and_waiting(
    member, make_user, make_profile, member_client
):
    profile = make_profile("Busy", max_in_flight=1, reserved_slots=0)
    admission.enter(member, profile, NO_LIMITS)
    admission.enter(make_user("b@example.com"), profile, NO_LIMITS)
    (tile,) = tiles_for(member)
    assert (tile.slots, tile.in_flight, tile.waiting) == (1, 1, 1)
    html = member_client.get(reverse("servers:list")).content.decode()
    assert '<strong data-testid="in-flight">1</strong> of 1 in flight' in html
    assert '<strong data-testid="waiting">1</strong> waiting' in html


def test_metrics_show_queues_waits_and_refusals_by_reason(member, make_user, make_profile):
    profile = make_profile("Busy", max_in_flight=2, reserved_slots=0)
    for _ in range(3):
        admission.enter(member, profile, NO_LIMITS)
    used(member, profile, queue_ms=40.0)
    used(member, profile, queue_ms=3000.0)
    used(member, profile, error_code="requests_per_minute", status_code=429)
    used(member, profile, error_code="queue_full", status_code=503)
    used(member, profile, error_code="server_not_running", status_code=503)  # not a refusal
    s = samples(Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode())
    assert s[("mlxportal_queue_in_flight", (("profile", "busy"),))] == 2
    assert s[("mlxportal_queue_waiting", (("profile", "busy"),))] == 1
    assert s[("mlxportal_queue_slots", (("profile", "busy"),))] == 2
    wait = "mlxportal_queue_wait_seconds"
    assert s[(f"{wait}_bucket", (("le", "0.05"), ("profile", "Busy")))] == 1
    assert s[(f"{wait}_bucket", (("le", "5"), ("profile", "Busy")))] == 2
    assert s[(f"{wait}_count", (("profile", "Busy"),))] == 2
    refusals = "mlxportal_refusals_total"
    assert s[(refusals, (("profile", "Busy"), ("reason", "requests_per_minute")))] == 1
    assert s[(refusals, (("profile", "Busy"), ("reason", "queue_full")))] == 1
    assert not any(key[0] == refusals and ("reason", "server_not_running") in key[1] for key in s)
