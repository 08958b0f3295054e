"""Routes: one public model name served by several profiles (servers/gateway/routing.py).
Real model servers, gunicorn from the Procfile and the official `openai` client where requests
run in parallel; the form's rules and the group rule in process."""

from __future__ import annotations

import os
import signal
import threading

import openai
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.api_keys import create_api_key
from servers.models import Route, ServerInstance, State, UsageRecord
from servers.route_forms import RouteForm
from servers.sharing import admission
from tests.servers.helpers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

HI = [{"role": "user", "content": "hi"}]
ENDLESS = {"logit_bias": {"0": -100, "2": -100}}  # the tiny model never ends its reply


def make_route(name, profiles, owner, policy=Route.Policy.LEAST_BUSY) -> Route:
    route = Route.objects.create(name=name, policy=policy, owner=owner)
    for position, profile in enumerate(profiles):
        route.members.create(profile=profile, position=position)
    return route


def served_by(route: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in UsageRecord.objects.filter(route_name=route, status="ok"):
        counts[record.profile_name] = counts.get(record.profile_name, 0) + 1
    return counts


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, says",
    [
        ("", "Give the route a name"),
        ("x" * 65, "64 characters or fewer"),
        ("qwen 3", "not ' '"),
        ("qwen<script>", "not '<'"),
        ("ﬁne", "letters, digits and"),
        ("caf\u00e9", "letters, digits and"),
        ("-:/", "at least one letter or digit"),
        ("bad\x00name", "not U+0000"),
        ("Tiny", "A server profile is already called “Tiny” (tiny)"),
        ("TINY", "A server profile is already called"),
        ("Taken", "There is already a route called “taken”"),
    ],
)
def test_hostile_and_clashing_route_names_are_refused_saying_why(name, says, make_profile, member):
    profile = make_profile("Tiny")
    Route.objects.create(name="taken", owner=member)
    form = RouteForm({"name": name, "policy": "least-busy", "member_1": profile.slug}, user=member)
    assert not form.is_valid()
    assert says in " ".join(form.errors["name"])


def test_a_route_needs_a_member_once_each_from_the_profiles_its_editor_sees(
    make_profile, member, make_user
):
    a, b = make_profile("A"), make_profile("B")
    lab = Group.objects.create(name="Lab")
    hidden = make_profile("Hidden")
    hidden.allowed_groups.add(lab)
    data = {"name": "team/coder:latest", "policy": "ordered"}
    assert "Pick at least one" in str(RouteForm(data, user=member).errors)
    twice = RouteForm({**data, "member_1": a.slug, "member_2": a.slug}, user=member)
    assert "once" in str(twice.errors)
    assert "not yours to see" in str(RouteForm({**data, "member_1": "hidden"}, user=member).errors)
    form = RouteForm({**data, "member_1": b.slug, "member_2": a.slug}, user=member)
    assert form.is_valid(), form.errors
    route = form.save(commit=False)
    route.owner = member
    route.save()
    form.save_members(route)
    assert [m.profile.slug for m in route.members.all()] == ["b", "a"]


def test_the_owner_or_an_admin_edits_a_route_and_every_member_sees_it(
    make_profile, member, member_client, make_user, admin_member
):
    profile = make_profile("Tiny")
    route = make_route("qwen3-8b", [profile], owner=make_user("owner@example.com"))
    assert "qwen3-8b" in member_client.get(reverse("servers:routes")).content.decode()
    edit = reverse("servers:route-edit", args=[route.pk])
    assert member_client.get(edit).status_code == 403
    assert member_client.post(reverse("servers:route-delete", args=[route.pk])).status_code == 403
    admin = Client()
    admin.force_login(admin_member)
    response = admin.post(edit, {"name": "qwen3-8b", "policy": "ordered", "member_1": "tiny"})
    assert response.status_code == 302
    assert Route.objects.get(pk=route.pk).policy == "ordered"


# --- serving ------------------------------------------------------------------------------------


