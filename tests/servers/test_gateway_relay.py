"""`Relay.openai_stream`: the API's byte relay, fed the byte stream mlx_lm.server writes, cut
into reads at awkward places (a real httpx.Response over those reads; no server needed).

The end-to-end behaviour against a real mlx_lm.server is in test_gateway.py."""

from __future__ import annotations

import json

import httpx
import pytest

from servers.gateway.errors import GatewayError
from servers.gateway.relay import Relay, sse
from servers.usage.records import Measure


def chunk(content: str | None, *, finish: str | None = None, model: str = "default_model") -> dict:
    """A stream chunk as mlx_lm.server builds it."""
    delta = {"role": "assistant", "content": content} if content is not None else {}
    return {
        "id": "chatcmpl-1",
        "system_fingerprint": "fp",
        "object": "chat.completion.chunk",
        "model": model,
        "created": 1,
        "choices": [{"index": 0, "finish_reason": finish, "delta": delta}],
    }


USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "default_model",
    "created": 1,
    "choices": [],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}


def upstream_bytes(*events: dict | str) -> bytes:
    """What mlx_lm.server writes: `data: <json.dumps>` and a blank line per event."""
    out = b""
    for event in events:
        out += (
            event.encode() if isinstance(event, str) else f"data: {json.dumps(event)}\n\n".encode()
        )
    return out


def relay(reads: list[bytes]) -> tuple[Relay, list[Measure]]:
    finished: list[Measure] = []
    response = httpx.Response(200, content=iter(reads))
    return Relay(response, Measure(), "tiny", on_finish=finished.append), finished


def client_events(data: bytes) -> list:
    events = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        elif block:
            events.append(block)
    return events


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# Generated text may contain anything, including what looks like the field being rewritten.
TRICKY = 'say "model": "default_model" and "usage"'
STREAM = upstream_bytes(
    ": keepalive 5/12\n\n",
    chunk("Hel"),
    chunk("lo"),
    chunk(TRICKY),
    chunk("", finish="length"),
    USAGE,
    "data: [DONE]\n\n",
)


@pytest.mark.parametrize("size", [len(STREAM), 1, 7, 64])
@pytest.mark.parametrize("crlf", [False, True])
def test_every_read_size_gives_the_same_events_measured_and_rewritten(size, crlf):
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    relay_, _ = relay(cut(data, size))
    out = b"".join(relay_.openai_stream("my-model", include_usage=True))
    events = client_events(out)
    assert events[0] == ": keepalive 5/12"
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert {e["model"] for e in chunks} == {"my-model"}
    texts = [e["choices"][0]["delta"].get("content") for e in chunks if e["choices"]]
    assert texts == ["Hel", "lo", TRICKY, ""]  # the text is never touched
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["object"] == "chat.completion.chunk"  # OpenAI's usage chunk
    assert relay_.measure.first_token_at is not None
    assert (relay_.measure.prompt_tokens, relay_.measure.completion_tokens) == (7, 3)


def test_the_usage_chunk_is_dropped_unless_asked_but_still_counted():
    relay_, _ = relay([STREAM])
    events = client_events(b"".join(relay_.openai_stream("m", include_usage=False)))
    assert all("usage" not in e for e in events if isinstance(e, dict))
    assert relay_.measure.completion_tokens == 3


def test_a_read_with_several_events_goes_out_as_one_write():
    relay_, _ = relay([STREAM])
    writes = list(relay_.openai_stream("m", include_usage=True))
    assert len(writes) == 1


def test_a_model_name_the_server_did_not_write_as_expected_is_still_rewritten():
    data = upstream_bytes(chunk("a"), chunk("b", model="other"), "data: [DONE]\n\n")
    relay_, _ = relay(cut(data, 1000))
    events = client_events(b"".join(relay_.openai_stream("m", include_usage=True)))
    assert [e["model"] for e in events if isinstance(e, dict)] == ["m", "m"]


def test_output_matches_what_parsing_every_event_would_give():
    relay_, _ = relay(cut(STREAM, 13))
    fast = client_events(b"".join(relay_.openai_stream("m", include_usage=True)))
    expected = []
    for event in client_events(STREAM):
        if isinstance(event, dict):
            event = {**event, "model": "m"}
            if not event["choices"]:
                event["object"] = "chat.completion.chunk"
            event = json.loads(sse(event).decode()[6:])
        expected.append(event)
    assert fast == expected


def test_a_stream_that_ends_without_done_is_an_error():
    relay_, _ = relay([upstream_bytes(chunk("Hel"))])
    out = []
    with pytest.raises(GatewayError) as error:
        for data in relay_.openai_stream("m", include_usage=True):
            out.append(data)
    assert error.value.code == "upstream_died"
    assert client_events(b"".join(out))[0]["choices"][0]["delta"]["content"] == "Hel"


def test_a_client_that_hangs_up_is_counted_the_tokens_it_was_sent():
    """No usage chunk comes when the client leaves: the tokens are those of the writes the
    WSGI server came back from (it asks for the next write only once one is written)."""
    relay_, finished = relay([upstream_bytes(chunk(text)) for text in ("Hel", "lo", "!", "?")])
    writes = relay_.openai_stream("m", include_usage=True)
    sent = [next(writes) for _ in range(3)]
    writes.close()  # the third write failed: the client is gone (GeneratorExit)
    relay_.close("cancelled")
    assert len(client_events(b"".join(sent))) == 3
    assert finished[0].completion_tokens == 2


def test_the_servers_usage_wins_over_the_tokens_counted_on_the_way():
    relay_, finished = relay(cut(STREAM, 1))
    b"".join(relay_.openai_stream("m", include_usage=False))
    relay_.close("ok")
    assert finished[0].completion_tokens == 3  # USAGE's, not 3 chunks + the finishing one
