"""The official `anthropic` and `openai` clients, unchanged, against the portal's Anthropic
Messages (`/v1/messages`), OpenAI Responses (`/v1/responses`) and `GET /v1/models/{id}`, with a
real tiny model server (the `tools` variant: its template renders tools) behind them."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from django.contrib.auth.models import Group
from tokenizers import Tokenizer

from servers.models import Route, ServerInstance, State, UsageRecord
from tests.support.images import SVG, b64, bomb, data_url, png
from tests.support.tiny_models import REPLY, THINKING_REPLY, THOUGHT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
# A conversation in which the model called a tool and got its result back.
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 °C"},
        {"type": "text", "text": "Thanks!"},
    ]},
]  # fmt: skip


@pytest.fixture
def tiny(tools_server, serve_profile):
    return serve_profile(tools_server, "Tiny")


@pytest.fixture
def claude(live_server, api_key) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server.url, api_key=api_key, max_retries=0)


@pytest.fixture
def client(live_server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0)


# --- Anthropic Messages -------------------------------------------------------------------------


def test_messages_create_answers_in_anthropics_shape(tiny, claude):
    message = claude.messages.create(
        model="tiny", max_tokens=64, messages=HI, metadata={"user_id": "u1"},
        system=[{"type": "text", "text": "You are terse."}],
        extra_body={"temperature": 0, "top_k": 5},  # this SDK has them no more; the API does
    )  # fmt: skip
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == "tiny"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    short = claude.messages.create(model="tiny", max_tokens=2, messages=HI)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2

    records = UsageRecord.objects.filter(endpoint="messages", status="ok")
    assert records.count() == 2
    assert records.filter(completion_tokens=2, stream=False).exists()


def test_messages_say_how_much_of_the_input_the_server_read_from_its_cache(tiny, claude):
    # mlx_lm.server keeps the last prompt's cache: the same messages again start from it.
    # Anthropic counts the input in parts: read from the cache, and the rest.
    talk = [{"role": "user", "content": "Say hello to the cache, twice."}]
    first = claude.messages.create(model="tiny", max_tokens=4, messages=talk)
    again = claude.messages.create(model="tiny", max_tokens=4, messages=talk)
    with claude.messages.stream(model="tiny", max_tokens=4, messages=talk) as stream:
        streamed = stream.get_final_message()
    prompt = UsageRecord.objects.filter(endpoint="messages").first().prompt_tokens
    for message in (first, again, streamed):
        usage = message.usage
        assert usage.input_tokens + usage.cache_read_input_tokens == prompt, usage
        assert usage.cache_creation_input_tokens == 0
    assert again.usage.cache_read_input_tokens > first.usage.cache_read_input_tokens
    assert streamed.usage.cache_read_input_tokens > 0
    assert again.usage.input_tokens > 0  # the server always runs the prompt's last token


def test_messages_stream_sends_anthropics_event_sequence(tiny, claude):
    with claude.messages.stream(model="tiny", max_tokens=64, messages=HI) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    # The SDK adds a `text` event after each text delta (and drops pings: see below).
    assert set(kinds[2:-3]) == {"content_block_delta", "text"}
    assert kinds.count("content_block_delta") > 1
    assert message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    record = UsageRecord.objects.get(endpoint="messages")
    assert record.stream and record.status == "ok"
    assert record.completion_tokens == message.usage.output_tokens

    raw = claude.messages.with_streaming_response.create(
        model="tiny", max_tokens=64, messages=HI, stream=True
    )
    with raw as response:
        names = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    deltas = names.count("content_block_delta")
    assert names == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * deltas,
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip


def test_tools_and_a_conversation_with_tool_use_and_results_reach_the_template(tiny, claude):
    for tool_choice in ({"type": "auto"}, {"type": "none"}):
        message = claude.messages.create(
            model="tiny", max_tokens=64, messages=TOOL_TURNS, tools=[WEATHER],
            tool_choice=tool_choice, stop_sequences=["never said"],
        )  # fmt: skip
        assert message.content[0].text == REPLY
        assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    with claude.messages.stream(
        model="tiny", max_tokens=64, messages=TOOL_TURNS, tools=[WEATHER]
    ) as stream:
        assert stream.get_final_text() == REPLY


def test_count_tokens_counts_with_the_models_template_and_tokenizer(tiny, claude, client):
    counted = claude.messages.count_tokens(
        model="tiny", messages=TOOL_TURNS, tools=[WEATHER], system="Be brief."
    )
    # The same conversation as chat completions: the server's own count of its prompt.
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [{
            "id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 21 °C"},
        {"role": "user", "content": "Thanks!"},
    ]  # fmt: skip
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"]}}  # fmt: skip
    answer = client.chat.completions.create(model="tiny", messages=chat, tools=[tool])
    assert counted.input_tokens == answer.usage.prompt_tokens > 20
    assert UsageRecord.objects.filter(endpoint="messages/count_tokens", status="ok").count() == 1


def test_messages_errors_are_the_sdks_own_exceptions_in_anthropics_shape(tiny, claude, live_server):
    bad = anthropic.Anthropic(base_url=live_server.url, api_key="mlxp_wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        bad.messages.create(model="tiny", max_tokens=8, messages=HI)
    body = refused.value.body
    assert body == {"type": "error", "error": {"type": "authentication_error",
                                               "message": body["error"]["message"]}}  # fmt: skip
    with pytest.raises(anthropic.NotFoundError, match="does not exist") as missing:
        claude.messages.create(model="nope", max_tokens=8, messages=HI)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError, match="temperature") as wrong:
        claude.messages.create(
            model="tiny", max_tokens=8, messages=HI, extra_body={"temperature": 1.5}
        )
    assert wrong.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        claude.messages.create(model="tiny", messages=HI, max_tokens=8, extra_body={
            "max_tokens": None})  # fmt: skip
    with pytest.raises(anthropic.BadRequestError, match="Unknown field 'colour'"):
        claude.messages.create(model="tiny", max_tokens=8, messages=HI, extra_body={"colour": 1})
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}  # fmt: skip
    with pytest.raises(anthropic.BadRequestError, match="cannot see images") as blind:
        content = [image, {"type": "text", "text": "What is it?"}]
        claude.messages.create(
            model="tiny", max_tokens=8, messages=[{"role": "user", "content": content}]
        )
    assert blind.value.body["error"]["type"] == "invalid_request_error"


def test_the_key_is_taken_as_x_api_key_as_older_clients_send_it(tiny, live_server, api_key):
    # This SDK sends its api_key as a Bearer token (the fixture `claude`); Claude Code and
    # earlier SDKs send it as x-api-key.
    keyed = anthropic.Anthropic(
        base_url=live_server.url, api_key=None, default_headers={"x-api-key": api_key},
        max_retries=0,
    )  # fmt: skip
    assert keyed.messages.create(model="tiny", max_tokens=64, messages=HI).content[0].text == REPLY
    wrong = anthropic.Anthropic(
        base_url=live_server.url, api_key=None, default_headers={"x-api-key": "mlxp_wrong"},
        max_retries=0,
    )  # fmt: skip
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.count_tokens(model="tiny", messages=HI)


# --- OpenAI Responses ---------------------------------------------------------------------------


def test_responses_create_answers_a_string_and_message_items(tiny, client):
    response = client.responses.create(model="tiny", input="Say hello.", store=False)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.output_text == REPLY
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    items = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello."}]},
        {"role": "user", "content": "Again."},
    ]  # fmt: skip
    again = client.responses.create(
        model="tiny", input=items, instructions="You are kind.", max_output_tokens=3
    )
    assert again.status == "incomplete" and again.incomplete_details.reason == "max_output_tokens"
    assert again.usage.output_tokens == 3
    assert UsageRecord.objects.filter(endpoint="responses", status="ok").count() == 2


def test_responses_say_how_much_of_the_input_the_server_had_cached(tiny, client):
    # mlx_lm.server keeps the last prompt's cache: the same input again starts from it.
    first = client.responses.create(model="tiny", input="Say hello, twice.", max_output_tokens=4)
    again = client.responses.create(model="tiny", input="Say hello, twice.", max_output_tokens=4)
    assert first.usage.input_tokens == again.usage.input_tokens
    cached = again.usage.input_tokens_details.cached_tokens
    assert 0 < cached <= again.usage.input_tokens, again.usage


def test_responses_stream_sends_openais_events_in_sequence(tiny, client):
    with client.responses.stream(model="tiny", input="Say hello.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    assert kinds[-4:] == [
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY
    assert final.output_text == REPLY and final.usage.output_tokens > 0
    assert UsageRecord.objects.get(endpoint="responses").stream


def test_responses_take_function_tools_and_function_call_items(tiny, client):
    tool = {"type": "function", "name": "get_weather", "description": "The weather.",
            "parameters": WEATHER["input_schema"]}  # fmt: skip
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
    ]  # fmt: skip
    response = client.responses.create(model="tiny", input=items, tools=[tool], tool_choice="auto")
    assert response.output_text == REPLY
    assert response.tools[0].name == "get_weather"


def test_responses_refusals_are_openais_errors(tiny, client):
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="tiny", input="Hi", previous_response_id="resp_1")
    with pytest.raises(openai.BadRequestError, match="built-in"):
        client.responses.create(model="tiny", input="Hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.responses.create(model="nope", input="Hi")


# --- GET /v1/models/{id} ------------------------------------------------------------------------


def test_models_retrieve_returns_the_listed_object_and_404_for_unknown_or_hidden(
    tiny, client, make_profile, member
):
    listed = {model.id: model for model in client.models.list()}
    assert client.models.retrieve("tiny") == listed["tiny"]
    hidden = make_profile("Hidden")
    hidden.allowed_groups.add(Group.objects.create(name="lab"))
    route = Route.objects.create(name="team/coder:latest", owner=member)
    route.members.create(profile=tiny, position=0)
    assert client.models.retrieve("team/coder:latest").model_extra["route"] == {
        "policy": route.policy, "members": ["tiny"]}  # fmt: skip
    for unknown in ("nope", "hidden", "tiny/extra"):
        with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
            client.models.retrieve(unknown)
        assert missing.value.body["code"] == "model_not_found"


# --- structured output and forced tool calls (enforced by the model server) ----------------------

CITY = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer",
                                                               "minimum": 1, "maximum": 9}},
    "required": ["city", "days"],
    "additionalProperties": False,
}  # fmt: skip
FORECAST = {**WEATHER, "input_schema": CITY}


def _valid(value: dict) -> bool:
    return value["city"] in ("Paris", "Rome") and 1 <= value["days"] <= 9 and len(value) == 2


def test_a_forced_tool_call_comes_back_as_a_tool_use_block(tiny, claude):
    """The tiny model only calls a tool when the model server constrains it to: this passes
    only if Anthropic's tool_choice reaches chat completions' tool_choice."""
    message = claude.messages.create(
        model="tiny", max_tokens=160, messages=HI, tools=[FORECAST],
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert message.stop_reason == "tool_use"
    (call,) = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and _valid(call.input)
    with claude.messages.stream(
        model="tiny", max_tokens=160, messages=HI, tools=[FORECAST], tool_choice={"type": "any"}
    ) as stream:
        streamed = stream.get_final_message()
    (call,) = [block for block in streamed.content if block.type == "tool_use"]
    assert streamed.stop_reason == "tool_use" and _valid(call.input)


def test_output_config_format_and_text_format_are_enforced(tiny, claude, client):
    fmt = {"type": "json_schema", "schema": CITY}
    message = claude.messages.create(
        model="tiny", max_tokens=160, messages=HI, output_config={"format": fmt}
    )
    assert _valid(json.loads(message.content[0].text))

    text = {"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}}
    response = client.responses.create(model="tiny", input="Say hello.", text=text)
    assert _valid(json.loads(response.output_text))
    with client.responses.stream(
        model="tiny", input="Say hello.", text={"format": {"type": "json_object"}}
    ) as stream:
        assert isinstance(json.loads(stream.get_final_response().output_text), dict)


def test_a_forced_function_call_streams_as_a_responses_function_call_item(tiny, client):
    tool = {"type": "function", "name": "get_weather", "parameters": CITY, "strict": True}
    with client.responses.stream(
        model="tiny",
        input="Weather?",
        tools=[tool],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_response()  # fmt: skip
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and _valid(json.loads(call.arguments))


# --- stop sequences ------------------------------------------------------------------------------


def test_the_stop_sequence_that_ended_a_reply_is_named(tiny, claude, client):
    """The tiny model says "Hello from the tiny MLX test model."; " MLX" is one of its tokens, so
    the reply stops there. mlx_lm says "stop" either way: the portal's entry names the word."""
    stops = [" never", " MLX"]
    message = claude.messages.create(model="tiny", max_tokens=64, messages=HI, stop_sequences=stops)
    assert message.content[0].text == "Hello from the tiny"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", " MLX")
    with claude.messages.stream(
        model="tiny", max_tokens=64, messages=HI, stop_sequences=stops
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == "Hello from the tiny"
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", " MLX")
    # Chat completions pass the server's field on as it is (vLLM's name).
    answer = client.chat.completions.create(model="tiny", messages=HI, stop=stops)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].model_extra["stop_reason"] == " MLX"


