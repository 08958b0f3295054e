"""The Usage page's day sums: the same figures as grouping every record, whatever the
checkpoint has passed, in the portal's time zone, and kept when old records are pruned."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db.models import Avg, Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from servers.models import UsageDay, UsageRecord
from servers.usage import metrics
from servers.usage import records as usage_records

_AGGREGATES = {
    "requests": Count("id"),
    "errors": Count("id", filter=Q(status="error")),
    "prompt": Sum("prompt_tokens", default=0),
    "completion": Sum("completion_tokens", default=0),
    "inputs": Sum("inputs", default=0),
    "audio_seconds": Sum("audio_seconds", default=0.0),
    "avg_ttft_ms": Avg("ttft_ms"),
    "timed": Sum("completion_tokens", filter=Q(generation_ms__isnull=False)),
    "ms": Sum("generation_ms"),
}


def _row(values: dict) -> dict:
    values["prompt_tokens"], values["completion_tokens"] = (
        values.pop("prompt"),
        values.pop("completion"),
    )
    timed, ms = values.pop("timed"), values.pop("ms")
    values["tokens_per_second"] = timed / (ms / 1000) if timed and ms else None
    values["avg_ttft_ms"] = values["avg_ttft_ms"] and round(values["avg_ttft_ms"], 6)
    values["tokens_per_second"] = values["tokens_per_second"] and round(
        values["tokens_per_second"], 6
    )
    return values


def reference(start: date, end: date, user=None) -> dict:
    """Every record of the period grouped at once: what the page showed before day sums."""
    tz = timezone.get_current_timezone()
    since = datetime.combine(start, datetime.min.time(), tzinfo=tz)
    until = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    records = UsageRecord.objects.filter(started_at__gte=since, started_at__lt=until)
    if user is not None:
        records = records.filter(user=user)
    tables = {
        "by_model": records.values(label=F("profile_name")),
        "by_user": records.values(label=F("user__email")),
        "by_day": records.annotate(day=TruncDate("started_at", tzinfo=tz)).values("day"),
    }
    figures = {"totals": _row(records.aggregate(**_AGGREGATES))}
    for name, grouped in tables.items():
        rows = [_row(row) for row in grouped.annotate(**_AGGREGATES).order_by()]
        key = (lambda r: r["day"]) if name == "by_day" else (
            lambda r: (-r["requests"], r["label"] or "")
        )  # fmt: skip
        figures[name] = sorted(rows, key=key) if (name != "by_user" or user is None) else []
    return figures


def shown(start: date, end: date, user=None) -> dict:
    summary = usage_records.summary(start, end, user=user)
    figures = {"totals": _row_of(summary.totals)}
    for name in ("by_model", "by_user", "by_day"):
        figures[name] = [_row_of(row) for row in getattr(summary, name)]
    return figures


def _row_of(row: dict) -> dict:
    row = dict(row)
    for name in ("avg_ttft_ms", "tokens_per_second"):
        row[name] = row[name] and round(row[name], 6)
    return row


@pytest.fixture
def records(make_profile, member, make_user):
    """A month of mixed usage: two models, three users (one deleted later), errors, requests
    without a first token or a generation time, some just before midnight UTC."""
    alpha, beta = make_profile("Alpha"), make_profile("Beta")
    other = make_user("other@example.com")
    gone = make_user("gone@example.com")
    now = timezone.now()

    def add(profile, user, at, **fields):
        fields.setdefault("prompt_tokens", 10)
        fields.setdefault("completion_tokens", 100)
        fields.setdefault("ttft_ms", 40.0)
        fields.setdefault("generation_ms", 800.0)
        return UsageRecord.objects.create(
            user=user, profile=profile, profile_name=profile.name, host=profile.host,
            source="api", endpoint="chat/completions", status=fields.pop("status", "ok"),
            started_at=at, finished_at=at + timedelta(seconds=1), **fields,
        )  # fmt: skip

    def add_days(first: int, last: int) -> None:
        for days_ago in range(first, last):
            day = now - timedelta(days=days_ago)
            late = datetime.combine(day.date(), datetime.min.time(), tzinfo=UTC) + timedelta(
                hours=23, minutes=30
            )
            add(alpha, member, day, completion_tokens=days_ago * 3, ttft_ms=30.0 + days_ago)
            add(
                beta,
                other,
                late if late < now else day,
                prompt_tokens=7,
                inputs=3,
                audio_seconds=1.25,
            )
            add(beta, gone, day, status="error", completion_tokens=0, ttft_ms=None,
                generation_ms=None)  # fmt: skip
            if days_ago % 3 == 0:
                add(alpha, other, day, generation_ms=None)

    return add_days, gone


def test_the_day_sums_show_what_grouping_every_record_showed(records, member, settings):
    add_days, gone = records
    add_days(1, 30)
    today = timezone.localdate()
    start, end = today - timedelta(days=20), today

    before = reference(start, end)
    assert before["totals"]["requests"] > 60
    assert shown(start, end) == before  # no checkpoint yet: every record

    assert metrics.advance_totals(settle_seconds=0) > 0
    assert UsageDay.objects.exists()
    assert shown(start, end) == before  # all from the day sums
    assert shown(start, end, user=member) == reference(start, end, user=member)

    add_days(0, 1)  # after the checkpoint: day sums plus these records
    gone.delete()  # their rows and records keep their figures, without a user
    assert shown(start, end) == reference(start, end)
    assert shown(today, today) == reference(today, today)
    assert shown(start, end, user=member) == reference(start, end, user=member)


def test_a_new_time_zone_counts_its_own_days_at_once_and_rebuilds_the_sums(records, settings):
    add_days, _ = records
    add_days(1, 10)
    metrics.advance_totals(settle_seconds=0)
    today = timezone.localdate()
    start, end = today - timedelta(days=8), today
    utc_days = reference(start, end)["by_day"]

    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+5:30: a request at 23:30 UTC is the next day's
    expected = reference(start, end)
    assert expected["by_day"] != utc_days
    assert shown(start, end) == expected  # the sums count UTC days: every record instead

    assert metrics.advance_totals(settle_seconds=0) == 0  # nothing new, yet rebuilt
    assert UsageDay.objects.exists()
    assert shown(start, end) == expected
    settings.TIME_ZONE = "America/New_York"
    metrics.advance_totals(settle_seconds=0)
    assert shown(start, end) == reference(start, end)


def test_pruning_old_records_keeps_their_days_on_the_page(records, admin_client):
    add_days, _ = records
    add_days(1, 40)
    today = timezone.localdate()
    start, end = today - timedelta(days=35), today
    before = reference(start, end)

    deleted = usage_records.prune(older_than_days=10)  # advances the checkpoint first
    assert deleted > 60
    assert reference(start, end) != before  # the records are gone...
    assert shown(start, end) == before  # ...their days' sums are not

    html = admin_client.get(
        reverse("servers:usage"), {"start": start.isoformat(), "end": end.isoformat()}
    ).content.decode()
    assert f'data-testid="total-requests">{before["totals"]["requests"]}<' in html


def test_no_usage_shows_zeros(db):
    today = timezone.localdate()
    summary = usage_records.summary(today - timedelta(days=29), today)
    assert summary.totals["requests"] == 0 and summary.totals["avg_ttft_ms"] is None
    assert summary.by_model == summary.by_day == summary.by_user == []


def test_add_up_sums_rows_by_a_key():
    from servers.usage.days import SUMS, add_up

    def row(day, email, model, requests):
        return {"day": day, "email": email, "profile_name": model,
                **dict.fromkeys(SUMS, 1), "requests": requests}  # fmt: skip

    d1, d2 = date(2026, 1, 1), date(2026, 1, 2)
    rows = [row(d1, "a", "m", 2), row(d1, "b", "m", 3), row(d2, "a", "n", 4)]
    assert {g["day"]: g["requests"] for g in add_up(rows, "day")} == {d1: 5, d2: 4}
    assert {g["label"]: g["requests"] for g in add_up(rows, "email")} == {"a": 6, "b": 3}
    assert add_up(rows, None)[0]["requests"] == 9 and add_up(rows, None)[0]["errors"] == 3
    assert add_up([], "day") == []
