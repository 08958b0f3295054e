"""Gateway requests refused before any model server is involved: always OpenAI's error shape."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from servers.gateway.errors import GatewayError, upstream_error
from servers.gateway.schema import build_upstream_body
from servers.models import UsageRecord

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(api_key) -> Client:
    return Client(headers={"Authorization": f"Bearer {api_key}"})


@pytest.fixture
def stopped(make_profile):
    return make_profile("Stopped one", allow_on_demand=False)


def post(client, path, data, **extra):
    if not isinstance(data, (str, bytes)):
        data = json.dumps(data)
    return client.post(path, data, content_type="application/json", **extra)


def assert_error(response, status, code=None, says=""):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code:
        assert error["code"] == code
    assert says in error["message"]
    return error


BAD_BODIES = [
    ("not json", "{nope", "invalid_json", None),
    ("a list", [1, 2], "missing_field", "model"),
    ("no model", {"messages": HI}, "missing_field", "model"),
    ("no messages", {"model": "stopped-one"}, "missing_field", "messages"),
    ("empty messages", {"model": "stopped-one", "messages": []}, "invalid_value", "messages"),
    ("bad role", {"model": "stopped-one", "messages": [{"role": "x"}]}, "invalid_value", None),
    # Found by tests/servers/test_bad_input.py: an unhashable role used to be a 500.
    ("list role", {"model": "stopped-one", "messages": [{"role": []}]}, "invalid_value", None),
    ("object role", {"model": "stopped-one", "messages": [{"role": {}}]}, "invalid_value", None),
    ("temperature", {"model": "stopped-one", "messages": HI, "temperature": 3}, None, None),
    ("temp string", {"model": "stopped-one", "messages": HI, "temperature": "hot"}, None, None),
    ("stream str", {"model": "stopped-one", "messages": HI, "stream": "yes"}, None, "stream"),
    ("max_tokens 0", {"model": "stopped-one", "messages": HI, "max_tokens": 0}, None, None),
    ("max_tokens bool", {"model": "stopped-one", "messages": HI, "max_tokens": True}, None, None),
    ("n=2", {"model": "stopped-one", "messages": HI, "n": 2}, "unsupported_value", "n"),
    ("stop 5", {"model": "stopped-one", "messages": HI, "stop": list("abcde")}, None, "stop"),
    (
        "image",
        {"model": "stopped-one", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]},
        "images_not_supported",
        None,
    ),
    (
        "audio",
        {"model": "stopped-one", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]},
        "unsupported_content",
        None,
    ),
    ("json schema without name", {"model": "stopped-one", "messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {}}}}, "invalid_value",
        "response_format.json_schema.name"),
    ("response_format xml", {"model": "stopped-one", "messages": HI,
                             "response_format": {"type": "xml"}}, "invalid_value", None),
    ("tool_choice unknown function", {"model": "stopped-one", "messages": HI, "tools": [
        {"type": "function", "function": {"name": "f"}}], "tool_choice": {
        "type": "function", "function": {"name": "g"}}}, "invalid_value", "tool_choice"),
    ("tool_choice required without tools", {"model": "stopped-one", "messages": HI,
                                            "tool_choice": "required"}, "invalid_value", None),
]  # fmt: skip


@pytest.mark.parametrize("label,body,code,param", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_get_400_in_openai_shape(client, stopped, label, body, code, param):
    error = assert_error(post(client, "/v1/chat/completions", body), 400, code)
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_unknown_model_is_404_model_not_found(client, stopped):
    error = assert_error(
        post(client, "/v1/chat/completions", {"model": "gpt-9", "messages": HI}),
        404,
        "model_not_found",
        "/v1/models",
    )
    assert error["param"] == "model"


@pytest.mark.parametrize(
    "model",
    ["tiny\x00", "\x00", "ti\ud840ny", "a" * 81, "bell\x07", "\x85\x0b", "   "],
    ids=["nul", "only-nul", "lone-surrogate", "too-long", "control", "python-blank", "blank"],
)
def test_model_names_no_profile_can_have_are_404_before_the_database(client, stopped, model):
    """Found by schemathesis on PostgreSQL: a NUL in `model` made the profile query fail (500)."""
    response = post(client, "/v1/chat/completions", {"model": model, "messages": HI})
    error = assert_error(response, 404, "model_not_found", "printable")
    assert error["param"] == "model"


def test_a_stopped_server_without_on_demand_start_is_503_with_what_to_do(client, stopped):
    response = post(client, "/v1/chat/completions", {"model": "stopped-one", "messages": HI})
    assert_error(response, 503, "server_not_running", "start it on the Servers page")
    assert response["Retry-After"]
    record = UsageRecord.objects.get()
    assert (record.status, record.status_code, record.source) == ("error", 503, "api")


def test_oversize_bodies_get_413(client, stopped, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    body = {"model": "stopped-one", "messages": [{"role": "user", "content": "x" * 2000}]}
    assert_error(post(client, "/v1/chat/completions", body), 413, "request_too_large")


def test_wrong_method_and_unknown_endpoints(client):
    assert_error(client.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert_error(client.get("/v1/embeddings"), 405, "method_not_allowed")
    assert_error(client.get("/v1/images/generations"), 404, "unknown_url")
    assert Client().get("/v1/models").status_code == 401  # the key is still required


def test_profiles_can_be_named_by_name_too(client, stopped):
    response = post(client, "/v1/completions", {"model": "Stopped One", "prompt": "x"})
    assert_error(response, 503, "server_not_running")


# --- the allow-list (pure) ----------------------------------------------------------------------


def test_only_allowed_fields_reach_the_server_and_model_is_the_servers_own():
    body = {
        "model": "tiny", "messages": [{"role": "developer", "content": "be brief"}, *HI],
        "draft_model": "evil/model", "adapters": "/etc", "num_draft_tokens": 9,
        "role_mapping": {}, "xtc_probability": 0.5, "whatever": 1, "user": "u1",
        "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": "END",
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
    }  # fmt: skip
    out = build_upstream_body(body, endpoint="chat/completions", max_tokens=100)
    assert out == {
        "model": "default_model",
        "messages": [{"role": "system", "content": "be brief"}, *HI],
        "stream": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "max_tokens": 100,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "auto",
    }


# (what the request asks, the profile's max tokens, its cap, the model's context) → sent.
MAX_TOKENS_SENT = [
    ("none asked: the profile's default", {}, 512, None, None, 512),
    ("asked below the default", {"max_tokens": 10}, 512, None, None, 10),
    ("asked above the default: allowed, not cut", {"max_tokens": 9999}, 512, None, None, 9999),
    ("up to the cap", {"max_tokens": 2000}, 512, 2000, None, 2000),
    ("no cap: up to the context", {"max_tokens": 4096}, 512, None, 4096, 4096),
    ("the first name given wins", {"max_completion_tokens": 20, "max_tokens": 30}, 512, None,
     None, 20),
    ("a default above the cap is bounded by it", {}, 8192, None, 2048, 2048),
]  # fmt: skip


@pytest.mark.parametrize(
    "asked,default,cap,context,sent",
    [case[1:] for case in MAX_TOKENS_SENT],
    ids=[case[0] for case in MAX_TOKENS_SENT],
)
def test_max_tokens_defaults_to_the_profiles_and_passes_up_to_the_cap(
    asked, default, cap, context, sent
):
    out = build_upstream_body(
        {"prompt": "x", **asked}, endpoint="completions", max_tokens=default,
        max_tokens_cap=cap, context_length=context,
    )  # fmt: skip
    assert out["max_tokens"] == sent


# (what the request asks, the cap, the model's context) → refused, naming the cap.
MAX_TOKENS_REFUSED = [
    ("over the cap", {"max_tokens": 2001}, 2000, None, "max_tokens", "2,000"),
    ("over the cap, by its other name", {"max_completion_tokens": 300}, 256, None,
     "max_completion_tokens", "256"),
    ("no cap: over the context", {"max_tokens": 5000}, None, 4096, "max_tokens", "4,096"),
    ("the cap wins over the context", {"max_tokens": 3000}, 2000, 4096, "max_tokens", "2,000"),
]  # fmt: skip


@pytest.mark.parametrize(
    "asked,cap,context,param,named",
    [case[1:] for case in MAX_TOKENS_REFUSED],
    ids=[case[0] for case in MAX_TOKENS_REFUSED],
)
def test_max_tokens_over_the_cap_is_refused_naming_it_not_cut(asked, cap, context, param, named):
    with pytest.raises(GatewayError) as refused:
        build_upstream_body(
            {"prompt": "x", **asked}, endpoint="completions", max_tokens=100,
            max_tokens_cap=cap, context_length=context, profile_name="Tiny",
        )  # fmt: skip
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "max_tokens_too_large", param)
    assert f"Tiny allows at most {named} tokens per reply" in error.message


def test_streams_always_ask_for_usage_and_tool_choice_none_drops_tools():
    out = build_upstream_body(
        {"messages": HI, "stream": True, "tools": [{"type": "function"}], "tool_choice": "none"},
        endpoint="chat/completions",
        max_tokens=5,
    )
    assert out["stream_options"] == {"include_usage": True}
    assert "tools" not in out


@pytest.mark.parametrize(
    "status,text,mapped,code",
    [(400, "", 400, "upstream_rejected"),
     (404, '{"error": "generation thread died"}', 503, "server_not_ready"),
     # Any other exception of mlx_lm.server's while it prepares this request (found by
     # schemathesis: a tool call that is not an object) is the request's problem, not a 5xx.
     (404, '{"error": "\'NoneType\' object has no attribute \'get\'"}', 400, "upstream_rejected"),
     (500, "", 502, "upstream_error"), (503, "", 502, "upstream_error"),
     (413, "", 413, "request_too_large")],
)  # fmt: skip
def test_upstream_errors_map_to_clean_messages(status, text, mapped, code):
    error = upstream_error(status, "tiny", text)
    assert (error.status, error.code) == (mapped, code)
    assert (isinstance(error, GatewayError) and "tiny" in error.message) or status == 413


# --- found by schemathesis (tests/servers/test_openapi_schemathesis.py) ------------------------


def _refusal(body: dict, endpoint: str = "chat/completions") -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        build_upstream_body(body, endpoint=endpoint, max_tokens=8)
    assert raised.value.status == 400 and raised.value.code == "invalid_value"
    return raised.value


def test_a_negative_seed_is_refused_since_mlx_takes_an_unsigned_one():
    # mlx.random.seed(-1) made mlx_lm.server drop the connection without an answer.
    assert _refusal({"messages": HI, "seed": -1}).param == "seed"
    out = build_upstream_body(
        {"messages": HI, "seed": 2**64 - 1}, endpoint="chat/completions", max_tokens=8
    )
    assert out["seed"] == 2**64 - 1


def test_an_empty_prompt_is_refused():
    # mlx_lm.server dropped the connection: no token to start from.
    assert _refusal({"prompt": ""}, "completions").param == "prompt"
    assert _refusal({"prompt": [""]}, "completions").param == "prompt"


@pytest.mark.parametrize(
    "message",
    [{"role": "assistant", "tool_calls": [None]},  # mlx_lm: 'NoneType' has no attribute 'get'
     {"role": "assistant", "tool_calls": [{"function": "f"}]},
     {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]},
     {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]},
     {"role": "assistant", "tool_calls": {"function": {"name": "f"}}},
     {"role": "user", "name": 5}, {"role": "tool", "tool_call_id": []}],
)  # fmt: skip
def test_malformed_message_extras_are_refused_not_silently_dropped(message):
    error = _refusal({"messages": [message]})
    assert error.param.startswith("messages[0].") and "must be" in error.message


@pytest.mark.parametrize("arguments", ["{oops", "[1]", "not json at all", '"a string"'])
def test_tool_call_arguments_that_are_not_a_json_object_reach_the_template_as_text(arguments):
    # A model may write arguments that are not JSON, and an agent sends them back as they were
    # (OpenAI accepts any string, as does the OpenAPI description). mlx_lm.server parses a
    # string as JSON: the text is sent JSON-encoded, so its parse gives the text back.
    calls = [{"type": "function", "function": {"name": "f", "arguments": arguments}}]
    out = build_upstream_body(
        {"messages": [{"role": "assistant", "tool_calls": calls}, *HI]},
        endpoint="chat/completions",
        max_tokens=8,
    )
    sent = out["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == arguments
    assert calls[0]["function"]["arguments"] == arguments  # the client's body is not changed


def test_tool_calls_as_openai_returns_them_pass():
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]  # fmt: skip
    out = build_upstream_body(
        {"messages": [{"role": "assistant", "tool_calls": calls}, *HI]},
        endpoint="chat/completions",
        max_tokens=8,
    )
    assert out["messages"][0]["tool_calls"] == calls


def test_a_top_k_past_the_vocabulary_keeps_every_token_instead_of_killing_the_server():
    def top_k(value, vocab):
        body = {"messages": HI, "top_k": value}
        out = build_upstream_body(body, endpoint="chat/completions", max_tokens=8, vocab_size=vocab)
        return out["top_k"]

    assert [top_k(447, 448), top_k(448, 448), top_k(10**30, 448), top_k(10**6, None)] == [
        447, 0, 0, 10**6,
    ]  # fmt: skip


def test_logit_bias_for_tokens_the_model_lacks_is_left_out():
    bias = {"1": 5, "447": -5, "448": 1, "9" * 5000: 1, "99999999999999999999999": 2}
    out = build_upstream_body(
        {"messages": HI, "logit_bias": bias},
        endpoint="chat/completions",
        max_tokens=8,
        vocab_size=448,
    )
    assert out["logit_bias"] == {"1": 5.0, "447": -5.0}
    unknown = build_upstream_body(
        {"messages": HI, "logit_bias": bias}, endpoint="chat/completions", max_tokens=8
    )
    assert set(unknown["logit_bias"]) == {"1", "447", "448"}  # below int32 without a vocab
    assert _refusal({"messages": HI, "logit_bias": {"-1": 1}}).param == "logit_bias"
    arabic_indic_one = "\u0661"  # a digit to str.isdigit, not a token id
    assert _refusal({"messages": HI, "logit_bias": {arabic_indic_one: 1}}).param == "logit_bias"


def test_integral_floats_count_as_integers_and_n_must_be_the_number_one():
    out = build_upstream_body(
        {"messages": HI, "max_tokens": 4.0, "top_k": 3.0, "n": 1.0},
        endpoint="chat/completions",
        max_tokens=8,
    )
    assert (out["max_tokens"], out["top_k"]) == (4, 3) and isinstance(out["top_k"], int)
    assert _refusal({"messages": HI, "max_tokens": 4.5}).param == "max_tokens"
    with pytest.raises(GatewayError, match="'n' must be 1"):
        build_upstream_body({"prompt": "x", "n": True}, endpoint="completions", max_tokens=8)


def test_the_vocabulary_size_comes_from_the_models_config(hf_cache):
    from models_catalog.local import vocab_size
    from tests.servers.helpers import install_model

    plain = install_model(hf_cache, "acme/plain")
    (plain / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 448}))
    vision = install_model(hf_cache, "acme/vision")
    (vision / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 262144}}))
    install_model(hf_cache, "acme/silent")  # a config without vocab_size
    assert vocab_size("acme/plain") == 448
    assert vocab_size("acme/vision") == 262144
    assert vocab_size("acme/silent") is None and vocab_size("acme/absent") is None
