"""The official `openai` Python client, unchanged, against the portal's /v1/ gateway."""

from __future__ import annotations

import openai
import pytest

from servers.models import UsageRecord
from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def client(live_server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0)


def test_lists_models_and_chats_with_and_without_streaming(mlx_server, serve_profile, client):
    serve_profile(mlx_server, "Tiny")
    assert [m.id for m in client.models.list()] == ["tiny"]

    answer = client.chat.completions.create(model="tiny", messages=HI, temperature=0)
    assert answer.choices[0].message.content == REPLY
    assert answer.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    plain = list(client.chat.completions.create(model="tiny", messages=HI, stream=True))
    assert all(c.usage is None for c in plain)

    completion = client.completions.create(model="tiny", prompt="Hello", max_tokens=5)
    assert completion.usage.completion_tokens <= 5
    assert UsageRecord.objects.filter(status="ok").count() == 4


def test_errors_surface_as_the_clients_own_exceptions(
    mlx_server, serve_profile, client, live_server
):
    serve_profile(mlx_server, "Tiny")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=HI)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=HI, temperature=5)
    bad = openai.OpenAI(base_url=live_server.url + "/v1", api_key="mlxp_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_reasoning_of_a_thinking_model_comes_through(thinking_server, serve_profile, client):
    from tests.support.tiny_models import THINKING_REPLY, THOUGHT

    serve_profile(thinking_server, "Thinker")
    answer = client.chat.completions.create(model="thinker", messages=HI)
    message = answer.choices[0].message
    assert message.content.strip() == THINKING_REPLY
    assert message.model_extra["reasoning"].strip() == THOUGHT
