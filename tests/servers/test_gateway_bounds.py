"""One API call must not make a model server unusable for everyone (the outside attack's
findings 2, 6, 7 and 9): what a request may ask of a model's chat template and context, and
what reaches the server when a body is hostile. Real tiny mlx_lm.servers run through the
portal's entry point (servers/supervision/mlx_entry.py); the gateway is reached over HTTP by the
official `openai` client where a client would meet the answer.

A client that leaves mid-prompt, the tiles' "busy" notice and bursts run against the portal as
shipped (gunicorn behind nginx): tests/servers/test_gateway_cancel.py."""

from __future__ import annotations

import json
import shutil
import socket
import threading

import openai
import pytest
from django.test import Client

from models_catalog.characteristics import template_variables
from models_catalog.local import serving_facts
from servers.gateway import schema, transport
from servers.gateway.errors import GatewayError
from servers.gateway.schema import build_upstream_body
from servers.models import UsageRecord
from servers.supervision.command import ServerOptions, build_server_command
from servers.validation import check_chat_template_args
from tests.servers.helpers import install_model
from tests.servers.test_gateway_direct import HEAD
from tests.support.mlx_server import running_mlx_server
from tests.support.tiny_models import REPLY, THINKING_REPLY, tiny_model_cache

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]
TINY_CONTEXT = 2048  # the tiny models' max_position_embeddings


def _refusal(body: dict, **limits) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        build_upstream_body(body, endpoint="chat/completions", max_tokens=64, **limits)
    return raised.value


# --- chat-template kwargs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"padding": "max_length", "max_length": 60000},  # the attack: a 57,000-token prompt
     {"truncation": True}, {"tokenize": False}, {"add_generation_prompt": False},
     {"tools": "x"}, {"messages": []}, {"bos_token": "x"}],
)  # fmt: skip
def test_what_the_tokenizer_or_the_portal_sets_is_never_a_template_kwarg(kwargs):
    # Even for a template that reads it, and for a model whose template is not known here.
    for known in (frozenset(kwargs), None):
        error = _refusal({"messages": HI, "chat_template_kwargs": kwargs}, template_variables=known)
        assert error.param == "chat_template_kwargs" and error.code == "invalid_value"
        assert "not by chat-template args" in error.message
    with pytest.raises(ValueError, match="not by chat-template args"):
        check_chat_template_args(kwargs)  # a profile's own args: the same rule


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [({"custom": {"nested": True}}, "no lists or objects"),
     ({"custom": "x" * 1001}, "too long"),
     ({"custom": 10**9}, "from -1,000,000 to 1,000,000"),
     ({f"k{i}": 1 for i in range(40)}, "at most 32"),
     ({"not a name": 1}, "not a usable argument name"),
     ({"enable_thinking": "no"}, "must be true or false"),
     ("enable_thinking", "must be an object")],
)  # fmt: skip
def test_template_kwargs_are_simple_bounded_values(kwargs, says):
    error = _refusal({"messages": HI, "chat_template_kwargs": kwargs}, template_variables=None)
    assert says in error.message


def test_only_what_the_models_template_reads_may_be_set():
    reads = frozenset({"reasoning_effort"})
    error = _refusal({"messages": HI, "chat_template_kwargs": {"foo": 1}}, template_variables=reads)
    assert "enable_thinking, reasoning_effort" in error.message and "foo" in error.message
    for kwargs in ({"reasoning_effort": "high"}, {"enable_thinking": False}):
        body = {"messages": HI, "chat_template_kwargs": kwargs}
        out = build_upstream_body(
            body, endpoint="chat/completions", max_tokens=8, template_variables=reads
        )
        assert out["chat_template_kwargs"] == kwargs


TEMPLATES = [
    # (template, the variables a request may set)
    ("{{ messages }}{% if enable_thinking %}x{% endif %}", {"enable_thinking"}),
    ("{% for m in messages %}{{ m.content }}{% endfor %}{{ reasoning_effort }}{{ bos_token }}",
     {"reasoning_effort"}),
    ("{% generation %}{{ custom }}{% endgeneration %}{% for i in range(3) %}{% break %}"
     "{% endfor %}{{ max_length }}{{ padding }}", {"custom"}),
    ("{% if %}", None),  # jinja cannot parse it: nothing but enable_thinking will do
]  # fmt: skip


@pytest.mark.parametrize(("template", "allowed"), TEMPLATES)
def test_the_variables_a_template_reads(template, allowed):
    expected = frozenset(allowed) if allowed is not None else None
    assert template_variables([template]) == expected
    assert template_variables([]) is None


