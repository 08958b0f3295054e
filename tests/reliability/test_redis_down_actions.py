"""With Redis down, what needs a worker says so: a start, a restart, a stop, an on-demand start
from the gateway and the operators' `stop_servers` each get a message, never a 500, and a start
that nothing will carry out is not left "starting" forever (the outside attack's finding 8:
`services.request_start` answered 500). The Redis server is the test's own, stopped for real."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from servers.models import ServerInstance, State

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SAYS = "could not be queued: Redis (the task queue) is not answering"


@pytest.fixture
def redis_down(own_redis):
    own_redis.stop()
    assert not own_redis.answers()
    return own_redis


def _instance(profile) -> ServerInstance:
    return ServerInstance.objects.get(profile=profile)


@pytest.mark.parametrize("action", ["server-start", "server-restart"])
def test_a_start_while_redis_is_down_says_so_and_is_not_left_starting(
    redis_down, served_model, make_profile, member, action
):
    profile = make_profile("Tiny", model_id=served_model)
    client = Client()
    client.force_login(member)
    response = client.post(
        reverse(f"servers:{action}", args=[profile.slug]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert SAYS in response.content.decode()
    instance = _instance(profile)
    assert instance.state == State.FAILED and instance.last_error_kind == "queue"
    assert instance.desired_state == ServerInstance.Desired.STOPPED  # no automatic restart
    assert SAYS in instance.last_error


def test_a_stop_while_redis_is_down_says_so(redis_down, served_model, make_profile, member):
    profile = make_profile("Tiny", model_id=served_model)
    ServerInstance.objects.update_or_create(
        profile=profile,
        defaults={"state": State.RUNNING, "port": profile.port, "ready_at": timezone.now()},
    )
    client = Client()
    client.force_login(member)
    response = client.post(reverse("servers:server-stop", args=[profile.slug]))
    assert response.status_code in (200, 302)
    followed = client.get(reverse("servers:list"))
    assert "stop could not be queued" in (response.content + followed.content).decode()
    assert _instance(profile).state == State.STOPPING  # finished once beat runs again
    with pytest.raises(CommandError, match="stop could not be queued"):
        ServerInstance.objects.filter(profile=profile).update(state=State.RUNNING)
        call_command("stop_servers", "--host", profile.host.name)


def test_an_on_demand_start_while_redis_is_down_is_a_503_with_the_reason(
    redis_down, served_model, make_profile, api_key
):
    make_profile("Tiny", model_id=served_model, allow_on_demand=True)
    client = Client(headers={"Authorization": f"Bearer {api_key}"})
    response = client.post(
        "/v1/chat/completions",
        data={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "server_unavailable" and SAYS in error["message"]
