"""My models for every host: another host's models as its worker reported them, and a delete
there sent to its queue (only its worker touches its disk).

No worker consumes `host.beta` here: the tests read the message waiting in Redis. The whole way
through beta's real worker is in test_two_hosts.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from models_catalog import library
from models_catalog.models import Host
from servers.models import ServerInstance, ServerProfile, State
from tests.hosts.test_task_routing import only_on

pytestmark = pytest.mark.django_db(transaction=True)

GIB = 1024**3
ON_BETA = "acme/beta-model"


@pytest.fixture
def beta(db):
    """Another host, online, whose worker reported two models (one from an older release,
    with its repo id and size only)."""
    now = timezone.now().timestamp()
    return Host.objects.create(
        name="beta", last_heartbeat=timezone.now(), memory_total=64 * GIB,
        hf_cache_dir="/Volumes/models/hub",
        local_models=[
            {"repo_id": ON_BETA, "size": 3 * GIB, "files": 7, "revision": "a1b2c3d4e5f6",
             "last_accessed": now - 7200, "last_modified": now - 86400},
            {"repo_id": "acme/older-report", "size": 5 * 2**20},
        ],
    )  # fmt: skip


def _running_on(host: Host, model_id: str, owner) -> None:
    profile = ServerProfile.objects.create(
        name=f"{model_id} on {host.name}", slug=f"p-{host.name}", model_id=model_id, host=host,
        port=8150 if host.name == "beta" else 8151, owner=owner,
    )  # fmt: skip
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(state=State.RUNNING)


def _delete(client, repo_id: str, host: str) -> str:
    response = client.post("/models/local/delete/", {"repo_id": repo_id, "host": host}, follow=True)
    assert response.status_code == 200
    return response.content.decode().replace("&#x27;", "'")


def test_another_hosts_models_are_listed_as_its_worker_reported_them(member_client, beta):
    html = member_client.get("/models/local/", {"host": "beta"}).content.decode()
    assert f'data-repo="{ON_BETA}"' in html and 'data-repo="acme/older-report"' in html
    assert "3.0\xa0GB" in html and "a1b2c3d4" in html and ">2\xa0hours ago" in html
    assert "/Volumes/models/hub" in html and "as its worker reported them" in html
    assert 'hx-trigger="every 5s"' in html  # the list follows beta's heartbeats
    this_machine = Host.objects.this_machine().name
    assert 'data-testid="host-beta"' in html and f'data-testid="host-{this_machine}"' in html

    here = member_client.get("/models/local/").content.decode()
    assert ON_BETA not in here and "(this machine)" in here
    assert 'hx-trigger="every 5s"' not in here  # read from the disk at each view


def test_deleting_on_another_host_is_a_task_on_its_queue(admin_client, beta, queues):
    html = _delete(admin_client, ON_BETA, "beta")
    assert f"Deleting {ON_BETA} on beta" in html
    assert only_on(queues, "host.beta") == [("models_catalog.delete_model", [ON_BETA])]


def test_a_server_on_that_host_refuses_the_delete_one_elsewhere_does_not(
    admin_client, member, beta, queues
):
    this_machine = Host.objects.this_machine()
    _running_on(this_machine, ON_BETA, member)  # this machine serves a copy of its own
    assert f"Deleting {ON_BETA} on beta" in _delete(admin_client, ON_BETA, "beta")
    queues.purge()
    _running_on(beta, ON_BETA, member)
    assert "in use by a running server" in _delete(admin_client, ON_BETA, "beta")
    assert queues.tasks("host.beta") == []


@pytest.mark.parametrize(
    ("change", "repo_id", "says"),
    [
        ({"last_heartbeat": timezone.now() - timedelta(hours=1)}, ON_BETA,
         "beta is offline: its worker must be running"),
        ({}, "acme/not-there", "acme/not-there is not on beta's disk"),
        ({}, "../etc", "is not a model repo id"),
    ],
)  # fmt: skip
def test_a_delete_elsewhere_that_cannot_be_done_says_why(
    admin_client, beta, queues, change, repo_id, says
):
    Host.objects.filter(pk=beta.pk).update(**change)
    assert says in _delete(admin_client, repo_id, "beta")
    assert queues.tasks("host.beta") == []


def test_an_unknown_host_is_named_as_such(member_client, beta, queues):
    html = member_client.get("/models/local/", {"host": "nope"}).content.decode()
    html = html.replace("&#x27;", "'")
    assert "No host has that name" in html and "Showing this machine's models" in html
    html = _delete(member_client, ON_BETA, "nope")
    assert "No host has that name" in html and "Nothing was deleted" in html
    assert queues.tasks("host.beta") == []


def test_what_that_hosts_worker_did_with_a_delete_shows_on_the_page(
    member_client, member, beta, settings
):
    here = settings.HOST_NAME
    _running_on(beta, ON_BETA, member)  # started after the page had sent the delete
    settings.HOST_NAME = "beta"  # this process plays beta's worker for a moment
    outcome = library.delete_on_this_host(ON_BETA)
    settings.HOST_NAME = here
    assert outcome.startswith("Not deleted:") and "in use by a running server" in outcome

    html = member_client.get("/models/local/", {"host": "beta"}).content.decode()
    html = html.replace("&#x27;", "'")
    assert 'data-testid="delete-notice"' in html and "message-error" in html
    assert f"beta's worker, 0\xa0minutes ago: Not deleted: {ON_BETA} is in use" in html
    assert 'data-testid="delete-notice"' not in member_client.get("/models/local/").content.decode()

    stale = timezone.now() - timedelta(seconds=Host.DELETE_NOTICE_SECONDS + 1)
    Host.objects.filter(pk=beta.pk).update(last_delete_at=stale)  # old news: not shown
    html = member_client.get("/models/local/", {"host": "beta"}).content.decode()
    assert 'data-testid="delete-notice"' not in html
