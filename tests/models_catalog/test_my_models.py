"""My models: what the cache holds (also models fetched outside the portal), size on disk,
last used, and delete — refused while a server uses the model or a download writes it."""

import pytest
from huggingface_hub import snapshot_download

from models_catalog import downloads, tasks
from models_catalog.library import DeleteRefused, delete_local_model, my_models
from models_catalog.local import local_model_path
from models_catalog.models import Host
from models_catalog.usage import (
    mark_model_used,
    models_in_use,
    register_in_use_provider,
    unregister_in_use_provider,
)

pytestmark = pytest.mark.django_db(transaction=True)

TINY = "test-org/tiny-llama"
OUTSIDE = "test-org/tiny-thinking"


@pytest.fixture
def two_models(hf, member):
    """One model downloaded by the portal, one by huggingface_hub directly (as a user would
    with `hf download`)."""
    download, _ = downloads.start_download(TINY, member)
    downloads.run_download(download.pk)
    snapshot_download(OUTSIDE, cache_dir=hf.cache, endpoint=hf.hub.url, token=False)
    return hf


@pytest.fixture
def server_uses_tiny():
    provider = lambda host: {TINY}  # noqa: E731 - what the servers app registers
    register_in_use_provider(provider)
    yield
    unregister_in_use_provider(provider)


def test_my_models_lists_every_model_in_the_cache_with_its_size(two_models, member_client):
    repos = {m.repo_id: m for m in my_models()}
    assert set(repos) == {TINY, OUTSIDE}
    assert all(m.local.size_on_disk > 100_000 for m in repos.values())

    page = member_client.get("/models/local/")
    assert page.status_code == 200
    html = page.content.decode()
    assert TINY in html and OUTSIDE in html
    assert "(disk)" in html  # never started by a server: last read from disk


def test_last_used_is_what_a_server_start_recorded(two_models, member_client):
    assert models_in_use() == set()
    mark_model_used(TINY)
    repos = {m.repo_id: m for m in my_models()}
    assert repos[TINY].last_used_recorded
    assert not repos[OUTSIDE].last_used_recorded


def test_delete_removes_the_model_from_the_disk(two_models, member_client):
    response = member_client.post("/models/local/delete/", {"repo_id": OUTSIDE}, follow=True)
    assert response.status_code == 200
    assert f"Deleted {OUTSIDE}" in response.content.decode()
    assert local_model_path(OUTSIDE) is None
    assert not (two_models.cache / "models--test-org--tiny-thinking").exists()
    assert local_model_path(TINY) is not None


def test_delete_over_htmx_answers_with_the_refreshed_list(two_models, member_client):
    response = member_client.post(
        "/models/local/delete/", {"repo_id": OUTSIDE}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert 'id="my-models"' in html and "<html" not in html
    assert f"Deleted {OUTSIDE}" in html
    assert f'data-repo="{OUTSIDE}"' not in html


def test_delete_is_refused_while_a_server_uses_the_model(two_models, server_uses_tiny):
    with pytest.raises(DeleteRefused, match="in use by a running server: stop that server"):
        delete_local_model(TINY)
    assert local_model_path(TINY) is not None


def test_delete_is_refused_while_the_model_is_being_downloaded(two_models, member):
    downloads.start_download(OUTSIDE, member)  # joins nothing: a new active download
    with pytest.raises(DeleteRefused, match="being downloaded: cancel the download"):
        delete_local_model(OUTSIDE)


@pytest.mark.parametrize(
    ("repo_id", "message"),
    [
        ("", "Enter a model repo id"),
        ("../../etc", "is not a model repo id"),
        ("org/../../x", "is not a model repo id"),
        ("test-org/not-on-disk", "is not on this host's disk"),
    ],
)
def test_bad_delete_requests_get_a_clear_message(hf, member_client, repo_id, message):
    response = member_client.post("/models/local/delete/", {"repo_id": repo_id}, follow=True)
    assert message in response.content.decode().replace("&#x27;", "'")


def test_a_hosts_worker_deletes_the_model_and_reports_its_models_again(two_models):
    host = Host.local()
    host.record_heartbeat()
    reported = {m["repo_id"]: m for m in Host.objects.get(pk=host.pk).local_models}
    assert set(reported) == {TINY, OUTSIDE}
    assert reported[OUTSIDE]["files"] >= 2 and len(reported[OUTSIDE]["revision"]) == 40
    assert reported[OUTSIDE]["size"] > 100_000 and reported[OUTSIDE]["last_accessed"] > 0

    assert tasks.delete_model(OUTSIDE).startswith(f"Deleted {OUTSIDE}")
    assert local_model_path(OUTSIDE) is None
    assert Host.objects.get(pk=host.pk).model_ids() == [TINY]
    assert [m["repo_id"] for m in Host.objects.get(pk=host.pk).local_models] == [TINY]


def test_a_hosts_worker_checks_again_before_deleting(two_models, server_uses_tiny):
    assert "in use by a running server" in tasks.delete_model(TINY)
    assert local_model_path(TINY) is not None
