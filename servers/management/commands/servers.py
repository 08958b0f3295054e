"""`manage.py servers [--host NAME]`: every server with its state, per host."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from models_catalog.models import Host
from servers.management.commands.hosts import _table
from servers.operations import profiles_on


class Command(BaseCommand):
    help = "List the model servers with their state, per host."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", help="Only this host's servers.")

    def handle(self, *args, host: str | None = None, **options) -> str:
        target = None
        if host:
            target = Host.objects.filter(name=host).first()
            if target is None:
                raise CommandError(f"No host named {host!r}; see `manage.py hosts`.")
        lines = [("HOST", "SERVER", "STATE", "PORT", "PID", "MODEL")]
        for profile in profiles_on(target):
            instance = getattr(profile, "instance", None)
            shown = profile.shown_state
            if shown == "unknown" and instance is not None:
                shown = f"unknown (host offline; last known {instance.state})"
            lines.append(
                (
                    profile.host.name,
                    profile.slug,
                    shown,
                    str(profile.port),
                    str(instance.pid) if instance and instance.pid and instance.is_active else "-",
                    profile.model_id,
                )
            )
        if len(lines) == 1:
            self.stdout.write("No servers" + (f" on {host}." if host else "."))
            return ""
        self.stdout.write(_table(lines))
        return ""