@pytest.fixture
def effort_model(hf_cache, tmp_path):
    """The tiny text model with a chat template that reads `reasoning_effort` (rendered into
    the prompt, so a request that sets it sends more tokens)."""
    model = tmp_path / "effort-model"
    shutil.copytree(tiny_model_cache("text"), model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{{- bos_token -}}"
        "{%- if reasoning_effort -%}{{- '<|im_start|>system\\nReasoning effort: ' + "
        "reasoning_effort + '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    install_model(hf_cache, "test-org/tiny-effort", source=model)
    return model


def test_a_variable_the_template_reads_reaches_it_and_padding_never_does(
    effort_model, mlx_server_factory, serve_profile, api_key, live_server
):
    assert serving_facts("test-org/tiny-effort").template_variables == {"reasoning_effort"}
    server = mlx_server_factory(effort_model)
    serve_profile(server, "Effort", model_id="test-org/tiny-effort", max_tokens=16)
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)

    def ask(**kwargs):
        return client.chat.completions.create(
            model="effort", messages=HI, extra_body={"chat_template_kwargs": kwargs}
        )

    # What may be set is listed with the model.
    listed = {m.id: m.model_extra for m in client.models.list()}
    assert listed["effort"]["chat_template_kwargs"] == ["enable_thinking", "reasoning_effort"]
    plain, effort = ask(), ask(reasoning_effort="high")
    assert effort.choices[0].message.content == REPLY
    assert effort.usage.prompt_tokens > plain.usage.prompt_tokens  # it reached the template
    for kwargs in ({"padding": "max_length", "max_length": 60000}, {"foo": "bar"}):
        with pytest.raises(openai.BadRequestError) as refused:
            ask(**kwargs)
        assert refused.value.code == "invalid_value"
        assert refused.value.param == "chat_template_kwargs"
    records = UsageRecord.objects.filter(profile_name="Effort").order_by("pk")
    assert [r.error_code for r in records] == ["", "", "invalid_value", "invalid_value"]


def test_enable_thinking_is_always_allowed(
    hf_cache, thinking_server, serve_profile, api_key, live_server
):
    install_model(hf_cache, "test-org/tiny-thinking", source=tiny_model_cache("thinking"))
    serve_profile(thinking_server, "Thinker", model_id="test-org/tiny-thinking", max_tokens=64)
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)
    answer = client.chat.completions.create(
        model="thinker",
        messages=HI,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert answer.choices[0].message.content == THINKING_REPLY


# --- the context ------------------------------------------------------------------------------


def test_a_prompt_far_longer_than_the_context_is_refused_before_any_server_sees_it():
    long = [{"role": "user", "content": "x" * (TINY_CONTEXT * schema.MAX_CHARS_PER_TOKEN + 1)}]
    error = _refusal({"messages": long}, context_length=TINY_CONTEXT)
    assert error.code == "context_length_exceeded" and error.status == 400
    assert "maximum context length is 2,048 tokens" in error.message
    with pytest.raises(GatewayError):  # tools count too
        tools = [{"type": "function", "function": {"name": "f", "description": "y" * 70_000}}]
        build_upstream_body(
            {"messages": HI, "tools": tools},
            endpoint="chat/completions",
            max_tokens=8,
            context_length=TINY_CONTEXT,
        )
    out = build_upstream_body(
        {"messages": [{"role": "user", "content": "x" * 60_000}]},
        endpoint="chat/completions",
        max_tokens=8,
        context_length=TINY_CONTEXT,
    )  # within the bound: the server counts the tokens exactly
    assert len(out["messages"][0]["content"]) == 60_000


def test_the_launch_command_gives_the_server_its_models_context(tmp_path):
    options = ServerOptions.from_profile(_Profile(), context_length=32768)
    argv = build_server_command("python", tmp_path, options)
    assert argv[argv.index("--portal-context-length") + 1] == "32768"
    unknown = build_server_command("python", tmp_path, ServerOptions.from_profile(_Profile()))
    assert "--portal-context-length" not in unknown


class _Profile:
    port = 8123
    temperature, top_p, top_k, min_p, max_tokens = 0.0, 1.0, 0, 0.0, 64
    chat_template_args: dict = {}
    num_draft_tokens, prompt_cache_size, decode_concurrency, prompt_concurrency = 3, 10, 32, 8
    kv_bits = None
    trust_remote_code = False


@pytest.fixture(scope="module")
def context_server(tmp_path_factory):
    """The tiny text model served as the portal serves it, told its context (2048)."""
    with running_mlx_server(
        tiny_model_cache("text"),
        log_path=tmp_path_factory.mktemp("context-server") / "server.log",
        extra_args=["--portal-context-length", str(TINY_CONTEXT)],
    ) as server:
        yield server


def test_a_prompt_longer_than_the_context_is_refused_by_the_server_counted_exactly(
    served_model, context_server, serve_profile, api_key, live_server
):
    assert serving_facts(served_model).context_length == TINY_CONTEXT
    serve_profile(context_server, "Tiny", model_id=served_model, max_tokens=64)
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)
    words = " ".join(f"word{i}" for i in range(3000))  # ~15,000 tokens, ~26,000 characters
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": words}])
    assert refused.value.code == "context_length_exceeded"
    message = refused.value.body["message"]
    assert "maximum context length is 2048 tokens, but the prompt has" in message
    # The server is fine, and a reply is cut to what the context leaves (not refused).
    answer = client.chat.completions.create(model="tiny", messages=HI, max_tokens=64)
    assert answer.choices[0].message.content == REPLY
    record = UsageRecord.objects.filter(profile_name="Tiny").order_by("pk").first()
    assert (record.status, record.status_code, record.error_code) == (
        "error",
        400,
        "context_length_exceeded",
    )


