"""Anthropic Messages and OpenAI Responses translated to and from chat completions
(servers/gateway/dialects.py): pure work, in tables. The live SDK tests are in
test_gateway_dialects.py; here the SDKs' own stream accumulators read what the translation makes
of a streamed tool call shaped exactly as mlx_lm.server streams one (the tiny models only call a
tool when constrained decoding forces them to)."""

from __future__ import annotations

import json

import anthropic
import httpx
import httpx2  # the anthropic SDK's own copy of httpx
import openai
import pytest

from servers.gateway import dialects
from servers.gateway.errors import GatewayError

HI = [{"role": "user", "content": "Hi"}]
TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}


def messages(**fields) -> dict:
    return dialects.messages_request(
        {"model": "tiny", "max_tokens": 8, "messages": HI, **fields}
    ).body


def responses(**fields) -> dict:
    return dialects.responses_request({"model": "tiny", "input": "Hi", **fields}).body


# --- Anthropic requests -------------------------------------------------------------------------


def test_a_messages_request_becomes_chat_completions():
    body = messages(
        system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "x"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "t2", "is_error": True,
                 "content": [{"type": "text", "text": "boom"}]},
            ]},
        ],
        stop_sequences=["END"], temperature=0.5, top_p=0.9, top_k=4, stream=True,
        tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"},
        metadata={"user_id": "u"}, thinking={"type": "disabled"},
    )  # fmt: skip
    assert body == {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "A\n\nB"},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"},
        ],
        "max_tokens": 8, "stream": True, "temperature": 0.5, "top_p": 0.9, "top_k": 4,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "chat_template_kwargs": {"enable_thinking": False},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_anthropic_tool_choices_map_to_openais(choice, expected):
    assert messages(tools=[TOOL], tool_choice=choice)["tool_choice"] == expected


def test_structured_output_and_images_translate():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = messages(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}
    }  # fmt: skip
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}  # fmt: skip
    translated = dialects.messages_request(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [image]}]}
    )
    assert translated.images
    assert translated.body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]


def test_count_tokens_asks_for_one_token_and_refuses_generation_fields():
    body = dialects.messages_request({"model": "m", "messages": HI}, counting=True).body
    assert body["max_tokens"] == 1 and "stream" not in body
    with pytest.raises(GatewayError, match="Unknown field 'max_tokens'"):
        dialects.messages_request({"model": "m", "messages": HI, "max_tokens": 5}, counting=True)


URL_IMAGE = {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"max_tokens": None}, "max_tokens", "required"),
        ({"max_tokens": 0}, "max_tokens", "from 1"),
        ({"max_tokens": True}, "max_tokens", "an integer"),
        ({"temperature": 1.5}, "temperature", "from 0 to 1"),
        ({"top_k": -1}, "top_k", "from 0"),
        ({"colour": "red"}, "colour", "Unknown field"),
        ({"messages": []}, "messages", "at least one"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "user or"),
        ({"messages": [{"role": "user", "content": [URL_IMAGE]}]}, "messages[0].content[0].source",
         r"a link \(http://x/y.png\): the portal never fetches URLs"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_result"}]}]},
         "messages[0].content[0]", "'tool_result' block in a assistant message, which is not"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/svg+xml", "data": "AA=="}}]}]},
         "messages[0].content[0]", "of type image/svg"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences", "at most 4"),
        ({"stop_sequences": [""]}, "stop_sequences", "empty"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]",
         "server tool"),
        ({"tools": [{"name": "no spaces", "input_schema": {}}]}, "tools[0].name", "letters"),
        ({"tool_choice": {"type": "some"}}, "tool_choice", "auto, any"),
        ({"output_config": {"format": {"type": "regex"}}}, "output_config", "json_schema"),
        ({"system": [{"type": "image"}]}, "system", "text block"),
    ],
)  # fmt: skip
def test_anthropic_refusals_name_the_field(fields, param, words):
    body = {"model": "tiny", "max_tokens": 8, "messages": HI, **fields}
    with pytest.raises(GatewayError, match=words) as refused:
        dialects.messages_request({k: v for k, v in body.items() if v is not None})
    assert refused.value.status == 400 and refused.value.param == param


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
     (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"),
     (502, "api_error"), (503, "overloaded_error"), (504, "api_error")],
)  # fmt: skip
def test_errors_take_anthropics_types(status, kind):
    error = GatewayError("Something is wrong here.", status)
    assert dialects.anthropic_error(error) == {
        "type": "error", "error": {"type": kind, "message": "Something is wrong here."}
    }  # fmt: skip


