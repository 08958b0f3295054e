"""Checks before a start: the model on disk, the port free, enough memory."""

import socket

import pytest
from django.urls import reverse

from servers.models import State
from servers.supervision import lifecycle

pytestmark = pytest.mark.usefixtures("clean_queues")


def test_a_missing_model_is_refused_with_a_clear_message(hf_cache, make_profile):
    profile = make_profile("Ghost", model_id="acme/not-downloaded")
    with pytest.raises(lifecycle.StartRefused) as refused:
        lifecycle.request_start(profile)
    assert "acme/not-downloaded is not on this host's disk" in str(refused.value)
    assert "Download it from the catalog" in str(refused.value)
    instance = profile.get_instance()
    instance.refresh_from_db()
    assert instance.state == State.STOPPED
    assert instance.last_error_kind == "model"


def test_a_busy_port_is_refused_naming_the_port_and_its_holder(local_models, make_profile):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        profile = make_profile("Clash", port=port)
        with pytest.raises(lifecycle.StartRefused) as refused:
            lifecycle.request_start(profile)
    message = str(refused.value)
    assert f"Port {port} is already in use by python" in message
    assert f"(pid {__import__('os').getpid()})" in message
    assert "give the profile another port" in message


def test_not_enough_memory_is_refused_unless_an_admin_overrides(
    local_models, make_profile, settings, admin_client
):
    settings.SERVER_MEMORY_HEADROOM = 1e15  # a 1 KiB model "needs" more than any machine has
    profile = make_profile("Big")
    with pytest.raises(lifecycle.StartRefused) as refused:
        lifecycle.request_start(profile)
    assert "of memory" in str(refused.value) and "an admin can start it anyway" in str(
        refused.value
    )
    page = admin_client.get(reverse("servers:list")).content.decode()
    assert "Start anyway" in page
    response = admin_client.post(
        reverse("servers:server-start", args=[profile.slug]),
        {"override_memory": "1"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    profile.instance.refresh_from_db()
    assert profile.instance.state == State.STARTING
    assert profile.instance.last_error == ""


def test_the_start_button_shows_the_refusal_in_the_tile(hf_cache, make_profile, member_client):
    profile = make_profile("Ghost", model_id="acme/not-downloaded")
    response = member_client.post(
        reverse("servers:server-start", args=[profile.slug]), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="server-{profile.slug}"' in html and "<nav" not in html
    assert "is not on this host&#x27;s disk" in html


def test_start_of_a_running_server_is_a_no_op(local_models, make_profile):
    profile = make_profile()
    instance = profile.get_instance()
    instance.transition(State.STARTING, "test")
    instance.transition(State.RUNNING, "test")
    assert lifecycle.request_start(profile).state == State.RUNNING


def test_stop_of_a_failed_server_cancels_its_restart(local_models, make_profile, member_client):
    profile = make_profile()
    instance = profile.get_instance()
    instance.transition(State.STARTING, "test", desired_state="running")
    instance.transition(State.FAILED, "boom")
    member_client.post(reverse("servers:server-stop", args=[profile.slug]))
    instance.refresh_from_db()
    assert (instance.state, instance.desired_state) == (State.STOPPED, "stopped")