def test_ordered_falls_back_when_the_first_member_is_stopped_and_may_not_start(
    mlx_server, serve_profile, make_profile, member, api_key
):
    first = make_profile("First", allow_on_demand=False)  # stopped, and not started on demand
    second = serve_profile(mlx_server, "Second")
    make_route("tiny", [first, second], owner=member, policy=Route.Policy.ORDERED)
    api = Client(headers={"Authorization": f"Bearer {api_key}"})
    body = {"model": "tiny", "messages": HI, "max_tokens": 4}
    answer = api.post("/v1/chat/completions", body, content_type="application/json")
    assert answer.status_code == 200 and answer.json()["model"] == "tiny"
    (record,) = UsageRecord.objects.all()
    assert (record.route_name, record.profile_id) == ("tiny", second.pk)

    listed = {m["id"]: m for m in api.get("/v1/models").json()["data"]}
    assert listed["tiny"]["route"] == {"policy": "ordered", "members": ["first", "second"]}
    assert listed["tiny"]["status"] == "running"


def test_a_route_to_profiles_a_member_s_groups_do_not_allow_is_not_there_for_them(
    mlx_server, serve_profile, member, make_user, api_key
):
    lab = Group.objects.create(name="Lab")
    secret = serve_profile(mlx_server, "Secret")
    secret.allowed_groups.add(lab)
    make_route("lab-model", [secret], owner=member)
    insider = make_user("insider@example.com")
    insider.groups.add(lab)
    body = {"model": "lab-model", "messages": HI, "max_tokens": 4}
    for key, allowed in ((api_key, False), (create_api_key(insider, "k").secret, True)):
        api = Client(headers={"Authorization": f"Bearer {key}"})
        answer = api.post("/v1/chat/completions", body, content_type="application/json")
        assert answer.status_code == (200 if allowed else 404)
        if not allowed:
            assert answer.json()["error"]["code"] == "model_not_found"
        listed = {m["id"] for m in api.get("/v1/models").json()["data"]}
        assert ("lab-model" in listed) is allowed


