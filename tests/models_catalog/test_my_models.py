"""My models: what the cache holds (also models fetched outside the portal), size on disk,
last used, and delete — refused while a server uses the model or a download writes it."""

import pytest
from huggingface_hub import snapshot_download

from models_catalog import downloads, tasks
from models_catalog.last_used import (
    mark_model_used,
    models_in_use,
    register_in_use_provider,
    unregister_in_use_provider,
)
from models_catalog.library import DeleteRefused, delete_local_model, my_models
from models_catalog.local import local_model_path
from models_catalog.models import Download, Host
from tests.models_catalog.download_helpers import wait_until

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


def test_delete_removes_the_model_from_the_disk(two_models, admin_client):
    response = admin_client.post("/models/local/delete/", {"repo_id": OUTSIDE}, follow=True)
    assert response.status_code == 200
    assert f"Deleted {OUTSIDE}" in response.content.decode()
    assert local_model_path(OUTSIDE) is None
    assert not (two_models.cache / "models--test-org--tiny-thinking").exists()
    assert local_model_path(TINY) is not None


def test_delete_over_htmx_answers_with_the_refreshed_list(two_models, admin_client):
    response = admin_client.post(
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
def test_bad_delete_requests_get_a_clear_message(hf, admin_client, repo_id, message):
    response = admin_client.post("/models/local/delete/", {"repo_id": repo_id}, follow=True)
    assert message in response.content.decode().replace("&#x27;", "'")


def test_a_hosts_worker_deletes_the_model_and_reports_its_models_again(two_models):
    host = Host.objects.this_machine()
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


# --- the downloads of a deleted model ------------------------------------------------------------


def test_deleting_a_model_says_so_on_its_downloads_and_it_can_be_downloaded_again(
    two_models, member_client, member
):
    completed = Download.objects.get(repo_id=TINY)
    downloaded_at = completed.finished_at
    response = member_client.post("/models/local/delete/", {"repo_id": TINY}, follow=True)
    assert f"Deleted {TINY}" in response.text

    completed.refresh_from_db()
    assert completed.state == Download.State.DELETED
    assert completed.state_reason == "Deleted from local's cache by member@example.com"
    assert completed.state_changed_at > downloaded_at == completed.finished_at  # both kept

    # The Downloads page no longer says Completed, 100%: it says what happened, and offers it again.
    panel = member_client.get("/models/downloads/").text.replace("&#x27;", "'")
    row = panel[panel.index(f'data-repo="{TINY}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-state="deleted"' in row and ">Deleted</span>" in row
    assert "Deleted from local's cache by member@example.com" in row and "100%" not in row
    assert "Download again" in row
    # The model page's download action too.
    action = member_client.get("/models/downloads/action/", {"repo_id": TINY}).text
    assert 'data-state="deleted"' in action and "then deleted: Deleted from local" in action
    assert "Download again</button>" in action

    # Download again: a new download, the deleted one stays as it was.
    response = member_client.post(
        "/models/downloads/start/", {"repo_id": TINY, "revision": "main", "host": "local"}
    )
    assert response.status_code == 302
    again = Download.objects.exclude(pk=completed.pk).get(repo_id=TINY)
    assert again.state == Download.State.QUEUED and again.requested_by == member
    assert downloads.run_download(again.pk) == Download.State.COMPLETED
    assert local_model_path(TINY) is not None
    assert Download.objects.get(pk=completed.pk).state == Download.State.DELETED
    action = member_client.get("/models/downloads/action/", {"repo_id": TINY}).text
    assert 'data-state="completed"' in action and "then deleted" not in action


def test_only_completed_downloads_of_that_model_on_that_host_become_deleted(two_models, member):
    host = Host.objects.this_machine()
    elsewhere = Host.objects.create(name="elsewhere")
    failed = Download.objects.create(repo_id=TINY, revision="f" * 40, host=host, state="failed")
    other_host = Download.objects.create(
        repo_id=TINY, revision="e" * 40, host=elsewhere, state="completed"
    )
    delete_local_model(TINY, host, by="admin@example.com")
    states = dict(Download.objects.values_list("pk", "state"))
    assert states[failed.pk] == "failed" and states[other_host.pk] == "completed"
    assert Download.objects.filter(host=host, repo_id=TINY, state="deleted").count() == 1


def test_a_hosts_worker_deleting_a_model_records_who_asked(two_models, celery_worker):
    """The delete another host's page sends runs on that host's worker (here a real one)."""
    completed = Download.objects.get(repo_id=TINY)
    tasks.delete_model.apply_async(
        args=[TINY],
        kwargs={"deleted_by": "admin@example.com"},
        queue=Host.objects.this_machine().queue,
    )

    def deleted() -> bool:
        completed.refresh_from_db()
        return completed.state == Download.State.DELETED

    wait_until(deleted, timeout=30, what=f"the worker's delete\n{celery_worker.log_tail()}")
    assert completed.state_reason == "Deleted from local's cache by admin@example.com"
    assert local_model_path(TINY) is None


def test_an_admin_or_whoever_downloaded_a_model_may_delete_it_as_the_page_says(
    two_models, make_user, member_client
):
    """What My models states is the rule the delete applies: the host's one cache, whose
    models an admin or the member who downloaded them here may delete."""
    from django.test import Client

    other = Client()
    other.force_login(make_user("other@example.com"))
    html = other.get("/models/local/").content.decode()
    assert "shared Hugging Face cache" in html
    assert "An admin, or the member who downloaded a model here, may delete it" in html
    assert "Only an admin or whoever downloaded it may delete it" in html  # its button says why
    response = other.post("/models/local/delete/", {"repo_id": TINY}, follow=True)
    assert f"Only an admin or whoever downloaded {TINY} here may delete it" in response.text
    assert local_model_path(TINY) is not None
    # A model fetched outside the portal: admins only, even for the member who downloaded TINY.
    response = member_client.post("/models/local/delete/", {"repo_id": OUTSIDE}, follow=True)
    assert "Only an admin or whoever downloaded" in response.text
    assert local_model_path(OUTSIDE) is not None
    response = member_client.post("/models/local/delete/", {"repo_id": TINY}, follow=True)
    assert f"Deleted {TINY}" in response.text
    assert local_model_path(TINY) is None