# --- hostile bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "code"),
    [(5_000, "invalid_value"),  # read, then refused: not messages
     (100_000, "invalid_json")],  # too deep to read (RecursionError: it was an HTML 500)
)  # fmt: skip
def test_json_nested_too_deeply_is_a_400_not_a_500(api_key, make_profile, settings, depth, code):
    make_profile("Tiny")
    body = '{"model": "tiny", "messages": ' + "[" * depth + "]" * depth + "}"
    client = Client(headers={"Authorization": f"Bearer {api_key}"})
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    # The hop reads bodies the same way (another host's web tier sends them).
    from servers.gateway import hop

    settings.HOP_SECRET = "a-secret"
    token = hop.hop_token(settings.HOST_NAME, "a-secret")
    response = Client().post(
        "/internal/hop/tiny/v1/chat/completions", data=body, content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


# --- connections ------------------------------------------------------------------------------


def test_a_connection_reset_before_any_answer_is_tried_again():
    """A burst over a listen queue's size got resets from a healthy server: the request never
    reached it, so sending it again is safe (and nothing was sent to the client yet)."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    requests: list[bytes] = []

    def serve() -> None:
        first, _ = listener.accept()  # reset at once, as an overflowing queue does
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        first.close()
        second, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += second.recv(65536)
        requests.append(data)
        body = b'{"choices": [{"message": {"content": "ok"}}]}'
        second.sendall(HEAD.replace(b"text/event-stream", b"application/json") + body)
        second.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    response = transport.send(url, "chat/completions", {"messages": HI}, "tiny")
    try:
        assert response.status_code == 200
        assert json.loads(response.read())["choices"][0]["message"]["content"] == "ok"
    finally:
        response.close()
        listener.close()
    assert len(requests) == 1
    assert transport.connections_in_use() == 0


def test_a_server_that_resets_every_time_is_unreachable_not_retried_forever():
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    accepted = []

    def serve() -> None:
        for _ in range(transport.SEND_ATTEMPTS):
            connection, _ = listener.accept()
            accepted.append(1)
            connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(GatewayError) as raised:
        transport.send(url, "chat/completions", {"messages": HI}, "tiny")
    listener.close()
    assert raised.value.status == 503 and raised.value.code == "server_unreachable"
    assert len(accepted) == transport.SEND_ATTEMPTS
    assert transport.connections_in_use() == 0


def test_the_server_does_not_tell_the_hosts_system_in_its_fingerprint(
    served_model, mlx_server, serve_profile, api_key, live_server
):
    import platform

    serve_profile(mlx_server, "Tiny", model_id=served_model)
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)
    answer = client.chat.completions.create(model="tiny", messages=HI)
    chunks = list(client.chat.completions.create(model="tiny", messages=HI, stream=True))
    for fingerprint in [answer.system_fingerprint, *(c.system_fingerprint for c in chunks)]:
        assert fingerprint.startswith("fp_") and len(fingerprint) == 13
        assert platform.system().lower() not in fingerprint.lower()
        assert platform.release() not in fingerprint