@pytest.mark.slow
def test_least_busy_spreads_requests_and_a_killed_member_fails_no_request_not_yet_streaming(
    mlx_server_factory, serve_profile, member, api_key, portals
):
    server_a, server_b = mlx_server_factory("text"), mlx_server_factory("text")
    a = serve_profile(server_a, "Alpha")
    b = serve_profile(server_b, "Beta")
    make_route("tiny", [a, b], owner=member)
    portal = portals(WEB_THREADS="32")
    client = portal.openai(api_key)

    for _ in range(20):  # one after another: the members take turns
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=4)
    assert served_by("tiny") == {"Alpha": 10, "Beta": 10}

    # Many streams at once; Alpha's server is killed while some of them stream from it.
    outcomes: list[tuple[int, Exception | None]] = []

    def stream() -> None:
        chunks = 0
        try:
            for _chunk in client.chat.completions.create(  # long enough to be killed in
                model="tiny", messages=HI, max_tokens=400, stream=True, extra_body=ENDLESS
            ):
                chunks += 1
            outcomes.append((chunks, None))
        except openai.APIError as error:
            outcomes.append((chunks, error))

    threads = [threading.Thread(target=stream) for _ in range(16)]
    for thread in threads:
        thread.start()
    wait_for(lambda: admission.queues([a.pk])[a.pk].in_flight >= 1, timeout=60, every=0.02)
    os.kill(server_a.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == 16
    failed_before_streaming = [error for chunks, error in outcomes if error and not chunks]
    assert failed_before_streaming == []
    # The kill did hit Alpha's requests (they are recorded as failed there, and retried).
    assert UsageRecord.objects.filter(route_name="tiny", profile=a, status="error").exists()

    finished = sum(1 for _, error in outcomes if error is None)
    ok_streams = UsageRecord.objects.filter(route_name="tiny", stream=True, status="ok")
    wait_for(lambda: ok_streams.count() == finished, timeout=30, what="the streams' records")
    before = served_by("tiny").get("Beta", 0)
    for _ in range(6):  # later requests go to the member still alive
        answer = client.chat.completions.create(model="tiny", messages=HI, max_tokens=4)
        assert answer.model == "tiny"
    assert served_by("tiny")["Beta"] == before + 6
    ServerInstance.objects.filter(profile=a).update(state=State.FAILED)  # as the supervisor would


def test_the_usage_page_filters_by_route_or_by_model(make_profile, member, member_client):
    alpha, beta = make_profile("Alpha"), make_profile("Beta")
    for profile, route in ((alpha, "tiny"), (beta, "tiny"), (beta, ""), (alpha, "other")):
        UsageRecord.objects.create(
            user=member, profile=profile, profile_name=profile.name, source="api",
            endpoint="chat/completions", status="ok", route_name=route,
        )  # fmt: skip
    usage = reverse("servers:usage")

    def total(**query) -> str:
        html = member_client.get(usage, query).content.decode()
        return html.split('data-testid="total-requests">')[1].split("<")[0]

    assert total() == "4"
    assert total(route="tiny") == "2"
    assert total(model="Beta") == "2"
    assert total(route="tiny", model="Beta") == "1"
    refused = member_client.get(usage, {"route": "<script>"}).content.decode()
    assert "No usage is recorded under that name" in refused and total(route="nope") == "4"


def test_the_chat_offers_routes_and_sends_to_the_member_the_route_picks(
    mlx_server, serve_profile, make_profile, member, member_client
):
    first = make_profile("First", allow_on_demand=False)  # stopped: the route skips it
    second = serve_profile(mlx_server, "Second")
    make_route("tiny-chat", [first, second], owner=member, policy=Route.Policy.ORDERED)
    page = member_client.get(reverse("servers:chat")).content.decode()
    assert '<optgroup label="Routes">' in page and 'value="route:tiny-chat"' in page
    panel = member_client.get(reverse("servers:chat"), {"profile": "route:tiny-chat"})
    assert 'value="route:tiny-chat" selected' in panel.content.decode()

    stream = reverse("servers:chat-stream")
    response = member_client.post(
        stream, {"profile": "route:tiny-chat", "message": "Hi", "max_tokens": "8"}
    )
    assert b"event: done" in b"".join(response.streaming_content)
    (record,) = UsageRecord.objects.filter(source="chat")
    assert (record.route_name, record.profile_id) == ("tiny-chat", second.pk)
    unknown = member_client.post(stream, {"profile": "route:nope", "message": "Hi"})
    assert unknown.status_code == 400

    # A member that says it runs but does not answer is skipped for the next one.
    dead = make_profile("Dead")
    ServerInstance.objects.update_or_create(
        profile=dead, defaults={"state": State.RUNNING, "port": dead.port}
    )  # nothing listens on its port
    make_route("fallback", [dead, second], owner=member, policy=Route.Policy.ORDERED)
    response = member_client.post(
        stream, {"profile": "route:fallback", "message": "Hi", "max_tokens": "8"}
    )
    assert b"event: done" in b"".join(response.streaming_content)
    served = UsageRecord.objects.filter(route_name="fallback").values_list("profile_id", "status")
    assert sorted(served) == sorted([(dead.pk, "error"), (second.pk, "ok")])


def test_with_no_member_running_the_route_starts_the_one_whose_host_has_most_free_memory(
    make_profile, member
):
    from django.utils import timezone

    from models_catalog.models import Host
    from servers.gateway import routing

    roomy = Host.objects.create(name="roomy", memory_available=64 * 2**30,
                                last_heartbeat=timezone.now())  # fmt: skip
    tight = Host.objects.create(name="tight", memory_available=8 * 2**30,
                                last_heartbeat=timezone.now())  # fmt: skip
    small = make_profile("Small", host=tight)
    big = make_profile("Big", host=roomy)
    manual = make_profile("Manual", host=roomy, allow_on_demand=False)
    route = make_route("spread", [small, manual, big], owner=member)
    target = routing.resolve("spread", member, frozenset())
    # Stopped members that may start on demand, the roomiest host first; the one that may not
    # start comes last (its refusal is the answer only when every other member failed).
    assert [p.slug for p in target.profiles] == ["big", "small", "manual"]
    assert target.route == route


def test_a_route_mixing_engines_sends_each_endpoint_only_to_its_members_and_chat_offers_it(
    mlx_server, embed_server, serve_profile, member, member_client, live_server, api_key
):
    """A route may mix engines: chat goes only to its chat servers, embeddings only to its
    embeddings servers, whatever their order; the chat's picker offers a route only with a
    member that chats (routing.serving, engines.serves)."""
    from servers.models import Engine

    vectors = serve_profile(embed_server, "Vectors", engine=Engine.EMBEDDINGS)
    chat = serve_profile(mlx_server, "Chatty")
    # Ordered: the first member is the one to use, so the wrong engine would come first.
    make_route("chat-first-vectors", [vectors, chat], owner=member, policy=Route.Policy.ORDERED)
    make_route("vectors-last", [chat, vectors], owner=member, policy=Route.Policy.ORDERED)
    make_route("only-vectors", [vectors], owner=member)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0)

    listed = {m.id: m.model_extra for m in client.models.list().data}
    assert listed["chat-first-vectors"]["kinds"] == ["embeddings", "text"]
    assert listed["only-vectors"]["kinds"] == ["embeddings"]
    answer = client.chat.completions.create(model="chat-first-vectors", messages=HI, max_tokens=4)
    assert answer.model == "chat-first-vectors" and answer.choices[0].message.content
    embedded = client.embeddings.create(model="vectors-last", input="a", encoding_format="float")
    assert embedded.data[0].embedding
    served = UsageRecord.objects.order_by("pk").values_list("endpoint", "profile_id", "status")
    assert list(served) == [("chat/completions", chat.pk, "ok"), ("embeddings", vectors.pk, "ok")]
    with pytest.raises(openai.BadRequestError, match="No server of the route 'only-vectors' chats"):
        client.chat.completions.create(model="only-vectors", messages=HI, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="route 'only-vectors' completes text"):
        client.completions.create(model="only-vectors", prompt="hi", max_tokens=4)
    assert UsageRecord.objects.count() == 2  # refused before any member was called

    page = member_client.get(reverse("servers:chat")).content.decode()
    assert 'value="route:chat-first-vectors"' in page and 'value="route:vectors-last"' in page
    assert "route:only-vectors" not in page
    stream = reverse("servers:chat-stream")
    refused = member_client.post(stream, {"profile": "route:only-vectors", "message": "Hi"})
    assert refused.status_code == 400
    response = member_client.post(
        stream, {"profile": "route:chat-first-vectors", "message": "Hi", "max_tokens": "8"}
    )
    assert b"event: done" in b"".join(response.streaming_content)
    (record,) = UsageRecord.objects.filter(source="chat")
    assert (record.route_name, record.profile_id) == ("chat-first-vectors", chat.pk)


def test_the_chat_picker_reads_its_routes_in_one_query_however_many(
    make_profile, member, member_client, make_user
):
    """The picker offers the routes with a chat member the user may talk to, read in one query:
    the page's queries do not grow with the routes (they grew by two a route before)."""
    chat = make_profile("Chat")
    vectors = make_profile("Vectors", engine="embeddings")
    theirs = make_profile("Theirs")
    theirs.allowed_groups.add(Group.objects.create(name="Others"))
    make_route("team/chat", [vectors, chat], owner=member)

    def queries() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as captured:
            page = member_client.get(reverse("servers:chat")).content.decode()
        return len(captured), page

    one, page = queries()
    assert 'value="route:team/chat"' in page
    for n in range(6):
        make_route(f"more-{n}", [chat], owner=member)
    make_route("only-vectors", [vectors], owner=member)
    make_route("not-mine", [theirs], owner=make_user("owner@example.com"))
    many, page = queries()
    assert many == one
    assert page.count('value="route:more-') == 6
    assert "route:only-vectors" not in page and "route:not-mine" not in page