def test_a_vision_servers_reply_stops_at_a_stop_sequence_and_names_it(eyes, claude, client):
    """mlx-vlm ignores `stop` (the reply ran on, and Messages said `end_turn`): its entry ends
    the reply before the word and names it, streamed or not. The word is picked from what the
    model says, straddling its tokens, so a stream holds back the start of it."""
    said = claude.messages.create(model="eyes", max_tokens=64, messages=HI)
    text = said.content[0].text
    cut = len(text) // 2
    stop = text[cut : cut + 5]  # "ny ML" of "Hello from the tiny MLX test model."
    assert said.stop_reason == "end_turn" and stop.strip() and stop not in text[:cut]
    stops = ["never said", stop]

    message = claude.messages.create(model="eyes", max_tokens=64, messages=HI,
                                     stop_sequences=stops)  # fmt: skip
    assert message.content[0].text == text[:cut]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    # The generation stopped there: fewer tokens than the whole reply.
    assert message.usage.output_tokens < said.usage.output_tokens
    with claude.messages.stream(
        model="eyes", max_tokens=64, messages=looking(image_block(png())), stop_sequences=stops
    ) as stream:
        deltas = [event.delta.text for event in stream if event.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert "".join(deltas) == text[:cut] and not any(stop in d for d in deltas)
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", stop)

    # Chat completions pass the server's field on, as from a text server.
    answer = client.chat.completions.create(model="eyes", messages=HI, stop=stops)
    assert answer.choices[0].message.content == text[:cut]
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].model_extra["stop_reason"] == stop
    chunks = list(client.chat.completions.create(model="eyes", messages=HI, stop=stop,
                                                 stream=True))  # fmt: skip
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text[:cut]
    (last,) = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (last.finish_reason, last.model_extra["stop_reason"]) == ("stop", stop)
    # A stop word the reply never says: the whole reply, and no word named.
    whole = client.chat.completions.create(model="eyes", messages=HI, stop=["never said"])
    assert whole.choices[0].message.content == text
    assert whole.choices[0].model_extra["stop_reason"] is None


