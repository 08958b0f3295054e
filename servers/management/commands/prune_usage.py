"""`manage.py prune_usage --older-than DAYS [--dry-run]`

Removes the usage records (counts and timings of requests, never text) of requests that finished
more than DAYS days ago. Beat does the same once a day with MLX_PORTAL_USAGE_RETENTION_DAYS.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from servers.usage import records


class Command(BaseCommand):
    help = "Remove usage records of requests that finished more than N days ago."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true", help="Only count them.")

    def handle(self, *args, older_than: float, dry_run: bool = False, **options) -> str:
        if not older_than >= 0:
            raise CommandError("--older-than must be a number of days, 0 or more.")
        if dry_run:
            count = records.prunable(older_than).count()
            self.stdout.write(f"{count} usage record(s) would be removed.")
            return ""
        count = records.prune(older_than)
        self.stdout.write(f"Removed {count} usage record(s) older than {older_than:g} day(s).")
        return ""
