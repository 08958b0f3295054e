"""`manage.py stop_servers --host NAME`: stop every server on a host (e.g. before maintenance).

The stops run on the host's worker; they are not restarted automatically afterwards.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from models_catalog.models import Host
from servers.operations import stop_all
from servers.supervision.lifecycle import QueueUnavailable


class Command(BaseCommand):
    help = "Stop all model servers on a host."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", required=True, help="The host's name (see `hosts`).")

    def handle(self, *args, host: str, **options) -> str:
        target = Host.objects.filter(name=host).first()
        if target is None:
            raise CommandError(f"No host named {host!r}; see `manage.py hosts`.")
        try:
            stopped = stop_all(target, reason="Stopped by an operator (manage.py stop_servers)")
        except QueueUnavailable as exc:
            raise CommandError(str(exc)) from None
        if not stopped:
            self.stdout.write(f"No server is running on {host}.")
            return ""
        note = "" if target.is_online else f" (host {host} is offline: they stop when it returns)"
        self.stdout.write(
            self.style.SUCCESS(
                f"Stopping {len(stopped)} server(s) on {host}: {', '.join(stopped)}{note}."
            )
        )
        return ""
