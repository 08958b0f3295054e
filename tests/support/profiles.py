"""A profile whose instance is an already running real server (a `RunningServer` of the
harness): what the supervisor records once it has started one. Tests share one real server per
module this way (tests/servers/conftest.py `serve_profile`, the browser tests)."""

from __future__ import annotations

from django.utils import timezone
from django.utils.text import slugify

from models_catalog.models import Host
from servers.models import ServerInstance, ServerProfile, State


def running_profile(server, owner, name: str = "Tiny", **fields) -> ServerProfile:
    fields.setdefault("host", Host.objects.this_machine())
    fields.setdefault("model_id", "mlx-community/tiny-text-test")
    profile = ServerProfile.objects.create(
        name=name, slug=slugify(name), port=server.port, owner=owner, **fields
    )
    ServerInstance.objects.update_or_create(
        profile=profile,
        defaults={"state": State.RUNNING, "port": server.port, "pid": server.pid,
                  "started_at": timezone.now(), "ready_at": timezone.now()},
    )  # fmt: skip
    return profile