# --- reasoning ----------------------------------------------------------------------------------


@pytest.fixture
def thinker(thinking_server, serve_profile):
    return serve_profile(thinking_server, "Thinker")


def test_a_reasoning_models_thinking_comes_back_as_thinking_blocks(thinker, claude):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = claude.messages.create(model="thinker", max_tokens=64, messages=HI,
                                     thinking=thinking)  # fmt: skip
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.strip() == THOUGHT
    assert message.content[1].text.strip() == THINKING_REPLY

    with claude.messages.stream(
        model="thinker", max_tokens=64, messages=HI, thinking=thinking
    ) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert deltas.index("thinking_delta") < deltas.index("text_delta")
    assert set(deltas) == {"thinking_delta", "text_delta"}
    assert [block.type for block in streamed.content] == ["thinking", "text"]
    assert streamed.content[0].thinking.strip() == THOUGHT
    assert streamed.content[1].text.strip() == THINKING_REPLY

    # Turned off: the template does not think (enable_thinking), and no block says it did.
    quiet = claude.messages.create(model="thinker", max_tokens=64, messages=HI,
                                   thinking={"type": "disabled"})  # fmt: skip
    assert [block.type for block in quiet.content] == ["text"]
    assert quiet.content[0].text.strip() == THINKING_REPLY


