"""`manage.py prune_downloads --older-than DAYS [--dry-run]`

Removes the records of finished downloads (completed, deleted, cancelled, failed) that ended more
than DAYS days ago. Only database rows go: the models stay on disk (delete those under My models).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from models_catalog.models import Download

FINISHED = (
    Download.State.COMPLETED,
    Download.State.DELETED,
    Download.State.CANCELLED,
    Download.State.FAILED,
)


def prunable(older_than_days: float):
    """Finished downloads that ended more than `older_than_days` days ago."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return Download.objects.filter(state__in=FINISHED, finished_at__lt=cutoff)


class Command(BaseCommand):
    help = "Remove the records of finished downloads older than N days (files stay on disk)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true", help="Only count them.")

    def handle(self, *args, older_than: float, dry_run: bool = False, **options) -> str:
        if older_than < 0:
            raise CommandError("--older-than must be a number of days, 0 or more.")
        downloads = prunable(older_than)
        count = downloads.count()
        if dry_run:
            self.stdout.write(f"{count} finished download record(s) would be removed.")
            return ""
        downloads.delete()  # their DownloadAttempt rows go with them
        self.stdout.write(
            self.style.SUCCESS(
                f"Removed {count} finished download record(s) older than {older_than:g} day(s)."
            )
        )
        return ""
