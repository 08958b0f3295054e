"""Sharing one host, as members meet it: limits and the fair queue through gunicorn (the
Procfile's command) with a real model server and the official `openai` client; who sees which
profile in the pages, the chat and /v1. The rules themselves, in process: test_sharing_rules.py.
Every wait is on a condition (the portal's queue in Redis, a usage record), never on a time."""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import openai
import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from accounts.api_keys import create_api_key
from accounts.models import Limits
from servers.models import ServerProfile, UsageRecord, may_see
from servers.sharing import admission
from servers.tiles import tiles_for
from tests.servers.helpers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

HI = [{"role": "user", "content": "hi"}]
ENDLESS = {"logit_bias": {"0": -100, "2": -100}}  # the tiny model never ends its reply
LONG = 60_000


def ask(client: openai.OpenAI, model: str = "tiny", **extra):
    return client.chat.completions.create(model=model, messages=HI, max_tokens=8, **extra)


# --- limits -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_user_over_tokens_per_day_gets_429_insufficient_quota_kept_across_restart_and_flushdb(
    mlx_server, serve_profile, member, make_user, portals
):
    serve_profile(mlx_server, "Tiny")
    Limits.objects.create(user=member, tokens_per_day=40)
    key = create_api_key(member, "quota").secret
    colleague = create_api_key(make_user("colleague@example.com"), "other").secret
    portal = portals(WEB_WORKERS="1", WEB_THREADS="4")
    client = portal.openai(key)

    def refused() -> openai.RateLimitError | None:
        try:
            ask(client)
        except openai.RateLimitError as error:
            return error
        return None

    error = wait_for(refused, timeout=120, every=0, what="the quota to be used up")
    used = sum(r.prompt_tokens + r.completion_tokens for r in UsageRecord.objects.filter(
        user=member, status="ok"))  # fmt: skip
    assert used >= 40
    assert error.status_code == 429
    assert error.body["type"] == "insufficient_quota" and error.body["code"] == "tokens_per_day"
    assert "40 tokens per day (your own limit)" in error.body["message"]
    assert f"{used:,} used today" in error.body["message"]
    assert 0 < int(error.response.headers["Retry-After"]) <= 86400
    assert ask(portal.openai(colleague)).choices[0].message.content  # another user: unaffected

    portal.restart()  # a new web process: the count is Redis's, not the process's
    with pytest.raises(openai.RateLimitError):
        ask(portal.openai(key))
    admission._redis.client().flushdb()  # Redis lost it all: rebuilt from the usage records
    with pytest.raises(openai.RateLimitError) as again:
        ask(portal.openai(key))
    assert f"{used:,} used today" in again.value.body["message"]

    Limits.objects.filter(user=member).update(tokens_per_day=None)  # next request, no restart
    assert ask(portal.openai(key)).choices[0].message.content


@pytest.mark.slow
def test_requests_per_minute_are_counted_across_web_processes(
    mlx_server, serve_profile, member, portals
):
    serve_profile(mlx_server, "Tiny")
    team = Group.objects.create(name="Interns")
    Limits.objects.create(group=team, requests_per_minute=3)
    member.groups.add(team)
    key = create_api_key(member, "rate").secret
    one, two = portals("one", WEB_WORKERS="1", WEB_THREADS="2"), portals("two", WEB_WORKERS="2")
    statuses = []
    for portal in (one, two, one, two, one):
        try:
            ask(portal.openai(key))
            statuses.append(200)
        except openai.RateLimitError as error:
            statuses.append(error.status_code)
            assert error.body["type"] == "rate_limit_exceeded"
            assert "3 requests per minute (group Interns)" in error.body["message"]
            assert 0 < int(error.response.headers["Retry-After"]) <= 60
    assert statuses == [200, 200, 200, 429, 429]
    refused = UsageRecord.objects.filter(user=member, error_code="requests_per_minute")
    assert refused.count() == 2 and {r.status_code for r in refused} == {429}


