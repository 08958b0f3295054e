"""Disabling a user, or revoking their key, ends the streams they have open — not only their
next request. Against a real mlx_lm.server (the tiny model, made to talk for long)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from accounts import approval
from accounts.api_keys import revoke_api_key
from servers.gateway import transport
from servers.models import Conversation, Message, UsageRecord
from servers.supervision import lifecycle
from tests.servers.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Say hello."}]
# Banning the tiny model's end tokens makes it talk until max_tokens (see test_gateway.py).
ENDLESS = {"logit_bias": {"0": -100, "2": -100}}
MAX_TOKENS = 4000


def _data_events(chunks) -> list[dict]:
    """The `data:` payloads of server-sent events, parsed (comments and [DONE] left out)."""
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line[6:] != "[DONE]":
                out.append(json.loads(line[6:]))
    return out


def _open_api_stream(api_key: str):
    client = Client(headers={"Authorization": f"Bearer {api_key}"})
    body = {"model": "tiny", "messages": HI, "stream": True, "max_tokens": MAX_TOKENS, **ENDLESS}
    response = client.post("/v1/chat/completions", json.dumps(body), "application/json")
    assert response.status_code == 200
    return response


@pytest.mark.parametrize("how", ["disable", "revoke"])
def test_an_open_api_stream_stops_when_its_user_is_disabled_or_its_key_revoked(
    mlx_server, serve_profile, api_key, member, admin_member, how
):
    serve_profile(mlx_server, "Tiny", max_tokens=MAX_TOKENS)
    response = _open_api_stream(api_key)
    chunks = iter(response.streaming_content)
    first = [next(chunks) for _ in range(3)]  # the reply is flowing
    assert _data_events(first)[0]["choices"]

    if how == "disable":
        approval.disable([member], by=admin_member)
    else:
        revoke_api_key(member.api_keys.get())
    rest = list(chunks)  # ends on its own: the portal checks access while it relays

    last = _data_events(rest)[-1]
    assert last["error"]["code"] == "access_revoked"
    assert "no longer" in last["error"]["message"]
    record = wait_for(lambda: UsageRecord.objects.first(), 10, what="the usage record")
    assert (record.status, record.status_code, record.error_code) == (
        "error",
        403,
        "access_revoked",
    )
    # Cut well before the model would have stopped by itself, and the upstream is closed.
    assert record.completion_tokens < MAX_TOKENS
    tokens = sum(1 for event in _data_events(first + rest) if event.get("choices"))
    assert tokens < MAX_TOKENS / 2
    wait_for(lambda: transport.connections_in_use() == 0, 10, what="the pool to be free")
    # And the next request is refused at once.
    assert _retry_status(api_key) == 401


def _retry_status(api_key: str) -> int:
    client = Client(headers={"Authorization": f"Bearer {api_key}"})
    return client.get("/v1/models").status_code


def test_an_open_chat_reply_stops_when_its_user_is_disabled(
    mlx_server, serve_profile, member, admin_member, settings
):
    # A chat reply of the tiny model lasts a few milliseconds: check access at every chunk so
    # the check can be seen to happen (by default it runs at most once a second).
    settings.STREAM_ACCESS_CHECK_SECONDS = 0
    serve_profile(mlx_server, "Tiny")
    client = Client()
    client.force_login(member)
    response = client.post(reverse("servers:chat-stream"), {"profile": "tiny", "message": "Hi"})
    assert response.status_code == 200
    chunks = iter(response.streaming_content)
    head = []
    while not any(b"choices" in chunk for chunk in head):
        head.append(next(chunks))

    approval.disable([member], by=admin_member)
    tail = b"".join(chunks).decode()

    assert "event: error" in tail and "event: done" not in tail
    assert "no longer" in tail
    # What arrived before is kept for the owner, marked as not finished.
    answer = Conversation.objects.get().messages.get(role=Message.Role.ASSISTANT)
    assert answer.status == Message.Status.ERROR
    # Disabling ended the session too: the next page is the login.
    assert client.get(reverse("servers:chat"))["Location"].startswith("/accounts/login/")


def test_a_long_stream_keeps_its_server_from_idling_out(
    mlx_server, serve_profile, api_key, settings, monkeypatch
):
    """The idle time-out counts from the last request; a reply that streams for longer than
    the time-out must keep refreshing it, or the server would be stopped mid-reply."""
    from datetime import timedelta

    from django.utils import timezone

    from servers.models import ServerInstance

    settings.STREAM_ACCESS_CHECK_SECONDS = 0.05
    monkeypatch.setattr(lifecycle, "LAST_REQUEST_RESOLUTION", timedelta(seconds=0.2))
    profile = serve_profile(mlx_server, "Tiny", max_tokens=MAX_TOKENS, idle_timeout_minutes=1)
    response = _open_api_stream(api_key)
    chunks = iter(response.streaming_content)
    next(chunks)
    # As if this reply had been streaming for two minutes, past the one-minute time-out.
    long_ago = timezone.now() - timedelta(minutes=2)
    ServerInstance.objects.filter(profile=profile).update(last_request_at=long_ago)

    def refreshed() -> bool:
        next(chunks)  # keep reading the reply
        last = ServerInstance.objects.get(profile=profile).last_request_at
        return timezone.now() - last < timedelta(seconds=5)

    wait_for(refreshed, 30, every=0.0, what="last_request_at refreshed by the stream")
    response.close()
