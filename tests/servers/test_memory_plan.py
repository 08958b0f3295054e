"""A host's memory plan (servers/memory_plan.py) with real parts: a Celery worker starting real
tiny `mlx_lm.server`s, the database, Redis's sharing counts. The host's limit is set low with
an admin's cap, so one tiny server fits and two do not."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from django.urls import reverse

from accounts.audit.models import AuditEntry
from accounts.teams import NO_LIMITS
from models_catalog.models import Host
from servers import memory_plan
from servers.models import State
from servers.sharing import admission
from servers.supervision import lifecycle
from tests.servers.helpers import wait_for

pytestmark = pytest.mark.usefixtures("clean_queues")

MB = 1024 * 1024


@pytest.fixture
def first_running(served_model, celery_worker, make_profile, server_reaper):
    """“First” started through the worker and running; the host's plan set to fit it and
    not one more of the same (an admin's cap of 1.5 times its need)."""
    admission.forget_everything()
    first = make_profile("First", model_id=served_model)
    lifecycle.request_start(first, room=memory_plan.make_room)
    instance = first.get_instance()
    wait_for(lambda: (instance.refresh_from_db(), instance.state)[1] == State.RUNNING, 120,
             what="First running")  # fmt: skip
    server_reaper((instance.pid, instance.process_create_time))
    need = memory_plan.profile_need(first)
    assert need is not None and need.kv_cache and need.weights > 0
    Host.objects.filter(pk=first.host_id).update(memory_cap_mb=math.ceil(need.total * 1.5 / MB))
    yield first
    admission.forget_everything()


def test_under_refuse_a_second_start_is_refused_naming_what_uses_the_memory(
    first_running, make_profile, served_model, member_client
):
    second = make_profile("Second", model_id=served_model)
    with pytest.raises(lifecycle.StartRefused) as refused:
        lifecycle.request_start(second, room=memory_plan.make_room)
    message = str(refused.value)
    need = memory_plan.describe(memory_plan.profile_need(first_running))
    assert "Not enough memory on local for “Second”" in message
    assert f"“First” {need.split(':')[0].removeprefix('about ')} (running)" in message
    assert "an admin's cap on the Hosts page" in message
    second.instance.refresh_from_db()
    assert (second.instance.state, second.instance.last_error_kind) == (State.STOPPED, "memory")
    first_running.instance.refresh_from_db()
    assert first_running.instance.state == State.RUNNING
    # The page's Start says the same in the tile.
    response = member_client.post(
        reverse("servers:server-start", args=[second.slug]), headers={"HX-Request": "true"}
    )
    assert "Not enough memory on local for “Second”" in response.content.decode()


def test_under_evict_idle_the_idle_server_is_stopped_to_make_room_but_never_one_in_flight(
    first_running, make_profile, served_model, member, member_client, server_reaper
):
    Host.objects.filter(pk=first_running.host_id).update(
        memory_policy=Host.MemoryPolicy.EVICT_IDLE, evict_idle_minutes=0
    )
    second = make_profile("Second", model_id=served_model)
    # A request of First's in flight through the portal: First is not stopped for Second.
    ticket = admission.enter(member, first_running, NO_LIMITS)
    with pytest.raises(lifecycle.StartRefused) as refused:
        lifecycle.request_start(second, room=memory_plan.make_room)
    assert "“First” has 1 request in flight" in str(refused.value)
    first_running.instance.refresh_from_db()
    assert first_running.instance.state == State.RUNNING

    # Once it is done, First is idle: the worker stops it, then starts Second.
    ticket.release()
    lifecycle.request_start(second, room=memory_plan.make_room)
    second_instance = second.get_instance()
    wait_for(
        lambda: (second_instance.refresh_from_db(), second_instance.state)[1] == State.RUNNING,
        120, what="Second running",
    )  # fmt: skip
    server_reaper((second_instance.pid, second_instance.process_create_time))  # not left running
    first = first_running.instance
    first.refresh_from_db()
    assert first.state == State.STOPPED
    assert first.desired_state == "stopped"  # not restarted by the supervisor
    assert first.reason.startswith("Stopped to make room for “Second” on local: idle for")
    entry = AuditEntry.objects.get(action="server.stop", object_label="First")
    assert entry.actor_label == "system: memory plan" and entry.detail == first.reason
    assert first.reason in Path(first.log_path).read_text()  # its log says so
    tiles = member_client.get(reverse("servers:list")).content.decode()
    assert "Stopped to make room for “Second”" in tiles
