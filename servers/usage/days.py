"""The Usage page's sums by day, user and model (`UsageDay`), kept as the records come.

The page used to group every request of its period at each view: 148 ms for 30 days and
1.8 s for a year at 1,000 requests a day (docs/benchmarks.md §2g). Now beat adds the records
up to the checkpoint (`metrics.advance_totals`, every few minutes) to one row per day, user
and model, and the page reads those rows plus the few records after the checkpoint.

Days are days of settings.TIME_ZONE, as the page shows them. When that setting changes, the
rows are rebuilt from the records still kept (`add`): a day older than the retention
(MLX_PORTAL_USAGE_RETENTION_DAYS) is then gone, as its records are.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from servers.models import UsageDay, UsageRecord, UsageTotals

# What a day row adds up (UsageDay's fields of the same names), from the records.
_SUMMED = {
    "requests": Count("id"),
    "errors": Count("id", filter=Q(status=UsageRecord.Status.ERROR)),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "inputs": Sum("inputs"),
    "audio_seconds": Sum("audio_seconds"),
    "ttft_count": Count("ttft_ms"),
    "ttft_sum_ms": Sum("ttft_ms"),
    "tokens_timed": Sum("completion_tokens", filter=Q(generation_ms__isnull=False)),
    "generation_ms": Sum("generation_ms"),
}
SUMS = tuple(_SUMMED)
# In the query under other names: an aggregate cannot share the name of a record's field.
_AGGREGATES = {f"total_{name}": aggregate for name, aggregate in _SUMMED.items()}


def zone() -> tzinfo:
    return ZoneInfo(settings.TIME_ZONE)


def grouped(records: QuerySet, tz: tzinfo) -> list[dict]:
    """`records` added up by day (in `tz`), user and model: dicts with `day`, `user_id`,
    `email`, `profile_name` and every one of SUMS (0 for none)."""
    rows = (
        records.annotate(day=TruncDate("started_at", tzinfo=tz))
        .values("day", "user_id", "profile_name")
        .annotate(email=F("user__email"), **_AGGREGATES)
        .order_by()
    )
    return [
        {
            "day": row["day"],
            "user_id": row["user_id"],
            "email": row["email"],
            "profile_name": row["profile_name"],
            **{name: row[f"total_{name}"] or 0 for name in SUMS},
        }
        for row in rows
    ]


def add(checkpoint: UsageTotals, new: QuerySet, up_to_id: int) -> None:
    """Add the records `new` (those the checkpoint passes now, up to `up_to_id`) to the day
    rows; or, when the rows count another time zone's days, rebuild them from every record
    up to `up_to_id`. Sets `checkpoint.days_time_zone`; the caller saves it. Call inside the
    checkpoint's transaction, with its row locked (`metrics.advance_totals`): one writer at
    a time."""
    if checkpoint.days_time_zone != settings.TIME_ZONE:
        UsageDay.objects.all().delete()
        new = UsageRecord.objects.filter(pk__lte=up_to_id)
        checkpoint.days_time_zone = settings.TIME_ZONE
    rows = grouped(new, zone())
    if not rows:
        return
    existing = {
        (day.day, day.user_id, day.profile_name): day
        for day in UsageDay.objects.filter(day__in={row["day"] for row in rows})
    }
    created, changed = [], []
    for row in rows:
        day = existing.get((row["day"], row["user_id"], row["profile_name"]))
        if day is None:
            created.append(
                UsageDay(
                    day=row["day"],
                    user_id=row["user_id"],
                    profile_name=row["profile_name"],
                    **{name: row[name] for name in SUMS},
                )
            )
            continue
        for name in SUMS:
            setattr(day, name, getattr(day, name) + row[name])
        changed.append(day)
    UsageDay.objects.bulk_create(created, batch_size=500)
    UsageDay.objects.bulk_update(changed, SUMS, batch_size=500)


def rows_between(start: date, end: date, user=None, model: str = "", route: str = "") -> list[dict]:
    """Every day row from `start` to `end` (inclusive) and every record after the checkpoint
    started in those days, as `grouped` gives them; one user's only when `user` is given, one
    model's (a profile's name) with `model`. Where the day rows count another time zone's days
    (not rebuilt yet), or for one `route` (the day rows do not keep routes), every record: a
    route's usage goes back as far as the records are kept."""
    tz = zone()
    since = datetime.combine(start, datetime.min.time(), tzinfo=tz)
    until = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    records = UsageRecord.objects.filter(started_at__gte=since, started_at__lt=until)
    if user is not None:
        records = records.filter(user=user)
    if model:
        records = records.filter(profile_name=model)
    checkpoint = UsageTotals.objects.filter(pk=1).first()
    if route or checkpoint is None or checkpoint.days_time_zone != settings.TIME_ZONE:
        return grouped(records.filter(route_name=route) if route else records, tz)
    days = UsageDay.objects.filter(day__gte=start, day__lte=end)
    if user is not None:
        days = days.filter(user=user)
    if model:
        days = days.filter(profile_name=model)
    kept = list(
        days.values("day", "user_id", "profile_name", *SUMS).annotate(email=F("user__email"))
    )
    return kept + grouped(records.filter(pk__gt=checkpoint.up_to_id), tz)


def add_up(rows: Iterable[dict], key: str | None) -> list[dict]:
    """`rows` summed by `key` ("day", "email", "profile_name"; None: all into one), each
    group as {key's value under "day" or "label" (none for None), and every one of SUMS}
    (pure)."""
    groups: dict[object, dict] = {}
    for row in rows:
        value = row[key] if key else None
        group = groups.get(value)
        if group is None:
            group = groups[value] = dict.fromkeys(SUMS, 0)
            if key:
                group["day" if key == "day" else "label"] = value
        for name in SUMS:
            group[name] += row[name]
    return list(groups.values())
