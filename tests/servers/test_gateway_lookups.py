"""The look-ups before a /v1 request's first byte are cheap (common/rows.py builds the rows it
saw last time by copying them) yet never stale: what the database says at the request is what
counts. A key revoked, a user disabled or a server stopped right after a successful request is
refused at the very next one, in the same gunicorn process and thread — the one that built the
rows of the request before — with the real `openai` client and a real mlx_lm.server."""

from __future__ import annotations

import openai
import pytest

from accounts import approval
from accounts.api_keys import create_api_key, revoke_api_key
from common.rows import first_row
from servers.models import ServerInstance, ServerProfile, State

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

HI = [{"role": "user", "content": "hi"}]


def ask(client: openai.OpenAI, model: str = "tiny"):
    return client.chat.completions.create(model=model, messages=HI, max_tokens=4)


@pytest.fixture
def one_thread(portals):
    """gunicorn as the Procfile starts it, with one worker of one thread: every request is
    served by the same thread, whose database connection remembers the rows it built."""
    return portals(WEB_WORKERS="1", WEB_THREADS="1")


def test_a_revoked_key_is_refused_at_the_very_next_request_after_a_successful_one(
    mlx_server, serve_profile, member, one_thread
):
    serve_profile(mlx_server, "Tiny")
    api_key = create_api_key(member, "soon revoked")
    client = one_thread.openai(api_key.secret)
    assert ask(client).choices[0].message.content
    assert ask(client).choices[0].message.content  # the key's row as last time: copied

    revoke_api_key(api_key.api_key)
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(client)
    assert refused.value.body["code"] == "invalid_api_key"
    assert "revoked" in refused.value.body["message"]


def test_a_disabled_user_is_refused_at_the_very_next_request_after_a_successful_one(
    mlx_server, serve_profile, member, admin_member, one_thread
):
    serve_profile(mlx_server, "Tiny")
    client = one_thread.openai(create_api_key(member, "key").secret)
    assert ask(client).choices[0].message.content
    assert ask(client).choices[0].message.content

    approval.disable([member], by=admin_member)  # which revokes their keys too
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(client)
    assert refused.value.body["code"] == "invalid_api_key"
    assert "disabled" in refused.value.body["message"]


def test_a_server_stopped_after_a_successful_request_is_seen_stopped_at_the_next(
    mlx_server, serve_profile, member, one_thread
):
    serve_profile(mlx_server, "Tiny", allow_on_demand=False)
    client = one_thread.openai(create_api_key(member, "key").secret)
    assert ask(client).choices[0].message.content
    assert ask(client).choices[0].message.content

    ServerInstance.objects.filter(profile__slug="tiny").update(state=State.STOPPED)
    with pytest.raises(openai.APIStatusError) as refused:
        ask(client)
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "server_not_running"


def test_each_look_up_gets_its_own_instances_however_often_its_row_is_read(make_profile, member):
    """The copies are the caller's: changing one (a JSON field's dict too) changes neither the
    row remembered nor the next copy, and a changed row is built anew."""
    made = make_profile("Copies", chat_template_args={"enable_thinking": False})
    first = first_row(ServerProfile, {"slug": made.slug}, related=("host", "instance"))
    second = first_row(ServerProfile, {"slug": made.slug}, related=("host", "instance"))
    assert first is not None and second is not None and first is not second
    assert first.host is not second.host
    first.name = "changed here only"
    first.chat_template_args["enable_thinking"] = True
    third = first_row(ServerProfile, {"slug": made.slug}, related=("host", "instance"))
    assert third is not None
    assert third.name == "Copies" and third.chat_template_args == {"enable_thinking": False}

    ServerProfile.objects.filter(pk=made.pk).update(name="Renamed")
    fourth = first_row(ServerProfile, {"slug": made.slug}, related=("host", "instance"))
    assert fourth is not None and fourth.name == "Renamed"
