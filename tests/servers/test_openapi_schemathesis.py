"""The /v1 gateway against its own OpenAPI description (servers/gateway/openapi.yaml), with
schemathesis.

The description is read from the live portal (`GET /v1/openapi.json`, no key), and every
operation is fuzzed over real HTTP — pytest-django's live server, a real API key of an approved
member, a real tiny mlx_lm.server behind a running profile — with bodies that fit the
description and bodies that break it. Checks: no 5xx, ever; every status and body is the one
the description documents; every refusal carries a message a person can act on.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import pytest
import requests
import schemathesis
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, get_resolver
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.transport.serialization import Binary

from servers.gateway import openapi
from servers.models import Engine, Route, RouteMember
from tests.support.tiny_engines import wav_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROFILE = "tiny"  # the slug of the running profile
ROUTE = "team/mixed"  # a route of the text and the embeddings profiles
# The engine endpoints' profiles (their names; the slugs are the same in lower case).
ENGINE_PROFILES = {"/embeddings": "Embed", "/audio/transcriptions": "Listen"}
EXAMPLES = 40  # per operation, per generation mode (positive and negative)
SEEN: Counter = Counter()  # (path, status, streamed) of the answers, for the fixture's check
# What fuzzing each operation must reach, or it proves little: past the profile lookup and the
# validation to the model server (streamed and not, where the operation streams), and bad
# bodies refused; a schema check of an answer never given checks nothing. (status, streamed)
ANSWERED, STREAMED, REFUSED = (200, False), (200, True), (400, False)
MUST_SEE = {
    "/models": {ANSWERED},
    "/models/{model}": {ANSWERED, (404, False)},  # a profile's, a route's, and unknown ones
    "/chat/completions": {ANSWERED, STREAMED, REFUSED},
    "/completions": {ANSWERED, STREAMED, REFUSED},
    "/embeddings": {ANSWERED, REFUSED},
    "/audio/transcriptions": {ANSWERED, REFUSED},
    "/messages": {ANSWERED, STREAMED, REFUSED},
    "/messages/count_tokens": {ANSWERED, REFUSED},
    "/responses": {ANSWERED, STREAMED, REFUSED},
    "/openapi.json": {ANSWERED},
}
WAV = wav_bytes(0.2)  # a recording that decodes, for the generated transcription requests
# Every other valid request to an operation that streams asks for a stream: left to the
# generator, 1-3 of ~80 requests streamed, and a run with none would fail MUST_SEE by chance.
STREAM_TURNS = itertools.count()


def _spec_paths() -> set[str]:
    spec = openapi.description()
    base = spec["servers"][0]["url"]
    return {base + path for path in spec["paths"]}


# --- the description itself ----------------------------------------------------------------


def test_the_description_is_valid_openapi_3_1_that_schemathesis_loads():
    schema = schemathesis.openapi.from_path(openapi.OPENAPI_PATH)
    assert openapi.description()["openapi"].startswith("3.1")
    operations = {(op.method.upper(), op.path) for op in _operations(schema)}
    assert operations == {
        ("GET", "/models"),
        ("POST", "/chat/completions"),
        ("POST", "/completions"),
        ("POST", "/embeddings"),
        ("POST", "/audio/transcriptions"),
        ("GET", "/models/{model}"),
        ("POST", "/messages"),
        ("POST", "/messages/count_tokens"),
        ("POST", "/responses"),
        ("GET", "/openapi.json"),
    }


def _operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def test_every_v1_route_of_the_url_conf_is_described():
    """A new /v1 route without a description fails here (the catch-all 404 is not a route)."""
    resolver = get_resolver()
    (v1,) = [p for p in resolver.url_patterns if getattr(p, "namespace", None) == "v1"]
    routes = {
        # Django's <path:model> is OpenAPI's {model}.
        "/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        for pattern in v1.url_patterns
        if isinstance(pattern, URLPattern) and pattern.name != "not-found"
    }
    assert routes == _spec_paths()


def test_the_description_is_served_without_a_key_and_matches_the_file(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == openapi.description()
    # Public means this one URL only: its neighbours still want a key.
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/openapi.json/x").status_code == 401
    # No session is involved, so no CSRF token either: a POST is a plain 405 in OpenAI's shape
    # (it was Django's HTML 403 until schemathesis sent one).
    strict = Client(enforce_csrf_checks=True)
    for method in ("post", "put", "delete"):
        response = getattr(strict, method)("/v1/openapi.json")
        assert response.status_code == 405 and response["Allow"] == "GET"
        assert response.json()["error"]["code"] == "method_not_allowed"


# --- what schemathesis found on a real server, pinned ---------------------------------------


def test_values_that_killed_the_model_server_are_harmless_now(
    mlx_server, served_model, serve_profile, api_key
):
    """A top_k past the vocabulary (with sampling on) and a logit_bias for a token id past
    int64 each killed mlx_lm.server's generation thread: every later request failed until a
    restart. A negative seed dropped the connection."""
    serve_profile(mlx_server, "Tiny", max_tokens=4)
    client = Client(headers={"Authorization": f"Bearer {api_key}"})

    def complete(**fields):
        body = {"model": PROFILE, "prompt": "Hi", "temperature": 1.0, **fields}
        return client.post("/v1/completions", json.dumps(body), "application/json")

    assert complete(top_k=10**6).status_code == 200
    assert complete(logit_bias={"9" * 23: 5, "1": 1}).status_code == 200
    refused = complete(seed=-1)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "seed"
    assert complete().status_code == 200  # the server still answers


# --- the live gateway, fuzzed ---------------------------------------------------------------


@pytest.fixture
def live_gateway(
    request, live_server, mlx_server, served_model, serve_profile, api_key, settings,
    embed_server, whisper_server,
):  # fmt: skip
    """The running profile `tiny` (8 tokens at most: fuzzed requests stay short) behind the live
    portal, its model in the portal's cache as on a real host, and the engine profiles `embed`
    and `listen`; where to send requests, with the member's key."""
    # schemathesis sends wrong keys on purpose and wants their 401; the throttle that turns a
    # burst of them into 429 has its own tests (tests/accounts/test_api_keys.py).
    settings.API_KEY_FAILURES_PER_MINUTE = 1_000_000
    tiny = serve_profile(mlx_server, "Tiny", max_tokens=8, max_tokens_cap=8)
    embed = serve_profile(embed_server, ENGINE_PROFILES["/embeddings"], engine=Engine.EMBEDDINGS)
    serve_profile(whisper_server, ENGINE_PROFILES["/audio/transcriptions"], engine=Engine.SPEECH)
    # A route, so that the listing's and /models/{model}'s route entries meet the description too.
    route = Route.objects.create(name=ROUTE, owner=tiny.owner)
    for position, profile in enumerate((tiny, embed)):
        RouteMember.objects.create(route=route, profile=profile, position=position)
    SEEN.clear()
    yield {
        "base_url": f"{live_server.url}/v1",
        "headers": {"Authorization": f"Bearer {api_key}"},
    }
    # The wrong keys were counted all the same (the database cache, which outlives a test):
    # forget them, or the next test's deliberately wrong key from 127.0.0.1 would get 429.
    cache.clear()
    # The operation this test fuzzed (its id, `…[POST /chat/completions]`; one operation may
    # run alone, with -k) must have reached what MUST_SEE says.
    operation = re.fullmatch(r".*\[[A-Z]+ (/\S*)\]", request.node.name)
    assert operation and operation[1] in MUST_SEE, request.node.name
    path = operation[1]
    missed = {seen for seen in MUST_SEE[path] if not SEEN[(path, *seen)]}
    assert not missed, f"{path} never answered {sorted(missed)}: {dict(SEEN)}"