def test_the_chat_says_which_limit_was_reached_and_when_it_resets(
    mlx_server, serve_profile, member, member_client
):
    serve_profile(mlx_server, "Tiny")
    Limits.objects.create(user=member, requests_per_minute=1)
    stream = reverse("servers:chat-stream")
    first = member_client.post(stream, {"profile": "tiny", "message": "Hi", "max_tokens": "8"})
    assert b"event: done" in b"".join(first.streaming_content)
    second = member_client.post(stream, {"profile": "tiny", "message": "Hi", "max_tokens": "8"})
    events = b"".join(second.streaming_content).decode()
    error = next(block for block in events.split("\n\n") if block.startswith("event: error"))
    message = json.loads(error.partition("data: ")[2])["message"]
    assert message.startswith("You have reached your limit of 1 requests per minute")
    assert "try again in" in message


# --- the fair queue -----------------------------------------------------------------------------


def admitted(profile) -> list[tuple]:
    return [entry for entry in admission.admission_log(profile.pk) if entry[0] == "admit"]


class Stream:
    """One streamed request held open in a thread, on a plain socket: `admitted` once its first
    bytes came (nothing comes while it waits), `close()` hangs up at once."""

    def __init__(self, url: str, key: str, model: str):
        body = {"model": model, "messages": HI, "stream": True, "max_tokens": LONG, **ENDLESS}
        payload = json.dumps(body).encode()
        port = int(url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )  # fmt: skip
        self.admitted = threading.Event()
        self.done = threading.Event()
        self.head = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def status(self) -> int | None:
        parts = self.head.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def _run(self) -> None:
        try:
            while data := self.sock.recv(65536):
                if not self.head:
                    self.head = data
                self.admitted.set()
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.done.wait(30)


@pytest.mark.slow
def test_one_member_s_24_streams_delay_a_colleague_by_at_most_one_admission(
    mlx_server, serve_profile, member, make_user, portals
):
    profile = serve_profile(mlx_server, "Tiny", max_tokens=LONG, max_in_flight=2, reserved_slots=0)
    ann, bob = member, make_user("bob@example.com")
    ann_key, bob_key = create_api_key(ann, "flood").secret, create_api_key(bob, "one").secret
    portal = portals(WEB_THREADS="32")
    streams: list[Stream] = []
    try:
        for _ in range(24):
            streams.append(Stream(portal.url, ann_key, "tiny"))
        wait_for(lambda: admission.queues([profile.pk])[profile.pk] == admission.Queue(2, 22),
                 timeout=120, what="2 of Ann's streams in flight and 22 waiting")  # fmt: skip
        bobs = Stream(portal.url, bob_key, "tiny")
        wait_for(lambda: admission.queues([profile.pk])[profile.pk].waiting == 23, timeout=60)
        # Ann's streams end one at a time; each end lets one waiting request in.
        while not any(e[0] == "admit" and e[2] == bob.pk for e in admitted(profile)):
            seen = len(admitted(profile))
            next(s for s in streams if s.admitted.is_set() and not s.done.is_set()).close()
            wait_for(lambda seen=seen: len(admitted(profile)) > seen, timeout=60, what="a turn")
        assert bobs.admitted.wait(60)
        log = admission.admission_log(profile.pk)
        bob_queued = next(i for i, (what, _, user) in enumerate(log) if user == bob.pk)
        bob_admitted = next(
            i for i, (what, _, user) in enumerate(log) if user == bob.pk and what == "admit"
        )
        others_first = [e for e in log[bob_queued:bob_admitted] if e[0] == "admit"]
        assert len(others_first) <= 1, log
        assert bobs.status == 200
        assert sum(1 for what, *_ in log if what == "admit") == 2 + len(others_first) + 1
    finally:
        for stream in [*streams, *([bobs] if "bobs" in locals() else [])]:
            stream.close()
    wait_for(lambda: admission.queues([profile.pk])[profile.pk] == admission.Queue(0, 0),
             timeout=60, what="every slot given back")  # fmt: skip
    assert admission.queues([profile.pk])[profile.pk] == admission.Queue(0, 0)


