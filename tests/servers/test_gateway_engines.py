"""`/v1/embeddings` and `/v1/audio/transcriptions` through the portal, with the official `openai`
client, against the portal's own engine servers (servers/supervision/engine_entry.py) on the
tiny BERT and the tiny Whisper the harness builds (tests/support/tiny_engines.py)."""

from __future__ import annotations

import base64
import io
import struct

import openai
import pytest
import requests

from servers.models import Engine, UsageRecord
from tests.support.tiny_engines import EMBED_CONTEXT, EMBED_DIMENSION, wav_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def client(live_server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0)


@pytest.fixture
def embedder(embed_server, serve_profile):
    return serve_profile(embed_server, "Embed", engine=Engine.EMBEDDINGS)


@pytest.fixture
def listener(whisper_server, serve_profile):
    return serve_profile(whisper_server, "Listen", engine=Engine.SPEECH)


def test_embeddings_of_a_list_have_the_models_dimension_and_repeat_exactly(embedder, client):
    texts = [
        "MLX serves embeddings.",
        "A second, longer sentence to embed.",
        "MLX serves embeddings.",
    ]
    answer = client.embeddings.create(model="embed", input=texts, encoding_format="float")
    vectors = [item.embedding for item in answer.data]
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert all(len(v) == EMBED_DIMENSION for v in vectors)
    assert vectors[0] == vectors[2]  # identical inputs, identical vectors
    assert vectors[0] != vectors[1]
    again = client.embeddings.create(model="embed", input=texts[1], encoding_format="float")
    assert again.data[0].embedding == vectors[1]  # and the same alone as in a batch
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 3

    # The SDK's default asks for base64 and decodes it: the same floats (as float32).
    packed = client.embeddings.create(model="embed", input=texts)
    assert [item.embedding for item in packed.data] == [
        list(struct.unpack(f"<{EMBED_DIMENSION}f", struct.pack(f"<{EMBED_DIMENSION}f", *v)))
        for v in vectors
    ]

    records = UsageRecord.objects.filter(endpoint="embeddings", status="ok").order_by("pk")
    assert [(r.inputs, r.prompt_tokens > 0) for r in records] == [(3, True), (1, True), (3, True)]
    assert records[0].prompt_tokens == answer.usage.prompt_tokens


def test_base64_vectors_decode_to_the_float_ones(embedder, client, live_server, api_key):
    def ask(encoding_format: str) -> dict:
        return requests.post(
            live_server.url + "/v1/embeddings",
            json={"model": "embed", "input": "vectors", "encoding_format": encoding_format},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
        ).json()

    floats = ask("float")["data"][0]["embedding"]
    raw = base64.b64decode(ask("base64")["data"][0]["embedding"])
    assert struct.unpack(f"<{EMBED_DIMENSION}f", raw) == struct.unpack(
        f"<{EMBED_DIMENSION}f", struct.pack(f"<{EMBED_DIMENSION}f", *floats)
    )


def test_hostile_embeddings_requests_are_refused_each_with_its_message(embedder, client):
    cases = [
        (["x"] * 2049, "at most 2048"),
        ("word " * 30_000, "at most 100000"),
        ("word " * (EMBED_CONTEXT + 10), f"reads at most {EMBED_CONTEXT}"),  # counted by the server
        ([[1, 2, 3]], "token ids is not supported"),
        ([], "non-empty list"),
        (["ok", ""], "empty string"),
    ]
    for value, message in cases:
        with pytest.raises(openai.BadRequestError, match=message):
            client.embeddings.create(model="embed", input=value, encoding_format="float")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="embed", input="a", dimensions=8)
    assert not UsageRecord.objects.filter(endpoint="embeddings", status="ok").exists()


def test_transcription_of_a_generated_wav_returns_text_and_counts_its_seconds(listener, client):
    wav = wav_bytes(1.5)
    answer = client.audio.transcriptions.create(
        model="listen", file=("tone.wav", wav, "audio/wav"), language="en"
    )
    assert isinstance(answer.text, str) and answer.text
    text = client.audio.transcriptions.create(
        model="listen", file=("tone.wav", wav, "audio/wav"), response_format="text"
    )
    assert text.strip() == answer.text
    verbose = client.audio.transcriptions.create(
        model="listen", file=("tone.wav", io.BytesIO(wav)), response_format="verbose_json",
        temperature=0.0, prompt="A tone.",
    )  # fmt: skip
    assert verbose.duration == 1.5 and verbose.language == "en"
    records = UsageRecord.objects.filter(endpoint="audio/transcriptions", status="ok")
    assert [r.audio_seconds for r in records] == [1.5, 1.5, 1.5]


