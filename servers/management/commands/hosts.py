"""`manage.py hosts`: every host with its state, heartbeat age, memory, disk and servers."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.template.defaultfilters import filesizeformat

from servers.operations import host_rows


def size(value: int) -> str:
    return filesizeformat(value).replace("\xa0", " ")


def age_label(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class Command(BaseCommand):
    help = "List the portal's hosts: state, last heartbeat, memory, disk, versions, servers."

    def handle(self, *args, **options) -> str:
        rows = host_rows()
        if not rows:
            self.stdout.write("No hosts yet: start a worker (it registers its host).")
            return ""
        header = ("HOST", "STATE", "HEARTBEAT", "MEMORY FREE/TOTAL", "DISK FREE", "PLATFORM",
                  "MLX", "SERVERS")  # fmt: skip
        lines = [header]
        for row in rows:
            host = row.host
            lines.append(
                (
                    host.name,
                    row.state,
                    age_label(host.heartbeat_age),
                    f"{size(host.memory_available)}/{size(host.memory_total)}",
                    size(host.disk_free),
                    host.platform or "-",
                    f"{host.mlx_version or '-'} / mlx-lm {host.mlx_lm_version or '-'}",
                    f"{row.servers} ({row.running} running)",
                )
            )
        self.stdout.write(_table(lines))
        return ""


def _table(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