def refusals_say_what_is_wrong(ctx, response, case) -> bool | None:
    """Every 4xx carries OpenAI's error with a message a person can act on."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without an OpenAI error") from None
    message = error.get("message") if isinstance(error, dict) else None
    assert isinstance(message, str) and len(message.strip()) >= 10, (response.status_code, error)
    return True


# The file itself (the test above proves the portal serves exactly it). Not
# `schemathesis.pytest.from_fixture`: its lazy loading breaks on pytest 9.2 (Node._nodeid).
schema = schemathesis.openapi.from_path(openapi.OPENAPI_PATH)
schema.config.generation.update(modes=list(GenerationMode), max_examples=EXAMPLES)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_live_gateway_keeps_to_its_description(case, live_gateway):
    # What the engines accept depends on the model (an input's tokens against its context;
    # audio, which a schema cannot describe, that decodes): a schema-valid request may be
    # refused there, with its message (checked), never with a 5xx (checked).
    engine = case.operation.path in ENGINE_PROFILES
    response = case.call_and_validate(
        **live_gateway,
        session=requests.Session(),
        additional_checks=[refusals_say_what_is_wrong],
        excluded_checks=[positive_data_acceptance] if engine else None,
        timeout=60,
    )
    content_type = response.headers.get("content-type", [""])[0]
    SEEN[(case.operation.path, response.status_code, "event-stream" in content_type)] += 1


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    """Most generated requests name the running profile, so they reach the body's validation
    and mlx_lm.server (the profile is looked up first: an unknown one is a 404 whatever the
    rest says); names of 4 or 8 characters stay, and get 404 `model_not_found`.

    A `before_call` hook, not an edit in the test: schemathesis re-checks a body a hook
    changed, so a request whose only fault was its `model` now counts as a valid one."""
    if case.operation.schema.location != schema.location:
        return
    valid = case.meta is not None and case.meta.generation.mode.is_positive  # as generated
    # The same for the profile or route that GET /models/{model} names.
    named = (case.path_parameters or {}).get("model")
    if isinstance(named, str) and named.strip() and len(named) % 4:
        case.path_parameters["model"] = (PROFILE, ROUTE)[len(named) % 2]
    body = case.body
    if not isinstance(body, dict):
        return
    model = body.get("model")
    if isinstance(model, str) and model.strip() and len(model) % 4:
        body["model"] = ENGINE_PROFILES.get(case.operation.path, PROFILE).lower()
        # A generated `file` is not audio that decodes (400 invalid_audio): a valid request
        # gets some, and stays valid. schemathesis cannot re-check a body holding a file (it
        # calls any such body it sees changed invalid, and its 200 "schema-violating request
        # accepted"), so the edits are made its baseline (schemathesis 4.32's own step).
        if case.operation.path == "/audio/transcriptions" and "file" in body and valid:
            body["file"] = Binary(WAV)
            case._sync_validated_hashes()
    # The profile's cap (8) is a setting the description cannot state: a larger max_tokens is a
    # 400 max_tokens_too_large (tests/servers/test_gateway_validation.py), so ask for at most it.
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 8:
            body[name] = 8
    _keep_structured_output_answerable(body)
    if valid and STREAMED in MUST_SEE.get(case.operation.path, ()) and next(STREAM_TURNS) % 2:
        body["stream"] = True
    # A string `arguments` holds JSON (`contentMediaType`), which schemathesis does not generate.
    for message in body.get("messages") if isinstance(body.get("messages"), list) else ():
        # Image parts are for a vision server (`engine` in /v1/models), which `tiny` is not: to
        # it they are 400 images_not_supported (tests/servers/test_gateway_images.py).
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            message["content"] = [
                {"type": "text", "text": "a picture"}
                if isinstance(part, dict) and part.get("type") == "image_url" else part
                for part in content
            ]  # fmt: skip
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = json.dumps({"text": function["arguments"]})


# A schema llguidance accepts, in OpenAI's strict form.
ANY_OBJECT = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


def _keep_structured_output_answerable(body: dict) -> None:
    """What the description cannot state about structured output: a named `tool_choice` names
    one of `tools` (and "required" needs tools whose functions have names), and a JSON Schema
    is one the grammar engine compiles (its refusal is a 400 with the engine's reason, tested in
    tests/servers/test_structured_output.py). Generated ones are made so, or dropped."""
    response_format = body.get("response_format")
    spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
    if isinstance(spec, dict) and "schema" in spec:
        spec["schema"] = ANY_OBJECT
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    names = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict):
            if "parameters" in function:
                function["parameters"] = ANY_OBJECT
            if isinstance(function.get("name"), str):
                names.append(function["name"])
    _keep_dialects_answerable(body)
    choice = body.get("tool_choice")
    named = isinstance(choice, dict) and isinstance(choice.get("function"), dict)
    plain = [n for n in names if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n)]
    if named and plain:
        choice["function"]["name"] = plain[0]
    if (named or choice == "required") and (not plain or len(plain) < len(tools)):
        body.pop("tool_choice")


def _keep_dialects_answerable(body: dict) -> None:
    """The same for Anthropic's and the Responses shapes (servers/gateway/dialects.py): their
    schemas made compilable, a named tool one of `tools`, a forced call only with tools."""
    for holder in (body.get("output_config"), body.get("text")):
        fmt = holder.get("format") if isinstance(holder, dict) else None
        if isinstance(fmt, dict) and "schema" in fmt:
            fmt["schema"] = ANY_OBJECT
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    names = []
    for tool in tools:
        if isinstance(tool, dict) and "function" not in tool:
            for key in ("input_schema", "parameters"):
                if key in tool:
                    tool[key] = ANY_OBJECT
            if isinstance(tool.get("name"), str):
                names.append(tool["name"])
    choice = body.get("tool_choice")
    if not isinstance(choice, dict | str) or (isinstance(choice, dict) and "function" in choice):
        return
    forced = choice in ("required",) or (
        isinstance(choice, dict) and choice.get("type") in ("any", "tool", "function")
    )
    if forced and (not names or len(names) < len(tools)):
        body.pop("tool_choice")
    elif isinstance(choice, dict) and "name" in choice and names:
        choice["name"] = names[0]
