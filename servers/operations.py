"""What the operators' commands (`hosts`, `servers`, `stop_servers`) and the Hosts page show
and do: plain functions over the database, so a page and a command never disagree."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q

from accounts.audit import log as audit
from models_catalog.models import Host
from servers import memory_plan
from servers.models import ServerProfile, State
from servers.supervision import lifecycle


@dataclass(frozen=True)
class HostRow:
    host: Host
    servers: int  # profiles on the host
    running: int  # of which running (as last known)
    plan: memory_plan.Plan  # its memory plan now

    @property
    def state(self) -> str:
        return "online" if self.host.is_online else "offline"


def host_rows() -> list[HostRow]:
    """Every host with its number of servers and running servers and its memory plan."""
    hosts = Host.objects.annotate(
        n_servers=Count("server_profiles", distinct=True),
        n_running=Count(
            "server_profiles", filter=Q(server_profiles__instance__state=State.RUNNING)
        ),
    ).order_by("name")
    return [HostRow(h, h.n_servers, h.n_running, memory_plan.host_plan(h)) for h in hosts]


def profiles_on(host: Host | None = None):
    profiles = ServerProfile.objects.select_related("host", "instance", "owner").order_by(
        "host__name", "name"
    )
    if host is not None:
        profiles = profiles.filter(host=host)
    return profiles


def stop_all(host: Host, *, reason: str) -> list[str]:
    """Ask every server on `host` that may be running to stop; returns their slugs.

    The stops run on the host's worker (its queue); an offline host stops them when its worker
    comes back, and nothing restarts them (their desired state is now "stopped").
    """
    stopped = []
    for profile in profiles_on(host):
        instance = profile.get_instance()
        if instance.state in (State.STOPPED, State.STOPPING):
            continue
        lifecycle.request_stop(profile, reason=reason, actor=audit.OPERATOR)
        stopped.append(profile.slug)
    return stopped
