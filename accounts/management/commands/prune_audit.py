"""`manage.py prune_audit --older-than DAYS [--dry-run]`

The only way entries leave the audit log: removes those older than DAYS days (a whole number,
1 or more) and records, in the same transaction, that it did (an "Audit log pruned" entry by
"system: operator command", with how many and the cut-off).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import log as audit


class Command(BaseCommand):
    help = "Remove audit log entries older than DAYS days (and record that it was done)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true", help="Only count them.")

    def handle(self, *args, older_than: str, dry_run: bool = False, **options) -> str:
        try:
            days = int(older_than)
        except ValueError:
            raise CommandError(
                f"--older-than {older_than!r}: give a whole number of days, e.g. 365."
            ) from None
        try:
            count = audit.prune(days, dry_run=dry_run)
        except ValueError as exc:
            raise CommandError(f"--older-than {older_than}: {exc}") from None
        if dry_run:
            self.stdout.write(f"{count} audit entr{'y' if count == 1 else 'ies'} would be removed.")
        else:
            self.stdout.write(
                f"Removed {count} audit entr{'y' if count == 1 else 'ies'} older than {days} "
                "day(s); the removal is recorded in the audit log."
            )
        return ""
