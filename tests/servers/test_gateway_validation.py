"""Gateway requests refused before any model server is involved: always OpenAI's error shape."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from servers.gateway import GatewayError, build_upstream_body, upstream_error
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
        "unsupported_content",
        None,
    ),
    ("json mode", {"model": "stopped-one", "messages": HI,
                   "response_format": {"type": "json_object"}}, "unsupported_value", None),
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
    assert_error(client.get("/v1/embeddings"), 404, "unknown_url")
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
    out = build_upstream_body(body, endpoint="chat/completions", max_tokens_cap=100)
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
    }


@pytest.mark.parametrize(
    "asked,cap,sent",
    [({}, 512, 512), ({"max_tokens": 10}, 512, 10), ({"max_tokens": 9999}, 512, 512),
     ({"max_completion_tokens": 20, "max_tokens": 30}, 512, 20)],
)  # fmt: skip
def test_max_tokens_is_capped_by_the_profile(asked, cap, sent):
    out = build_upstream_body({"prompt": "x", **asked}, endpoint="completions", max_tokens_cap=cap)
    assert out["max_tokens"] == sent


def test_streams_always_ask_for_usage_and_tool_choice_none_drops_tools():
    out = build_upstream_body(
        {"messages": HI, "stream": True, "tools": [{"type": "function"}], "tool_choice": "none"},
        endpoint="chat/completions",
        max_tokens_cap=5,
    )
    assert out["stream_options"] == {"include_usage": True}
    assert "tools" not in out


@pytest.mark.parametrize(
    "status,mapped,code",
    [(400, 400, "upstream_rejected"), (404, 503, "server_not_ready"),
     (500, 502, "upstream_error"), (503, 502, "upstream_error"), (413, 413, "request_too_large")],
)  # fmt: skip
def test_upstream_errors_map_to_clean_messages(status, mapped, code):
    error = upstream_error(status, "tiny")
    assert (error.status, error.code) == (mapped, code)
    assert (isinstance(error, GatewayError) and "tiny" in error.message) or status == 413