# --- Responses requests -------------------------------------------------------------------------


def test_a_responses_request_becomes_chat_completions():
    body = responses(
        instructions="Be kind.",
        input=[
            {"role": "developer", "content": "Short."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
            {"type": "reasoning", "summary": []},
        ],
        max_output_tokens=16, temperature=1.5, top_p=0.5, store=True, user="u",
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"},
                         "strict": True}},
    )  # fmt: skip
    call = {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    assert body == {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "developer", "content": "Short."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": "c1", **call}, {"id": "c2", **call}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        ],
        "stream": False, "max_tokens": 16, "temperature": 1.5, "top_p": 0.5,
        "tools": [{"type": "function", "function": {"name": "get_weather",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "w", "schema": {"type": "object"}, "strict": True}},
    }  # fmt: skip
    assert responses(text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in responses(text={"format": {"type": "text"}})


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": None}, "input", "required"),
        ({"input": []}, "input", "non-empty"),
        ({"previous_response_id": "resp_1"}, "previous_response_id", "keeps no responses"),
        ({"temperature": 3}, "temperature", "from 0 to 2"),
        ({"seed": 3}, "seed", "Unknown field"),
        ({"tools": [{"type": "file_search"}]}, "tools[0]", "built-in"),
        ({"tool_choice": "sometimes"}, "tool_choice", "auto, none"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format", "json_schema"),
        ({"input": [{"role": "user", "content": [{"type": "input_image",
                                                  "image_url": "https://x/y.png"}]}]},
         "input[0].content[0]", "never fetches"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]", "not supported"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "user, assistant"),
    ],
)  # fmt: skip
def test_responses_refusals_name_the_field(fields, param, words):
    body = {"model": "tiny", "input": "Hi", **fields}
    with pytest.raises(GatewayError, match=words) as refused:
        dialects.responses_request({k: v for k, v in body.items() if v is not None})
    assert refused.value.status == 400 and refused.value.param == param


# --- streams, read by the SDKs ------------------------------------------------------------------


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "default_model",
            "choices": [{"index": 0, "finish_reason": finish,
                         "delta": {"role": "assistant", **delta}}]}  # fmt: skip


# What mlx_lm.server streams for a reply with some text and then one tool call.
TOOL_CALL_CHUNKS = [
    _chunk({"content": "Let me "}),
    _chunk({"content": "look."}),
    _chunk({"tool_calls": [{"function": {"name": "get_weather",
            "arguments": '{"city": "Paris"}'}, "type": "function", "id": "abc", "index": 0}]}),
    _chunk({}, "tool_calls"),
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
     "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}},
]  # fmt: skip


def _body(state) -> bytes:
    out = [state.start(), *(state.chunk(data) for data in TOOL_CALL_CHUNKS), state.end()]
    return b"".join(out)


def _serving(body: bytes, library=httpx):
    """An httpx client whose every request gets `body` as an event stream (the SDKs' transport:
    what is tested is what they make of the bytes)."""
    stream = library.MockTransport(
        lambda request: library.Response(200, content=body,
                                         headers={"content-type": "text/event-stream"})
    )  # fmt: skip
    return library.Client(transport=stream)


def test_a_streamed_tool_call_reaches_anthropics_sdk_as_a_tool_use_block():
    body = _body(dialects.MessageEvents("tiny", {}))
    client = anthropic.Anthropic(
        api_key="k", base_url="http://portal", http_client=_serving(body, httpx2)
    )
    with client.messages.stream(model="tiny", max_tokens=64, messages=HI, tools=[TOOL]) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Let me look."
    tool_use = message.content[1]
    assert (tool_use.id, tool_use.name, tool_use.input) == ("abc", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 9)
    assert "input_json" in kinds
    names = [line[7:] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip


def test_a_streamed_tool_call_reaches_openais_sdk_as_a_function_call_item():
    echo = dialects.responses_request({"model": "tiny", "input": "Hi"}).echo
    body = _body(dialects.ResponseEvents("tiny", echo))
    client = openai.OpenAI(api_key="k", base_url="http://portal/v1", http_client=_serving(body))
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"},
            "strict": False}  # fmt: skip
    with client.responses.stream(model="tiny", input="Hi", tools=[tool]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output_text == "Let me look."
    call = final.output[1]
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "abc", "get_weather", {"city": "Paris"})  # fmt: skip
    assert [e.type for e in events if "function_call" in e.type] == [
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
    ]  # fmt: skip
    assert final.usage.total_tokens == 21


def test_answers_translate_whole():
    chat = {"choices": [{"finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": "abc", "type": "function",
        "function": {"name": "get_weather", "arguments": "not json"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}  # fmt: skip
    message = dialects.message_answer(chat, "tiny", {})
    assert message["content"] == [
        {"type": "tool_use", "id": "abc", "name": "get_weather", "input": {}}
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "output_tokens": 4, "output_tokens_details": {"thinking_tokens": 0},
    }  # fmt: skip
    response = dialects.response_answer(chat, "tiny", {})
    assert response["output"][0]["type"] == "function_call"
    assert response["output"][0]["arguments"] == "not json"
    assert response["status"] == "completed" and response["usage"]["total_tokens"] == 7


# --- reasoning and stop sequences ---------------------------------------------------------------

# What mlx_lm.server streams for a reasoning model's reply that a stop word ended (`stop_reason`:
# the portal's entry names the word).
THINKING_CHUNKS = [
    _chunk({"reasoning": "Greeting "}),
    _chunk({"reasoning": "detected."}),
    _chunk({"content": "Hi"}),
    _chunk({"content": " there"}),
    {**_chunk({}, "stop"), "choices": [{"index": 0, "finish_reason": "stop", "delta": {},
                                        "stop_reason": " MLX"}]},
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
     "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11,
               "completion_tokens_details": {"reasoning_tokens": 4}}},
]  # fmt: skip


def _thinking_body(state) -> bytes:
    return b"".join([state.start(), *(state.chunk(data) for data in THINKING_CHUNKS), state.end()])


def test_streamed_reasoning_and_a_stop_sequence_reach_anthropics_sdk():
    echo = dialects.messages_request(
        {"model": "tiny", "max_tokens": 9, "messages": HI, "stop_sequences": ["END", " MLX"]}
    ).echo
    body = _thinking_body(dialects.MessageEvents("tiny", echo))
    client = anthropic.Anthropic(
        api_key="k", base_url="http://portal", http_client=_serving(body, httpx2)
    )
    with client.messages.stream(model="tiny", max_tokens=9, messages=HI) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        message = stream.get_final_message()
    assert deltas == ["thinking_delta", "thinking_delta", "text_delta", "text_delta"]
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Greeting detected."
    assert message.content[1].text == "Hi there"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", " MLX")

    # A stop word the request did not send, or none at all: the end of the turn.
    for stops in ([], ["END"]):
        echo = {"stop_sequences": stops}
        events = _thinking_body(dialects.MessageEvents("tiny", echo)).decode()
        assert '"stop_reason":"end_turn","stop_sequence":null' in events
    # Thinking turned off by the request: no thinking block even if the model reasons anyway.
    quiet = _thinking_body(dialects.MessageEvents("tiny", {"thinking": False})).decode()
    assert '"type":"thinking"' not in quiet and "thinking_delta" not in quiet and "Hi" in quiet


def test_streamed_reasoning_reaches_openais_sdk_as_a_reasoning_item():
    echo = dialects.responses_request({"model": "tiny", "input": "Hi"}).echo
    body = _thinking_body(dialects.ResponseEvents("tiny", echo))
    client = openai.OpenAI(api_key="k", base_url="http://portal/v1", http_client=_serving(body))
    with client.responses.stream(model="tiny", input="Hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert [part.text for part in final.output[0].content] == ["Greeting detected."]
    assert final.output_text == "Hi there"
    assert [e.delta for e in events if e.type == "response.reasoning_text.delta"] == [
        "Greeting ", "detected."]  # fmt: skip
    kinds = [event.type for event in events]
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert (final.usage.output_tokens, final.usage.output_tokens_details.reasoning_tokens) == (6, 4)


def test_reasoning_and_the_matched_stop_translate_whole():
    chat = {"choices": [{"finish_reason": "stop", "stop_reason": "END", "message": {
        "role": "assistant", "content": "Hi", "reasoning": "Greeting."}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}  # fmt: skip
    message = dialects.message_answer(chat, "tiny", {"stop_sequences": ["END"]})
    assert message["content"] == [
        {"type": "thinking", "thinking": "Greeting.", "signature": ""},
        {"type": "text", "text": "Hi"},
    ]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
    unsent = dialects.message_answer(chat, "tiny", {"stop_sequences": ["STOP"]})
    assert (unsent["stop_reason"], unsent["stop_sequence"]) == ("end_turn", None)
    response = dialects.response_answer(chat, "tiny", {})
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    assert response["output"][0]["content"] == [{"type": "reasoning_text", "text": "Greeting."}]


@pytest.mark.parametrize(
    ("details", "reasoning"),
    [
        ({"reasoning_tokens": 3}, 3),  # what the text server's entry counted
        (None, 0),  # a server that does not count them (a vision server)
        ({"reasoning_tokens": 9}, 4),  # never more than the output
        ({"reasoning_tokens": -1}, 0),
        ({"reasoning_tokens": True}, 0),
        ({"reasoning_tokens": "3"}, 0),
        ("3", 0),
    ],
)
def test_the_reasoning_tokens_a_server_counted_are_part_of_responses_output_tokens(
    details, reasoning
):
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    if details is not None:
        usage["completion_tokens_details"] = details
    message = {"role": "assistant", "content": "Hi", "reasoning": "Greeting."}
    chat = {"choices": [{"finish_reason": "stop", "message": message}], "usage": usage}
    assert dialects.response_answer(chat, "tiny", {})["usage"] == {
        "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": 7,
    }  # fmt: skip
    # Messages name them thinking tokens, within output_tokens as Anthropic counts thinking.
    got = dialects.message_answer(chat, "tiny", {})["usage"]
    assert got["output_tokens_details"] == {"thinking_tokens": reasoning}
    assert got["output_tokens"] == 4


@pytest.mark.parametrize(
    ("details", "cached"),
    [
        ({"cached_tokens": 2}, 2),  # what mlx_lm.server found in its prompt cache
        (None, 0),  # a server that does not say
        ({"cached_tokens": 7}, 3),  # never more than the input
        ({"cached_tokens": -2}, 0),
        ({"cached_tokens": False}, 0),
        ([2], 0),
    ],
)
def test_the_prompt_tokens_a_server_had_cached_are_part_of_responses_input_tokens(details, cached):
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    if details is not None:
        usage["prompt_tokens_details"] = details
    chat = {"choices": [{"finish_reason": "stop", "message": {"content": "Hi"}}], "usage": usage}
    got = dialects.response_answer(chat, "tiny", {})["usage"]
    assert got["input_tokens_details"] == {"cached_tokens": cached}
    assert (got["input_tokens"], got["total_tokens"]) == (3, 7)
    # Anthropic's input is in parts: what the cache gave, and the rest.
    got = dialects.message_answer(chat, "tiny", {})["usage"]
    assert (got["cache_read_input_tokens"], got["input_tokens"]) == (cached, 3 - cached)
    assert got["cache_creation_input_tokens"] == 0
