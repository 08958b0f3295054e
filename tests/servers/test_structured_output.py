"""Structured output, enforced: `response_format` and forced tool calls on a real model server
(the portal's entry point, servers/supervision/mlx_entry.py, on the `tools` tiny model), driven
by the official `openai` SDK, directly and through the portal's `/v1` gateway.

The tiny model answers "Hello from the tiny MLX test model." whatever it is asked (the first
test shows it): every JSON reply below exists only because the grammar masked the logits.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import enum
import json
import time
import uuid
from typing import Annotated, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HI = [{"role": "user", "content": "Say hello."}]
MAX_TOKENS = 160
SHORT = Field(max_length=12)  # the tiny model would fill a free string until max_tokens


@pytest.fixture(scope="module")
def server(tools_server):
    """The portal's entry point on the `tools` tiny model (tests/servers/conftest.py)."""
    return tools_server


@pytest.fixture(scope="module")
def direct(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


# --- twenty schemas ------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Flat(BaseModel):
    name: str = SHORT
    age: int = Field(ge=0, le=120)


class Choice(BaseModel):
    size: Literal["small", "medium", "large"]


class Paint(BaseModel):
    color: Color
    coats: Literal[1, 2, 3]


class Address(BaseModel):
    street: str = SHORT
    number: int = Field(ge=1, le=9999)


class Person(BaseModel):
    name: str = SHORT
    address: Address


class Numbers(BaseModel):
    values: list[Annotated[int, Field(ge=0, le=999)]] = Field(max_length=4)


class Item(BaseModel):
    sku: str = Field(max_length=6)
    quantity: int = Field(ge=1, le=99)


class Order(BaseModel):
    items: list[Item] = Field(min_length=1, max_length=3)


class MaybeNickname(BaseModel):
    name: str = SHORT
    nickname: str | None = Field(default=None, max_length=8)


class Ratio(BaseModel):
    value: float = Field(ge=0.0, le=1.0)
    weight: float = Field(gt=-10.0, lt=10.0)


class Flags(BaseModel):
    active: bool
    admin: bool


class Inner(BaseModel):
    leaf: int = Field(ge=0, le=9)


class Middle(BaseModel):
    inner: Inner
    label: str = Field(max_length=5)


class Outer(BaseModel):
    middle: Middle
    ok: bool


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Cat | Dog


class Tags(BaseModel):
    tags: list[Literal["urgent", "later", "done"]] = Field(max_length=3)


SMALL = Annotated[int, Field(ge=-99, le=99)]  # an integer without bounds has no last digit


class Pair(BaseModel):
    point: tuple[SMALL, SMALL]


class Exclusive(BaseModel):
    percent: int = Field(gt=0, lt=100)


class Code(BaseModel):
    code: str = Field(pattern=r"^[a-z]{2,5}-[0-9]{2}$")


class Event(BaseModel):
    title: str = SHORT
    day: datetime.date


class Ticket(BaseModel):
    id: uuid.UUID


class Node(BaseModel):
    value: int = Field(ge=0, le=9)
    next: Node | None


class Profile(BaseModel):
    username: str = Field(min_length=3, max_length=10)
    scores: list[Annotated[float, Field(ge=0, le=5)]] = Field(max_length=2)
    role: Literal["admin", "member"] | None
    inner: Inner | None


SCHEMAS = [
    Flat, Choice, Paint, Person, Numbers, Order, MaybeNickname, Ratio, Flags, Outer, Pet, Tags,
    Pair, Exclusive, Code, Event, Ticket, Node, Profile, Address,
]  # fmt: skip


def test_the_tiny_model_unconstrained_does_not_answer_json(direct):
    answer = direct.chat.completions.create(model="default_model", messages=HI)
    assert answer.choices[0].message.content == REPLY
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.choices[0].message.content)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("schema", SCHEMAS, ids=[s.__name__ for s in SCHEMAS])
def test_parse_returns_an_object_that_validates(direct, schema, stream):
    kwargs = dict(model="default_model", messages=HI, response_format=schema,
                  max_tokens=MAX_TOKENS)  # fmt: skip
    if stream:
        with direct.chat.completions.stream(**kwargs) as events:
            for _ in events:
                pass
            answer = events.get_final_completion()
    else:
        answer = direct.chat.completions.parse(**kwargs)
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, schema)
    assert schema.model_validate_json(choice.message.content) == choice.message.parsed


def test_json_object_mode_answers_a_json_object(direct):
    for stream in (False, True):
        answer = direct.chat.completions.create(
            model="default_model", messages=HI, max_tokens=MAX_TOKENS,
            response_format={"type": "json_object"}, stream=stream,
        )  # fmt: skip
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
        else:
            text = answer.choices[0].message.content
        assert isinstance(json.loads(text), dict)


