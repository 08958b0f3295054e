"""The hop carries the engines' requests too: another host's web tier sends an embeddings or a
transcription body (the audio in base64, as the transport sends it), and this host checks it
again before its own engine server answers."""

from __future__ import annotations

import base64
import json

import pytest
from django.utils import timezone

from models_catalog.models import Host
from servers.gateway import hop
from servers.models import Engine, ServerInstance, ServerProfile, State
from tests.support.tiny_engines import EMBED_DIMENSION, wav_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECRET = "a-cluster-secret"


@pytest.fixture
def here(settings, db):
    settings.HOST_NAME = "alpha"
    settings.HOP_SECRET = SECRET
    return Host.objects.create(name="alpha", last_heartbeat=timezone.now())


def running(server, name: str, engine: str, host: Host, owner) -> ServerProfile:
    profile = ServerProfile.objects.create(
        name=name, slug=name.lower(), model_id="test-org/x", host=host, port=server.port,
        owner=owner, engine=engine,
    )  # fmt: skip
    ServerInstance.objects.update_or_create(
        profile=profile, defaults={"state": State.RUNNING, "port": server.port, "pid": server.pid},
    )  # fmt: skip
    return profile


def post(client, slug: str, endpoint: str, body: dict):
    return client.post(
        f"/internal/hop/{slug}/v1/{endpoint}", data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {hop.hop_token('alpha', SECRET)}"},
    )  # fmt: skip


def test_embeddings_and_transcriptions_cross_the_hop_checked_again(
    client, here, member, embed_server, whisper_server
):
    running(embed_server, "Embed", Engine.EMBEDDINGS, here, member)
    running(whisper_server, "Listen", Engine.SPEECH, here, member)

    answer = post(client, "embed", "embeddings", {"input": ["a", "b"], "encoding_format": "float"})
    assert answer.status_code == 200
    assert [len(row["embedding"]) for row in answer.json()["data"]] == [EMBED_DIMENSION] * 2

    audio = base64.b64encode(wav_bytes(0.5)).decode()
    heard = post(client, "listen", "audio/transcriptions", {"file": audio})
    assert heard.status_code == 200 and isinstance(heard.json()["text"], str)

    refused = [
        post(client, "embed", "chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        post(client, "embed", "embeddings", {"input": [[1, 2]]}),
        post(client, "listen", "audio/transcriptions", {"file": "not base64!"}),
        post(client, "listen", "audio/transcriptions",
             {"file": base64.b64encode(b"<svg/>" * 10).decode()}),
    ]  # fmt: skip
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
        (400, "wrong_engine"),
        (400, "unsupported_input"),
        (400, "invalid_value"),
        (400, "unsupported_audio"),
    ]
