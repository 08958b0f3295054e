"""The Usage page's cost as the usage history grows: the day sums vs grouping every record.

    python -m bench.usage_page [--per-day 1000] [--days 400] [--requests 5]

Fills a throwaway SQLite database with `--per-day` usage records a day over `--days` days
(3 users, 4 models, a few errors), then renders `GET /servers/usage/` as an admin for 30 days (the
default) and for 366 days (the most it shows), wall time per request. The baseline, in the
same run, is the page before any day sums exist, when it groups every record of the period
(as before docs/benchmarks.md §2h); then `metrics.advance_totals()` (beat's job) adds the
records to the day sums, plus a day's worth after the checkpoint, and the page is measured
again.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from bench.harness import Bench, median, print_machine, table


def fill(per_day: int, days: int) -> int:
    """`per_day` records a day over `days` days, spread over the day; returns how many."""
    from django.utils import timezone

    from bench.harness import admin_user
    from models_catalog.models import Host
    from servers.models import ServerProfile, UsageRecord

    owner = admin_user()
    from django.contrib.auth import get_user_model

    users = [owner] + [
        get_user_model().objects.get_or_create(
            email=f"user{n}@example.com",
            defaults={"username": f"user{n}", "status": "approved"},
        )[0]
        for n in (1, 2)
    ]
    profiles = [
        ServerProfile.objects.get_or_create(
            slug=f"model-{n}",
            defaults={"name": f"Model {n}", "model_id": f"bench/model-{n}", "port": 9100 + n,
                      "owner": owner, "host": Host.objects.this_machine()},
        )[0]
        for n in range(4)
    ]  # fmt: skip
    now = timezone.now()
    step = timedelta(days=1) / per_day
    batch: list[UsageRecord] = []
    total = 0
    for i in range(per_day * days):
        at = now - step * (i + 1)
        profile, user = profiles[i % 4], users[i % 3]
        error = i % 50 == 0
        batch.append(
            UsageRecord(
                user=user, profile=profile, profile_name=profile.name, host=profile.host,
                source="api", endpoint="chat/completions", stream=True,
                prompt_tokens=20 + i % 7, completion_tokens=0 if error else 100 + i % 13,
                ttft_ms=None if error else 40.0 + i % 11,
                generation_ms=None if error else 900.0 + i % 17, duration_ms=950.0,
                status="error" if error else "ok", started_at=at,
                finished_at=at + timedelta(seconds=1),
            )
        )  # fmt: skip
        if len(batch) == 5000:
            UsageRecord.objects.bulk_create(batch)
            total += len(batch)
            batch = []
    UsageRecord.objects.bulk_create(batch)
    return total + len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-day", type=int, default=1000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    print_machine()

    with Bench("usage-page") as bench:
        bench.setup_django()
        from django.test import Client, override_settings
        from django.utils import timezone

        from bench.harness import admin_user
        from servers.models import UsageDay
        from servers.usage import metrics

        started = time.perf_counter()
        count = fill(args.per_day, args.days)
        print(
            f"{count} usage records over {args.days} days in {time.perf_counter() - started:.0f} s"
        )
        today = timezone.localdate()
        ranges = {
            "30 days": {},
            "366 days": {"start": (today - timedelta(days=365)).isoformat(),
                         "end": today.isoformat()},
        }  # fmt: skip
        with override_settings(ALLOWED_HOSTS=["*"]):
            client = Client()
            client.force_login(admin_user())

            def measure() -> dict[str, float]:
                times = {}
                for name, params in ranges.items():
                    assert client.get("/servers/usage/", params).status_code == 200  # warm
                    walls = []
                    for _ in range(args.requests):
                        start = time.perf_counter()
                        response = client.get("/servers/usage/", params)
                        walls.append((time.perf_counter() - start) * 1000)
                        assert response.status_code == 200
                    times[name] = median(walls)
                return times

            before = measure()
            started = time.perf_counter()
            metrics.advance_totals(settle_seconds=0)
            advanced = time.perf_counter() - started
            fill(args.per_day, 1)  # the last day again, after the checkpoint
            after = measure()
        print(
            f"advance_totals over every record (once; beat then adds ~5 minutes' records): "
            f"{advanced:.1f} s; {UsageDay.objects.count()} day rows"
        )
        rows = [["period", "grouping every record ms", "day sums ms", "x baseline"]]
        for name in ranges:
            rows.append(
                [name, f"{before[name]:.1f}", f"{after[name]:.1f}",
                 f"{after[name] / before[name]:.3f}"]
            )  # fmt: skip
        print(f"\nGET /servers/usage/ as an admin, median wall time of {args.requests} requests:\n")
        print(table(rows))


if __name__ == "__main__":
    main()