def test_constrained_and_free_requests_share_the_batch(direct):
    # Whole and streamed, with and without a logit_bias (a row with another processor beside
    # the grammar, or with only that), started together so that they share the batch; each
    # constrained reply its own schema (a row masked with another row's grammar fails).
    bias = {"3": 0.0}
    schemas = {(False, False): Order, (False, True): Paint, (True, False): Tags,
               (True, True): Flat}  # fmt: skip

    def constrained(stream: bool, logit_bias=None):
        kwargs = dict(model="default_model", messages=HI, max_tokens=MAX_TOKENS,
                      response_format=schemas[stream, bool(logit_bias)])  # fmt: skip
        if logit_bias:
            kwargs["logit_bias"] = logit_bias
        if not stream:
            return direct.chat.completions.parse(**kwargs).choices[0].message.parsed
        with direct.chat.completions.stream(**kwargs) as events:
            chunks = sum(1 for event in events if event.type == "content.delta")
            parsed = events.get_final_completion().choices[0].message.parsed
        assert chunks > 3  # streamed token by token
        return parsed

    def free(stream: bool, logit_bias=None):
        extra = {"logit_bias": logit_bias} if logit_bias else {}
        if not stream:
            answer = direct.chat.completions.create(model="default_model", messages=HI, **extra)
            return answer.choices[0].message.content
        chunks = direct.chat.completions.create(model="default_model", messages=HI,
                                                stream=True, **extra)  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    jobs = [(kind, stream, logit_bias) for kind in (constrained, free)
            for stream in (False, True) for logit_bias in (None, bias)]  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(kind, stream, logit_bias) for kind, stream, logit_bias in jobs]
        results = [future.result(timeout=120) for future in futures]
    for (kind, stream, logit_bias), result in zip(jobs, results, strict=True):
        if kind is constrained:
            assert isinstance(result, schemas[stream, bool(logit_bias)]), (stream, result)
        else:
            assert result == REPLY, (stream, logit_bias, result)


def test_the_server_masks_a_batchs_grammar_rows_together(server):
    # The start-up line says whether this mlx_lm's batch step is the one mlx_entry knows (the
    # grammar rows masked together) or not (mlx_lm's per-row path): an upgrade that changes it
    # fails here, and `batch_grammars` must be brought to the new step.
    lines = server.log_path.read_text().splitlines()
    (start,) = [line for line in lines if line.startswith("MLX Portal: mlx_lm.server;")]
    assert "a batch's masks applied together" in start, start


# --- strict and refusals --------------------------------------------------------------------------

BLOB = {"type": "blob"}
LOOSE = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 3}}}


def _schema_format(schema, strict):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}}


def test_strict_schemas_follow_openais_rules_and_non_strict_ones_are_enforced_as_written(direct):
    with pytest.raises(openai.BadRequestError, match="additionalProperties") as refused:
        direct.chat.completions.create(model="default_model", messages=HI,
                                       response_format=_schema_format(LOOSE, True))  # fmt: skip
    assert refused.value.body["code"] == "invalid_json_schema"
    # Not strict: the same schema constrains (a may be left out; when there, it is 1 to 3).
    answer = direct.chat.completions.create(
        model="default_model", messages=HI, max_tokens=MAX_TOKENS,
        response_format=_schema_format({**LOOSE, "additionalProperties": False}, False),
    )  # fmt: skip
    value = json.loads(answer.choices[0].message.content)
    assert set(value) <= {"a"} and value.get("a", 1) in (1, 2, 3)


def test_a_schema_the_engine_cannot_compile_is_400_with_its_reason(direct):
    with pytest.raises(openai.BadRequestError, match="Invalid type: blob") as refused:
        direct.chat.completions.create(
            model="default_model", messages=HI, response_format=_schema_format(BLOB, False)
        )
    assert refused.value.body["param"] == "response_format"


# --- tools ----------------------------------------------------------------------------------------


class Weather(BaseModel):
    city: str = SHORT
    days: int = Field(ge=1, le=7)
    unit: Literal["C", "F"]


class Alarm(BaseModel):
    hour: int = Field(ge=0, le=23)
    label: str | None = Field(max_length=8)


TOOLS = [openai.pydantic_function_tool(Weather), openai.pydantic_function_tool(Alarm)]
SCHEMA_OF = {"Weather": Weather, "Alarm": Alarm}


def test_required_and_named_tool_calls_have_arguments_that_validate(direct):
    answer = direct.chat.completions.create(
        model="default_model", messages=HI, tools=TOOLS, tool_choice="required",
        max_tokens=MAX_TOKENS,
    )  # fmt: skip
    assert answer.choices[0].finish_reason == "tool_calls"
    (call,) = answer.choices[0].message.tool_calls
    SCHEMA_OF[call.function.name].model_validate_json(call.function.arguments)

    for name, schema in SCHEMA_OF.items():
        answer = direct.chat.completions.parse(
            model="default_model", messages=HI, tools=TOOLS, max_tokens=MAX_TOKENS,
            tool_choice={"type": "function", "function": {"name": name}},
        )  # fmt: skip
        (call,) = answer.choices[0].message.tool_calls
        assert call.function.name == name
        assert isinstance(call.function.parsed_arguments, schema)


