"""The embeddings and speech-to-text engines in the pages: the catalog's model page offers to
serve them as such (from the fake Hub, downloaded for real), Serve makes a profile of the
right engine, the profile form shows only the options an engine takes, and the tiles and the
Usage page count their units (inputs, audio seconds)."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from models_catalog import downloads
from models_catalog.models import Download
from servers.models import Engine, ServerProfile, UsageRecord
from tests.models_catalog.download_helpers import hf  # noqa: F401 - a fixture
from tests.servers.helpers import install_model
from tests.support.tiny_engines import tiny_engine_cache

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_queues")]


@pytest.mark.parametrize(
    ("repo_id", "button", "engine"),
    [
        ("test-org/tiny-embed", "Serve as embeddings model", Engine.EMBEDDINGS),
        ("test-org/tiny-whisper", "Serve as speech-to-text model", Engine.SPEECH),
    ],
)
def test_the_model_page_serves_a_downloaded_model_with_its_engine(
    hf,  # noqa: F811 - the fixture
    member,
    member_client,
    repo_id,
    button,
    engine,
):
    download, _ = downloads.start_download(repo_id, member)
    assert downloads.run_download(download.pk) == Download.State.COMPLETED
    page = member_client.get(f"/models/hub/{repo_id}").text
    assert button in page

    response = member_client.post(reverse("servers:serve"), {"repo_id": repo_id})
    profile = ServerProfile.objects.get(model_id=repo_id)
    assert profile.engine == engine
    # Nothing to chat with: the Servers page, filtered to it.
    assert response["Location"] == f"{reverse('servers:list')}?q={profile.slug}"


def test_the_profile_form_shows_only_the_options_of_its_engine(
    hf_cache, member_client, make_profile
):
    install_model(hf_cache, "test-org/tiny-embed", source=tiny_engine_cache("embed"))
    vectors = make_profile("Vectors", model_id="test-org/tiny-embed", engine=Engine.EMBEDDINGS)
    chat = make_profile("Chatty", model_id="test-org/tiny-embed", engine=Engine.TEXT)
    edit = reverse("servers:profile-edit", args=[vectors.slug])
    html = member_client.get(edit).text
    assert '<div class="field" id="field-temperature" data-chat-only hidden>' in html
    assert '<div class="field" id="field-idle_timeout_minutes">' in html
    snippet = member_client.get(reverse("servers:api-snippets"), {"profile": vectors.slug}).text
    assert "client.embeddings.create(" in snippet and "chat.completions" not in snippet
    chat_html = member_client.get(reverse("servers:profile-edit", args=[chat.slug])).text
    assert '<div class="field" id="field-temperature" data-chat-only>' in chat_html

    # An option it does not take is not checked (its field is hidden); the engine is kept.
    form = {
        "name": "Vectors", "slug": vectors.slug, "model_id": vectors.model_id, "engine": "",
        "host": vectors.host_id, "port": vectors.port, "temperature": "99", "top_p": "1",
        "top_k": "0", "min_p": "0", "max_tokens": "512", "num_draft_tokens": "3",
        "prompt_cache_size": "10", "decode_concurrency": "32", "prompt_concurrency": "8",
        "idle_timeout_minutes": "5", "reserved_slots": "0", "queue_length": "100",
        "queue_wait_seconds": "60",
    }  # fmt: skip
    response = member_client.post(edit, form)
    assert response.status_code == 302, response.context["form"].errors
    vectors.refresh_from_db()
    assert (vectors.engine, vectors.idle_timeout_minutes) == (Engine.EMBEDDINGS, 5)
    # A new profile left blank gets the engine of its model (a BERT: embeddings).
    form.update(name="Vectors 2", slug="", port=vectors.port + 10, temperature="0")
    created = member_client.post(reverse("servers:profile-create"), form)
    assert created.status_code == 302, created.context["form"].errors
    assert ServerProfile.objects.get(name="Vectors 2").engine == Engine.EMBEDDINGS


def test_the_profile_forms_model_to_engine_map_reads_the_catalog_once(
    hf_cache, member_client, django_assert_max_num_queries
):
    """One catalog query for the whole map, however many models are on the disk (it was one
    per model: servers.serving.model_engines)."""
    url = reverse("servers:profile-create")
    install_model(hf_cache, "test-org/tiny-embed", source=tiny_engine_cache("embed"))
    with CaptureQueriesContext(connection) as one_model:
        assert member_client.get(url).status_code == 200
    for n in range(8):
        install_model(hf_cache, f"test-org/plain-{n}")
    with django_assert_max_num_queries(len(one_model)):
        page = member_client.get(url).text
    found = re.search(r'<script id="model-engines" type="application/json">(.*?)</script>', page)
    engines = json.loads(found.group(1))
    assert len(engines) == 9
    assert engines["test-org/tiny-embed"] == Engine.EMBEDDINGS
    assert {engines[f"test-org/plain-{n}"] for n in range(8)} == {Engine.TEXT}


def test_tiles_and_the_usage_page_count_inputs_and_audio_seconds(
    member, member_client, make_profile
):
    vectors = make_profile("Vectors", engine=Engine.EMBEDDINGS)
    ears = make_profile("Ears", engine=Engine.SPEECH)
    now = timezone.now()
    for profile, fields in (
        (vectors, {"endpoint": "embeddings", "inputs": 12, "prompt_tokens": 80}),
        (ears, {"endpoint": "audio/transcriptions", "audio_seconds": 93.5}),
    ):
        UsageRecord.objects.create(
            user=member, profile=profile, profile_name=profile.name, source="api",
            status="ok", started_at=now, finished_at=now, **fields,
        )  # fmt: skip
    tiles = member_client.get(reverse("servers:list")).text
    assert '<strong data-testid="inputs">12</strong> inputs /h' in tiles
    assert '<strong data-testid="audio-seconds">94</strong> s audio /h' in tiles
    usage = member_client.get(reverse("servers:usage")).text
    assert '<h2 data-testid="total-inputs">12</h2>' in usage
    assert '<h2 data-testid="total-audio">94 s</h2>' in usage
