"""With Redis down, the catalog's work for a host's worker says so instead of answering 500: a
download stays queued and the pages say it starts when the task queue is back (the reconcile
sends it again once Redis answers), a cancel says its files go once the queue is back, and a
delete on another host says it could not be sent. The Redis server is the test's own, stopped
for real (tests/reliability/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from models_catalog import downloads
from models_catalog.models import Download, Host
from tests.hosts.conftest import Queues
from tests.models_catalog.download_helpers import hf  # noqa: F401
from tests.reliability.conftest import point_celery_at

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

S = Download.State
TINY = "test-org/tiny-llama"
TINY_4BIT = "test-org/tiny-llama-4bit"
WAITS = "queued; it starts when the task queue is back"


@pytest.fixture
def redis_down(own_redis):
    own_redis.stop()
    assert not own_redis.answers()
    return own_redis


@pytest.fixture
def client(member) -> Client:
    client = Client()
    client.force_login(member)
    return client


def _page(response) -> str:
    return response.content.decode().replace("&#x27;", "'")


@pytest.mark.usefixtures("hf")
def test_a_download_started_while_redis_is_down_stays_queued_and_starts_once_it_is_back(
    redis_down, client, settings
):
    response = client.post(reverse("catalog:download-start"), {"repo_id": TINY}, follow=True)
    assert response.status_code == 200
    assert f"Download of {TINY}" in _page(response) and WAITS in _page(response)
    download = Download.objects.get(repo_id=TINY)
    assert download.state == S.QUEUED
    assert downloads.WAITING_FOR_QUEUE in download.state_reason
    panel = _page(client.get(reverse("catalog:downloads")))
    assert downloads.WAITING_FOR_QUEUE in panel  # every member sees why it waits

    # The model page's Download button (an HTMX fragment) says so in the fragment.
    fragment = client.post(
        reverse("catalog:download-start"),
        {"repo_id": TINY_4BIT, "fragment": "action"},
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200
    assert downloads.WAITING_FOR_QUEUE in _page(fragment)
    assert Download.objects.get(repo_id=TINY_4BIT).state == S.QUEUED

    # Redis is back: the reconcile sends both again to this host's queue.
    redis_down.start()
    point_celery_at(redis_down.url)
    stale = timezone.now() - timedelta(seconds=settings.DOWNLOAD_REQUEUE_SECONDS + 1)
    Download.objects.update(enqueued_at=stale)
    assert downloads.reconcile_downloads()["resent"] == 2
    queued = Queues(redis_down.url).tasks(f"host.{settings.HOST_NAME}")
    assert sorted(queued) == sorted((downloads.RUN_TASK, [d.pk]) for d in Download.objects.all())


@pytest.mark.usefixtures("hf", "redis_down")
def test_a_cancel_while_redis_is_down_says_its_files_go_once_the_queue_is_back(client, member):
    download, _ = downloads.start_download(TINY, member)
    response = client.post(reverse("catalog:download-cancel", args=[download.pk]), follow=True)
    assert response.status_code == 200
    download.refresh_from_db()
    assert download.state == S.CANCELLED and not download.files_removed
    assert downloads.QUEUE_DOWN_CLEANUP in download.state_reason
    assert "its partial files are removed once the task queue is back" in _page(response)


def test_a_delete_on_another_host_while_redis_is_down_says_it_was_not_sent(
    redis_down, client, member
):
    beta = Host.objects.create(
        name="beta", last_heartbeat=timezone.now(), local_models=[{"repo_id": "acme/m", "size": 1}]
    )
    Download.objects.create(  # the member downloaded it there: theirs to delete
        repo_id="acme/m", revision="a" * 40, host=beta, requested_by=member,
        state=Download.State.COMPLETED,
    )  # fmt: skip
    response = client.post(
        reverse("catalog:local-model-delete"), {"repo_id": "acme/m", "host": "beta"}, follow=True
    )
    assert response.status_code == 200
    page = _page(response)
    assert "The delete of acme/m could not be sent to beta's worker" in page
    assert "Redis (the task queue) is not answering. Nothing was deleted" in page
    beta.refresh_from_db()
    assert beta.model_ids() == ["acme/m"] and beta.last_delete == {}