def test_hostile_audio_is_refused_each_with_its_message(listener, client, settings):
    settings.GATEWAY_MAX_AUDIO_BYTES = 64 * 1024
    cases = [
        (("big.wav", wav_bytes(3.0), "audio/wav"), openai.APIStatusError, "larger than the limit"),
        (("x.wav", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "audio/wav"),
         openai.BadRequestError, "not audio of a format"),
        (("x.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "audio/wav"),
         openai.BadRequestError, "does not decode as audio"),
    ]  # fmt: skip
    for upload, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            client.audio.transcriptions.create(model="listen", file=upload)
        assert caught.value.status_code in (400, 413)
    with pytest.raises(openai.BadRequestError, match="srt and vtt"):
        client.audio.transcriptions.create(
            model="listen", file=("a.wav", wav_bytes(0.2)), response_format="srt"
        )
    with pytest.raises(openai.BadRequestError, match="ISO-639-1"):
        client.audio.transcriptions.create(
            model="listen", file=("a.wav", wav_bytes(0.2)), language="english please"
        )


def test_each_engine_refuses_the_others_requests_clearly(
    embedder, listener, mlx_server, serve_profile, client
):
    serve_profile(mlx_server, "Tiny")
    with pytest.raises(openai.BadRequestError, match="this model does not make embeddings"):
        client.embeddings.create(model="tiny", input="a")
    with pytest.raises(openai.BadRequestError, match="this model does not transcribe speech"):
        client.audio.transcriptions.create(model="tiny", file=("a.wav", wav_bytes(0.2)))
    with pytest.raises(openai.BadRequestError, match="makes embeddings: it does not chat"):
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="transcribes speech"):
        client.embeddings.create(model="listen", input="a")
    kinds = {m.id: m.model_extra["kind"] for m in client.models.list()}
    assert kinds == {"embed": "embeddings", "listen": "speech-to-text", "tiny": "text"}


def test_transcriptions_and_embeddings_count_against_tokens_per_day(
    embedder, listener, client, member
):
    """A transcription counts its audio (10 tokens a second, records.AUDIO_TOKENS_PER_SECOND)
    and embeddings their input tokens, as a chat counts its tokens: a person with a daily
    limit cannot transcribe unlimited audio. Shown on the Usage page, rebuilt after FLUSHDB."""
    from django.test import Client
    from django.urls import reverse

    from accounts.models import Limits
    from servers.sharing import admission
    from servers.usage.records import AUDIO_TOKENS_PER_SECOND

    Limits.objects.create(user=member, tokens_per_day=40)
    embedded = client.embeddings.create(model="embed", input="count me", encoding_format="float")
    prompt = embedded.usage.prompt_tokens
    assert prompt > 0 and admission.tokens_today(member.pk) == prompt
    client.audio.transcriptions.create(model="listen", file=("a.wav", wav_bytes(1.5)))
    heard = UsageRecord.objects.get(endpoint="audio/transcriptions")
    assert heard.audio_seconds == 1.5 and heard.prompt_tokens == 15 == 1.5 * AUDIO_TOKENS_PER_SECOND
    assert admission.tokens_today(member.pk) == prompt + 15

    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(6):  # 40 tokens: at most 3 more transcriptions of 15 each go through
            client.audio.transcriptions.create(model="listen", file=("a.wav", wav_bytes(1.5)))
    assert refused.value.body["code"] == "tokens_per_day"
    used = sum(r.prompt_tokens + r.completion_tokens for r in UsageRecord.objects.all())
    assert used >= 40 and f"{used:,} used today" in refused.value.body["message"]
    with pytest.raises(openai.RateLimitError):  # embeddings too, once the day's tokens are used
        client.embeddings.create(model="embed", input="more", encoding_format="float")
    admission.forget_everything()  # a Redis loss: the count is rebuilt from the records
    assert admission.tokens_today(member.pk) == used

    browser = Client()
    browser.force_login(member)
    usage = browser.get(reverse("servers:usage")).text
    assert f'<h2 data-testid="total-prompt-tokens">{used}</h2>' in usage
    assert "audio counts 10 a second" in usage
