"""The OpenAI-compatible gateway against real mlx_lm.server processes (tiny models)."""

from __future__ import annotations

import json

import httpx
import psutil
import pytest
from django.test import Client

from servers.gateway import transport
from servers.models import ServerInstance, State, UsageRecord
from servers.supervision import lifecycle
from tests.servers.helpers import wait_for
from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Say hello, my secret is swordfish."}]
# The tiny model stops after its sentence; banning its end tokens makes it talk for long.
ENDLESS = {"logit_bias": {"0": -100, "2": -100}}


def api(key: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {key}"})


def post(client: Client, path: str, body) -> object:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data, content_type="application/json")


def sse_events(raw: bytes) -> list[dict | str]:
    events = []
    for block in raw.decode().split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            text = "\n".join(data)
            events.append(text if text == "[DONE]" else json.loads(text))
    return events


def streamed_text(events) -> str:
    return "".join(
        (c["choices"][0].get("delta", {}).get("content") or c["choices"][0].get("text") or "")
        for c in events
        if isinstance(c, dict) and c.get("choices")
    )


def test_models_lists_every_profile_in_openai_shape(mlx_server, serve_profile, api_key):
    serve_profile(mlx_server, "Tiny")
    response = api(api_key).get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == "tiny" and model["object"] == "model"
    assert model["status"] == "running"
    assert isinstance(model["created"], int) and model["owned_by"]


def test_chat_completion_answers_and_is_recorded_without_its_text(
    mlx_server, serve_profile, api_key, member
):
    profile = serve_profile(mlx_server, "Tiny")
    response = post(api(api_key), "/v1/chat/completions", {"model": "tiny", "messages": HI})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == "tiny"
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["usage"]["completion_tokens"] > 0

    record = UsageRecord.objects.get()
    assert (record.user, record.profile, record.source) == (member, profile, "api")
    assert record.api_key.user == member
    assert record.status == "ok" and record.status_code == 200
    assert record.prompt_tokens == body["usage"]["prompt_tokens"]
    assert record.completion_tokens == body["usage"]["completion_tokens"]
    assert record.duration_ms > 0 and record.host == profile.host
    assert "swordfish" not in json.dumps(
        {f.name: str(getattr(record, f.name)) for f in UsageRecord._meta.fields}
    )
    assert ServerInstance.objects.get(profile=profile).last_request_at is not None


def test_stream_passes_chunks_counts_tokens_and_hides_usage_unless_asked(
    mlx_server, serve_profile, api_key
):
    serve_profile(mlx_server, "Tiny")
    client = api(api_key)
    body = {"model": "tiny", "messages": HI, "stream": True}
    response = post(client, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["X-Accel-Buffering"] == "no"
    assert response["Cache-Control"] == "no-cache"
    events = sse_events(b"".join(response.streaming_content))
    assert events[-1] == "[DONE]"
    assert len(events) > 3  # token by token, not one blob
    assert streamed_text(events) == REPLY
    assert all("usage" not in e for e in events if isinstance(e, dict))
    assert {e["model"] for e in events if isinstance(e, dict)} == {"tiny"}
    record = UsageRecord.objects.get()
    assert record.stream and record.completion_tokens > 0 and record.prompt_tokens > 0
    assert 0 < record.ttft_ms <= record.duration_ms

    body["stream_options"] = {"include_usage": True}
    events = sse_events(b"".join(post(client, "/v1/chat/completions", body).streaming_content))
    usage = [e for e in events if isinstance(e, dict) and e.get("usage")]
    assert len(usage) == 1 and usage[0]["choices"] == []
    assert usage[0]["object"] == "chat.completion.chunk"
    assert usage[0]["usage"]["completion_tokens"] == UsageRecord.objects.first().completion_tokens


def test_text_completions_stream_and_not(mlx_server, serve_profile, api_key):
    serve_profile(mlx_server, "Tiny")
    client = api(api_key)
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8}
    answer = post(client, "/v1/completions", body).json()
    assert answer["object"] == "text_completion" and answer["usage"]["completion_tokens"] <= 8
    assert isinstance(answer["choices"][0]["text"], str)
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(b"".join(post(client, "/v1/completions", body).streaming_content))
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == answer["choices"][0]["text"]
    assert {e["object"] for e in events if isinstance(e, dict)} == {"text_completion"}
    assert UsageRecord.objects.filter(endpoint="completions", status="ok").count() == 2