def test_a_reasoning_models_thinking_comes_back_as_a_reasoning_item(thinker, client):
    response = client.responses.create(model="thinker", input="Say hello.")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text.strip() == THOUGHT
    assert response.output_text.strip() == THINKING_REPLY

    with client.responses.stream(model="thinker", input="Say hello.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought.strip() == THOUGHT
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text.strip() == THOUGHT
    assert final.output_text.strip() == THINKING_REPLY


def test_the_tokens_a_reasoning_model_spent_thinking_are_counted_apart(
    thinking_server, thinker, client, claude, tiny
):
    """The text server's entry counts the tokens generated while reasoning (the <think> and
    </think> markers included), reported as OpenAI's usage does; Responses map them into
    `output_tokens_details`, a part of `output_tokens`, and the usage record counts neither
    twice."""
    tokenizer = Tokenizer.from_file(str(thinking_server.model_path / "tokenizer.json"))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    thinking = count(THOUGHT) + 2
    answering = count(THINKING_REPLY) + 1  # and the end of the turn

    response = client.responses.create(model="thinker", input="Say hello.")
    assert response.usage.output_tokens == thinking + answering
    assert response.usage.output_tokens_details.reasoning_tokens == thinking
    with client.responses.stream(model="thinker", input="Say hello.") as stream:
        final = stream.get_final_response()
    assert final.usage.output_tokens_details.reasoning_tokens == thinking

    answer = client.chat.completions.create(model="thinker", messages=HI)
    assert answer.usage.completion_tokens == thinking + answering
    assert answer.usage.completion_tokens_details.reasoning_tokens == thinking
    with_usage = {"include_usage": True}
    chunks = list(client.chat.completions.create(model="thinker", messages=HI, stream=True,
                                                 stream_options=with_usage))  # fmt: skip
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == thinking
    assert chunks[-1].usage.completion_tokens == thinking + answering
    # Anthropic's clients read them as thinking tokens, also a part of output_tokens.
    thinks = {"type": "enabled", "budget_tokens": 1024}
    message = claude.messages.create(model="thinker", max_tokens=64, messages=HI, thinking=thinks)
    assert message.usage.output_tokens == thinking + answering
    assert message.usage.output_tokens_details.thinking_tokens == thinking
    with claude.messages.stream(model="thinker", max_tokens=64, messages=HI) as stream:
        streamed = stream.get_final_message()
    assert streamed.usage.output_tokens_details.thinking_tokens == thinking
    records = UsageRecord.objects.filter(status="ok").order_by("id")
    assert [r.completion_tokens for r in records] == [thinking + answering] * 6

    # Thinking turned off: no reasoning, 0 counted.
    no_thinking = {"chat_template_kwargs": {"enable_thinking": False}}
    quiet = client.chat.completions.create(model="thinker", messages=HI, extra_body=no_thinking)
    assert quiet.usage.completion_tokens == answering
    assert quiet.usage.completion_tokens_details.reasoning_tokens == 0
    # A model that does not think: no details (as before), and Responses say 0.
    plain = client.chat.completions.create(model="tiny", messages=HI)
    assert plain.usage.completion_tokens_details is None
    assert client.responses.create(model="tiny", input="Hi").usage.output_tokens_details.model_dump(
    ) == {"reasoning_tokens": 0}  # fmt: skip


def test_chat_completions_stream_the_reasoning_as_the_server_gives_it(thinker, client):
    chunks = list(client.chat.completions.create(model="thinker", messages=HI, stream=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = "".join((delta.model_extra or {}).get("reasoning") or "" for delta in deltas)
    assert reasoning.strip() == THOUGHT
    assert "".join(delta.content or "" for delta in deltas).strip() == THINKING_REPLY


# --- images (a vision server: mlx_vlm.server on the tiny Qwen2-VL) ------------------------------


def image_block(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": b64(data)}}  # fmt: skip


def looking(*blocks: dict) -> list[dict]:
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": "What is this?"}]}]


@pytest.fixture
def eyes(vision_server, serve_profile):
    return serve_profile(vision_server, "Eyes", engine="vision")


def test_an_image_block_reaches_a_vision_server_streamed_or_not(eyes, claude, client):
    message = claude.messages.create(model="eyes", max_tokens=64,
                                     messages=looking(image_block(png())))  # fmt: skip
    assert message.content[0].text == REPLY and message.stop_reason == "end_turn"
    plain = claude.messages.create(model="eyes", max_tokens=64, messages=HI)
    # The image became tokens of the prompt.
    assert message.usage.input_tokens > plain.usage.input_tokens
    with claude.messages.stream(
        model="eyes", max_tokens=64, messages=looking(image_block(png(color="blue")))
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == REPLY and streamed.usage.output_tokens > 0

    response = client.responses.create(model="eyes", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": data_url(png(color="green")), "detail": "auto"},
    ]}])  # fmt: skip
    assert response.output_text == REPLY
    assert response.usage.input_tokens > plain.usage.input_tokens
    records = UsageRecord.objects.filter(status="ok")
    assert sorted(records.values_list("endpoint", flat=True)) == [
        "messages", "messages", "messages", "responses"]  # fmt: skip


@pytest.mark.parametrize(
    ("blocks", "says"),
    [
        pytest.param([{"type": "image", "source": {"type": "url",
                                                   "url": "https://example.com/cat.png"}}],
                     "never fetches URLs", id="URL source"),
        pytest.param([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
                     "never fetches URLs or files", id="file source"),
        pytest.param([image_block(png()[:64] + bytes(6 * 1024 * 1024))], "at most 5.0 MiB",
                     id="6 MB image"),
        pytest.param([image_block(png()[:80])], "does not decode", id="truncated PNG"),
        pytest.param([image_block(SVG)], "SVG", id="SVG called a PNG"),
        pytest.param([image_block(SVG, "image/svg+xml")], "of type image/svg", id="SVG"),
        pytest.param([image_block(png())] * 4, "at most 3", id="4 images in a message"),
        pytest.param([image_block(bomb())], "25,000,000 pixels", id="decompression bomb"),
    ],
)  # fmt: skip
def test_hostile_image_blocks_are_refused_in_anthropics_shape_before_the_server(
    eyes, claude, vision_server, blocks, says
):
    size = vision_server.log_path.stat().st_size
    with pytest.raises(anthropic.BadRequestError, match=says) as refused:
        claude.messages.create(model="eyes", max_tokens=8, messages=looking(*blocks))
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert vision_server.log_path.stat().st_size == size


def test_an_input_image_by_url_or_file_is_refused(eyes, client, vision_server):
    size = vision_server.log_path.stat().st_size
    for part in ({"type": "input_image", "image_url": "https://example.com/cat.png"},
                 {"type": "input_image", "file_id": "file-1"}):  # fmt: skip
        with pytest.raises(openai.BadRequestError, match="never fetches URLs") as refused:
            client.responses.create(model="eyes", input=[{"role": "user", "content": [part]}])
        assert refused.value.code == "unsupported_content"
    with pytest.raises(openai.BadRequestError, match="does not decode"):
        client.responses.create(model="eyes", input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": data_url(png()[:80])}]}])  # fmt: skip
    assert vision_server.log_path.stat().st_size == size


def test_a_refused_image_is_named_where_the_client_put_it(eyes, claude, client):
    """The image is checked in the translated chat body, where a system prompt or instructions
    shift the messages by one: the refusal names the client's own place."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    with pytest.raises(anthropic.BadRequestError, match=r"Image 1 of messages\[2\] is an SVG"):
        claude.messages.create(model="eyes", max_tokens=8, system="Be brief.",
                               messages=[*turns, *looking(image_block(SVG))])  # fmt: skip
    image = {"type": "input_image", "image_url": data_url(SVG)}
    with pytest.raises(openai.BadRequestError, match=r"Image 1 of input\[1\] is an SVG") as refused:
        client.responses.create(model="eyes", instructions="Be brief.", input=[
            {"role": "user", "content": "Hi"}, {"role": "user", "content": [image]}])  # fmt: skip
    assert refused.value.param == "input[1].content"


# --- routes ------------------------------------------------------------------------------------


def test_a_routes_member_that_does_not_answer_hands_a_dialect_request_to_the_next(
    tiny, claude, client, make_profile, member
):
    dead = make_profile("Dead")
    ServerInstance.objects.update_or_create(
        profile=dead, defaults={"state": State.RUNNING, "port": dead.port}
    )  # nothing listens on its port
    route = Route.objects.create(name="fallback", owner=member, policy=Route.Policy.ORDERED)
    route.members.create(profile=dead, position=0)
    route.members.create(profile=tiny, position=1)

    message = claude.messages.create(model="fallback", max_tokens=64, messages=HI)
    assert message.content[0].text == REPLY and message.model == "fallback"
    with claude.messages.stream(model="fallback", max_tokens=64, messages=HI) as stream:
        assert stream.get_final_text() == REPLY
    with client.responses.stream(model="fallback", input="Say hello.") as stream:
        assert stream.get_final_response().output_text == REPLY
    served = UsageRecord.objects.filter(route_name="fallback").values_list("profile_id", "status")
    assert sorted(served) == sorted([(dead.pk, "error"), (tiny.pk, "ok")] * 3)

    # The last member's failure is the answer, in the dialect's shape.
    route.members.filter(profile=tiny).delete()
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(model="fallback", max_tokens=8, messages=HI)
    assert failed.value.body["type"] == "error" and failed.value.status_code >= 500
