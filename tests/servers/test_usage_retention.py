"""Usage records are kept USAGE_RETENTION_DAYS days: pruned daily by beat and by a command."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from servers import tasks
from servers.models import UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def records(make_profile, member):
    profile = make_profile("Kept")

    def add(days_ago: float) -> UsageRecord:
        at = timezone.now() - timedelta(days=days_ago)
        return UsageRecord.objects.create(
            user=member, profile=profile, profile_name=profile.name, host=profile.host,
            source="api", endpoint="chat/completions", status="ok",
            started_at=at - timedelta(seconds=2), finished_at=at,
        )  # fmt: skip

    return {days: add(days) for days in (0, 10, 399, 401, 800)}


def remaining() -> set[int]:
    return set(UsageRecord.objects.values_list("pk", flat=True))


def test_the_daily_task_drops_records_older_than_the_retention(records, settings):
    settings.USAGE_RETENTION_DAYS = 400
    assert tasks.prune_usage() == 2
    assert remaining() == {records[d].pk for d in (0, 10, 399)}


def test_a_retention_of_zero_keeps_everything(records, settings):
    settings.USAGE_RETENTION_DAYS = 0
    assert tasks.prune_usage() == 0
    assert remaining() == {r.pk for r in records.values()}


def test_the_command_counts_on_a_dry_run_then_prunes(records):
    out = StringIO()
    call_command("prune_usage", "--older-than", "5", "--dry-run", stdout=out)
    assert "4 usage record(s) would be removed" in out.getvalue()
    assert len(remaining()) == 5

    call_command("prune_usage", "--older-than", "5", stdout=out)
    assert "Removed 4 usage record(s) older than 5 day(s)" in out.getvalue()
    assert remaining() == {records[0].pk}


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_the_command_refuses_a_negative_or_odd_age(records, value):
    with pytest.raises(CommandError, match="number of days, 0 or more"):
        call_command("prune_usage", "--older-than", value)
    assert len(remaining()) == 5


def test_beat_runs_the_prune_daily(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["prune-usage"]
    assert entry["task"] == tasks.prune_usage.name
    assert entry["schedule"] == 24 * 3600