def test_streamed_tool_call_deltas_accumulate_with_the_sdk(direct):
    with direct.chat.completions.stream(
        model="default_model", messages=HI, tools=TOOLS, max_tokens=MAX_TOKENS,
        tool_choice={"type": "function", "function": {"name": "Alarm"}},
    ) as events:  # fmt: skip
        kinds = [event.type for event in events]
        answer = events.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    (call,) = answer.choices[0].message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "Alarm"
    assert isinstance(call.function.parsed_arguments, Alarm)
    assert answer.choices[0].finish_reason == "tool_calls"


# --- hostile schemas ------------------------------------------------------------------------------


def _nested(depth: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"],
                  "additionalProperties": False}  # fmt: skip
    return schema


HUGE = {"type": "object", "additionalProperties": False, "required": [],
        "properties": {f"p{i:06d}": {"type": "string", "description": "x" * 40}
                       for i in range(30_000)}}  # fmt: skip
RECURSIVE = {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}},
                             "required": ["c"], "additionalProperties": False}},
             "$ref": "#/$defs/n"}  # fmt: skip
EXPLODING = [r"(a|b)*a(a|b){60}", r"((a+)+)+b", r"(x{1,100}){1,100}y", r"(.*a){40}"]
HOSTILE = {
    "2 MB": HUGE,
    "200 deep": _nested(200),
    "recursive $ref": RECURSIVE,
    **{f"regex {p}": {"type": "object", "properties": {"s": {"type": "string", "pattern": p}},
                      "required": ["s"], "additionalProperties": False} for p in EXPLODING},
}  # fmt: skip


def test_hostile_schemas_are_refused_or_bounded_and_the_server_goes_on(server, direct):
    assert len(json.dumps(HUGE)) > 2_000_000
    for label, schema in HOSTILE.items():
        started = time.monotonic()
        answer = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "messages": HI, "max_tokens": 48, "response_format": _schema_format(schema, False),
        })  # fmt: skip
        assert answer.status_code in (200, 400), (label, answer.text)
        assert time.monotonic() - started < 30, label
        if answer.status_code == 400:
            assert answer.json()["error"]["code"] == "invalid_json_schema", label
    normal = direct.chat.completions.create(model="default_model", messages=HI)
    assert normal.choices[0].message.content == REPLY


# --- through the portal's gateway -----------------------------------------------------------------


@pytest.fixture
def portal(live_server, api_key, serve_profile, server) -> openai.OpenAI:
    serve_profile(server, "Tiny tools")
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0)


@pytest.mark.django_db(transaction=True)
def test_through_the_gateway_schemas_are_bounded_then_enforced(portal, server, direct):
    answer = portal.chat.completions.parse(model="tiny-tools", messages=HI, response_format=Order,
                                           max_tokens=MAX_TOKENS)  # fmt: skip
    assert isinstance(answer.choices[0].message.parsed, Order)
    with portal.chat.completions.stream(
        model="tiny-tools", messages=HI, tools=TOOLS, max_tokens=MAX_TOKENS,
        tool_choice={"type": "function", "function": {"name": "Weather"}},
    ) as events:  # fmt: skip
        for _ in events:
            pass
        (call,) = events.get_final_completion().choices[0].message.tool_calls
    assert isinstance(call.function.parsed_arguments, Weather)

    refusals = {"2 MB": "64 KiB|65,536", "200 deep": "32 levels", "remote": "never fetches"}
    schemas = {**HOSTILE, "remote": {"$ref": "https://example.com/schema.json"}}
    for label, message in refusals.items():
        with pytest.raises(openai.BadRequestError, match=message) as refused:
            portal.chat.completions.create(
                model="tiny-tools",
                messages=HI,
                response_format=_schema_format(schemas[label], False),
            )
        assert refused.value.body["code"] == "invalid_json_schema"
    huge_tool = {"type": "function", "function": {"name": "big", "parameters": HUGE}}
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]\.function\.parameters"):
        portal.chat.completions.create(model="tiny-tools", messages=HI, tools=[huge_tool],
                                       tool_choice="required")  # fmt: skip
    # The engine's own refusal comes through the gateway with its reason.
    with pytest.raises(openai.BadRequestError, match="Invalid type: blob"):
        portal.chat.completions.create(
            model="tiny-tools", messages=HI, response_format=_schema_format(BLOB, False)
        )
    assert portal.chat.completions.create(model="tiny-tools", messages=HI).choices[0].message


def test_a_thinking_model_answers_the_schema_in_its_content(thinking_server):
    client = openai.OpenAI(base_url=thinking_server.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.parse(
        model="default_model", messages=HI, response_format=Flat, max_tokens=MAX_TOKENS
    )
    assert isinstance(answer.choices[0].message.parsed, Flat)