@pytest.mark.slow
def test_a_client_that_hangs_up_while_queued_leaves_the_queue_and_was_sent_nothing(
    mlx_server, serve_profile, member, make_user, portals
):
    profile = serve_profile(
        mlx_server, "Tiny", max_tokens=LONG, max_in_flight=1, reserved_slots=0, queue_length=2
    )
    holder_key = create_api_key(member, "holder").secret
    waiter_key = create_api_key(make_user("waiter@example.com"), "waiter").secret
    portal = portals(WEB_THREADS="8")
    holder = Stream(portal.url, holder_key, "tiny")
    try:
        assert holder.admitted.wait(60)
        body = json.dumps({"model": "tiny", "messages": HI, "stream": True}).encode()
        waiter = socket.create_connection(("127.0.0.1", portal.port), timeout=30)
        waiter.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + waiter_key.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip
        wait_for(lambda: admission.queues([profile.pk])[profile.pk].waiting == 1, timeout=60)
        waiter.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing at all while it waits: no status line
            waiter.recv(1)
        # The queue is bounded (2, one person at most half of it): this person's second
        # request is refused at once, and the queue never holds more.
        other = openai.OpenAI(base_url=f"{portal.url}/v1", api_key=waiter_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            ask(other)
        assert refused.value.status_code == 503
        assert refused.value.body["type"] == "server_busy"
        assert refused.value.response.headers["Retry-After"] == "5"
        assert admission.queues([profile.pk])[profile.pk].waiting == 1
        waiter.close()
        wait_for(lambda: admission.queues([profile.pk])[profile.pk].waiting == 0, timeout=30,
                 what="the queue to forget the client that left")  # fmt: skip
        gone = wait_for(lambda: UsageRecord.objects.filter(status="cancelled").first(), timeout=30)
        assert gone.queue_ms is not None and gone.completion_tokens == 0
    finally:
        holder.close()


# --- groups -------------------------------------------------------------------------------------


def test_a_profile_limited_to_a_group_is_not_there_for_anyone_else(
    mlx_server, serve_profile, make_profile, member, make_user, admin_member
):
    lab = Group.objects.create(name="Lab")
    secret = serve_profile(mlx_server, "Secret")
    secret.allowed_groups.add(lab)
    make_profile("Open")  # no group rule: everyone's
    insider = make_user("insider@example.com")
    insider.groups.add(lab)

    for user, sees in ((member, False), (insider, True), (admin_member, True)):
        key = create_api_key(user, "k").secret
        api = Client(headers={"Authorization": f"Bearer {key}"})
        listed = {m["id"] for m in api.get("/v1/models").json()["data"]}
        assert listed == ({"open", "secret"} if sees else {"open"})
        answer = api.post("/v1/chat/completions", {"model": "secret", "messages": HI,
                          "max_tokens": 4}, content_type="application/json")  # fmt: skip
        if sees:
            assert answer.status_code == 200
        else:
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "model_not_found"

        page = Client()
        page.force_login(user)
        log = page.get(reverse("servers:log", args=["secret"]))
        assert log.status_code == (200 if sees else 404)
        assert ("Secret" in page.get(reverse("servers:list")).content.decode()) is sees
        assert {t.slug for t in tiles_for(user)} == ({"open", "secret"} if sees else {"open"})
        assert ('value="secret"' in page.get(reverse("servers:chat")).content.decode()) is sees
        chat = page.post(reverse("servers:chat-stream"), {"profile": "secret", "message": "hi",
                         "max_tokens": "4"})  # fmt: skip
        assert chat.status_code == (200 if sees else 400)
        if chat.status_code == 200:
            b"".join(chat.streaming_content)
        # The rule and its SQL agree.
        groups = set(user.groups.values_list("id", flat=True))
        assert may_see(user, {lab.pk}, groups) is sees
        assert ServerProfile.objects.visible_to(user).filter(pk=secret.pk).exists() is sees