def _established_to(port: int) -> list:
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def test_stream_is_not_buffered_and_a_client_that_leaves_frees_the_upstream(
    mlx_server, serve_profile, api_key, live_server
):
    serve_profile(mlx_server, "Tiny", max_tokens=4000)
    body = {"model": "tiny", "messages": HI, "stream": True, "max_tokens": 4000, **ENDLESS}
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream(
        "POST", f"{live_server.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]
        # The first tokens are here while the server is still generating thousands more:
        # the portal holds its upstream connection open, nothing was buffered.
        assert transport.connections_in_use() == 1
        assert _established_to(mlx_server.port)
        assert not UsageRecord.objects.exists()
    # The client hung up. The portal notices at its next write, closes the upstream
    # connection (so mlx_lm.server stops generating) and records a cancelled request.
    record = wait_for(lambda: UsageRecord.objects.first(), 30, what="the cancelled record")
    assert record.status == "cancelled" and record.status_code == 499
    assert record.ttft_ms is not None
    wait_for(lambda: transport.connections_in_use() == 0, 10, what="the pool to be free")
    wait_for(lambda: not _established_to(mlx_server.port), 10, what="the socket to close")
    # And the server is free for the next request.
    client = api(api_key)
    answer = post(client, "/v1/chat/completions", {"model": "tiny", "messages": HI}).json()
    assert answer["choices"][0]["message"]["content"] == REPLY


def test_a_stream_makes_four_indexed_reads_before_its_first_byte_and_touches_the_server_rarely(
    mlx_server, serve_profile, api_key
):
    """The work between a request and its first token is small: the look-ups' counters, then
    four indexed reads (the API key with its user; the user's groups and limits; the profile
    with its host and instance; the profile's group rule), each one plain query that the ORM
    does not compile (common/rows.py) — and only the counters once nothing they count changed
    since —, no write, and last_request_at written at most once per LAST_REQUEST_RESOLUTION
    (not by every request). The limits and the queue are Redis's."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    profile = serve_profile(mlx_server, "Tiny")
    client = api(api_key)
    body = {"model": "tiny", "messages": HI, "stream": True}
    b"".join(post(client, "/v1/chat/completions", body).streaming_content)  # key's last use
    touched = ServerInstance.objects.get(profile=profile).last_request_at
    assert touched is not None

    with CaptureQueriesContext(connection) as before_first_byte:
        response = post(client, "/v1/chat/completions", body)
    events = sse_events(b"".join(response.streaming_content))
    assert streamed_text(events) == REPLY
    sql = [" ".join(q["sql"].split()) for q in before_first_byte.captured_queries]
    assert len(sql) == 5, sql  # the first request changed the key's last use, the instance's
    counters, key_read, membership_read, profile_read, groups_read = sql
    assert counters == "SELECT accounts, servers FROM portal_lookup_version WHERE id = 1"
    assert 'FROM "accounts_limits" WHERE "accounts_limits"."user_id" = ' in membership_read
    assert "UNION ALL" in membership_read and 'INNER JOIN "accounts_user_groups"' in membership_read
    assert 'FROM "servers_serverprofile_allowed_groups" WHERE' in groups_read
    assert 'FROM "accounts_apikey" LEFT JOIN "accounts_user"' in key_read
    assert 'WHERE "accounts_apikey"."key_hash" IN' in key_read
    assert 'FROM "servers_serverprofile" LEFT JOIN "models_catalog_host"' in profile_read
    assert 'LEFT JOIN "servers_serverinstance"' in profile_read
    assert 'WHERE "servers_serverprofile"."slug" = ' in profile_read
    assert ServerInstance.objects.get(profile=profile).last_request_at == touched

    with CaptureQueriesContext(connection) as unchanged:
        response = post(client, "/v1/chat/completions", body)
    assert streamed_text(sse_events(b"".join(response.streaming_content))) == REPLY
    assert [q["sql"] for q in unchanged.captured_queries] == [counters]

    ServerInstance.objects.filter(profile=profile).update(
        last_request_at=touched - lifecycle.LAST_REQUEST_RESOLUTION
    )
    b"".join(post(client, "/v1/chat/completions", body).streaming_content)
    assert ServerInstance.objects.get(profile=profile).last_request_at > touched


def test_a_server_dying_mid_stream_ends_the_stream_with_an_error_event(
    mlx_server_factory, serve_profile, api_key, live_server
):
    server = mlx_server_factory("text")
    serve_profile(server, "Doomed", max_tokens=4000)
    body = {"model": "doomed", "messages": HI, "stream": True, "max_tokens": 4000, **ENDLESS}
    headers = {"Authorization": f"Bearer {api_key}"}
    events = []
    with httpx.stream(
        "POST", f"{live_server.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 3:
                psutil.Process(server.pid).kill()
    last = json.loads(events[-1])
    assert last["error"]["code"] == "upstream_died"
    assert "stopped in the middle of the reply" in last["error"]["message"]
    assert set(last["error"]) == {"message", "type", "param", "code"}
    record = wait_for(lambda: UsageRecord.objects.first(), 10)
    assert (record.status, record.error_code) == ("error", "upstream_died")


def test_a_server_that_does_not_answer_gives_a_clean_503(serve_profile, api_key):
    from tests.support.mlx_server import free_port

    class Nothing:  # no process listens on this port
        port = free_port()
        pid = None

    serve_profile(Nothing, "Ghost")
    response = post(api(api_key), "/v1/chat/completions", {"model": "ghost", "messages": HI})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "server_unreachable" and "not answering" in error["message"]
    assert UsageRecord.objects.get().status == "error"


def test_on_demand_start_through_a_real_worker(
    served_model, celery_worker, make_profile, api_key, server_reaper, clean_queues
):
    profile = make_profile("Lazy", model_id=served_model, allow_on_demand=True)
    response = post(api(api_key), "/v1/chat/completions", {"model": "lazy", "messages": HI})
    instance = profile.get_instance()
    instance.refresh_from_db()
    server_reaper((instance.pid, instance.process_create_time))
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    assert instance.state == State.RUNNING
