"""Bad input, generated (hypothesis): profile, chat and rename forms, the pages' query
strings and the `/v1` JSON bodies never answer 500; every refusal says what is wrong; what a
valid profile turns into on the command line stays inside its lanes."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers.forms import ServerProfileForm
from servers.models import ServerProfile
from servers.supervision.command import LOOPBACK, MLX_ENTRY, ServerOptions, build_server_command

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What people (and scanners) paste into fields: traversal, absolute paths, URLs, shell, huge.
HOSTILE = [
    "..", "../../etc/passwd", "/etc/passwd", "a/../../b", "~/.ssh/id_rsa", "./x", "\\..\\x",
    "%2e%2e%2f", "file:///etc/passwd", "http://169.254.169.254/latest", "$(touch /tmp/pwn)",
    "`id`", "; rm -rf /", "| cat /etc/passwd", "&& reboot", "a\nb", "a\x00b", "\u202e",
    "--trust-remote-code", "-h", "'; DROP TABLE servers_serverprofile; --", "{{ 7*7 }}",
    "<script>alert(1)</script>", "x" * 5000, "9" * 40, "-1", "1e309", "nan", "inf", "-0",
    "65536", "0", "{}", "[]", "null", '{"a": {"b": 1}}', '{"__proto__": 1}', " ", "",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=200),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(str),
)


def _refusals_say_why(form) -> None:
    for field, errors in form.errors.items():
        for error in errors:
            assert isinstance(error, str) and len(error.strip()) > 10, (field, error)


@pytest.fixture
def fuzz_user(db, make_user):
    return make_user("fuzz@example.com")


@FUZZ
@given(data=st.dictionaries(st.sampled_from(ServerProfileForm.Meta.fields), VALUES, max_size=12))
def test_the_profile_form_refuses_bad_fields_with_a_message(local_models, fuzz_user, data):
    form = ServerProfileForm(data, user=fuzz_user)
    if form.is_valid():
        # Nothing saved here; a valid profile must still give a harmless command line.
        profile = form.save(commit=False)
        assert profile.model_id in form.local_model_ids
        _command_line_stays_in_its_lanes(ServerOptions.from_profile(profile))
    else:
        _refusals_say_why(form)


def _command_line_stays_in_its_lanes(options: ServerOptions) -> None:
    from pathlib import Path

    argv = build_server_command("python", Path("/models/m"), options)
    assert argv[:2] == ["python", MLX_ENTRY]
    assert argv[argv.index("--host") + 1] == LOOPBACK
    assert 1 <= int(argv[argv.index("--port") + 1]) <= 65535
    assert all("\x00" not in arg and "\n" not in arg for arg in argv)
    # Every option is one of ours: no value can smuggle in a flag of its own.
    flags = [arg for arg in argv[2:] if arg.startswith("--")]
    assert set(flags) <= {
        "--model", "--host", "--port", "--allowed-origins", "--temp", "--top-p", "--top-k",
        "--min-p", "--max-tokens", "--prompt-cache-size", "--decode-concurrency",
        "--prompt-concurrency", "--chat-template-args", "--kv-bits", "--trust-remote-code",
    }  # fmt: skip


@pytest.fixture
def stopped_profile(db, fuzz_user):
    from models_catalog.models import Host

    return ServerProfile.objects.create(
        name="Stopped", slug="stopped", model_id="acme/tiny", host=Host.objects.this_machine(),
        port=18321,
        owner=fuzz_user, allow_on_demand=False,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(
    data=st.dictionaries(
        st.sampled_from(["profile", "conversation", "message", "temperature", "max_tokens",
                         "retry"]),
        VALUES,
        max_size=6,
    )
)  # fmt: skip
def test_the_chat_form_refuses_bad_messages_with_a_message(stopped_profile, fuzz_user, data):
    client = Client()
    client.force_login(fuzz_user)
    response = client.post("/servers/chat/stream/", data)
    if response.status_code == 400:
        assert len(response.json()["error"]) > 10
    else:  # accepted: the reply stream says the server is stopped, in the chat
        assert response.status_code == 200
        assert b"event: error" in b"".join(response.streaming_content)


QUERY_NAMES = ["q", "lines", "start", "end", "user", "profile"]


@pytest.mark.django_db(transaction=True)
@settings(FUZZ, max_examples=30)
@given(title=VALUES, params=st.dictionaries(st.sampled_from(QUERY_NAMES), VALUES))
def test_pages_and_query_strings_never_fail(stopped_profile, fuzz_user, title, params):
    from servers.models import Conversation

    client = Client()
    client.force_login(fuzz_user)
    conversation = Conversation.objects.create(user=fuzz_user, title="Mine")
    response = client.post(f"/servers/chat/{conversation.pk}/rename/", {"title": title})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert 0 < len(conversation.title) <= 120
    for path in ("/servers/", "/servers/picker/", "/servers/usage/", "/servers/stopped/log/",
                 "/servers/chat/"):  # fmt: skip
        assert client.get(path, params, headers={"HX-Request": "true"}).status_code in (200, 400)


# --- /v1 bodies ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    | st.sampled_from(HOSTILE),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"]) | JSON},
    optional={"content": JSON | st.text(max_size=100), "name": JSON, "tool_calls": JSON},
)
FIELDS = [
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "stop",
    "seed", "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
    "logprobs", "top_logprobs", "tools", "tool_choice", "response_format",
    "chat_template_kwargs", "stream_options", "draft_model", "adapters", "user",
]  # fmt: skip
BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["stopped", "Stopped", "nope", "../stopped", ""]) | JSON,
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "prompt": JSON,
        "stream": st.booleans() | JSON,
        **{name: JSON for name in FIELDS},
    },
)


@pytest.fixture
def fuzz_key(fuzz_user) -> str:
    from accounts.api_keys import create_api_key

    return create_api_key(fuzz_user, "fuzz").secret


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(body=BODY | JSON, endpoint=st.sampled_from(["chat/completions", "completions"]))
def test_v1_bodies_get_an_openai_error_never_a_500(stopped_profile, fuzz_key, body, endpoint):
    client = Client(headers={"Authorization": f"Bearer {fuzz_key}"})
    response = client.post(f"/v1/{endpoint}", json.dumps(body), "application/json")
    # Nothing runs, so nothing is answered: only refusals, each in OpenAI's shape.
    assert response.status_code in (400, 404, 503), response.content[:300]
    error = response.json()["error"]
    assert len(error["message"]) > 10 and error["code"]


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_v1_bodies_that_are_not_json_get_400(stopped_profile, fuzz_key, raw):
    client = Client(headers={"Authorization": f"Bearer {fuzz_key}"})
    response = client.post("/v1/chat/completions", raw, "application/json")
    assert response.status_code in (400, 404)
    assert response.json()["error"]["message"]
