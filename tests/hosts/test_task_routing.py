"""Every download and server-lifecycle task goes to its host's queue (`host.<name>`).

No worker consumes `host.beta` here: each test reads the message waiting in Redis, so what is
checked is where the portal sent the task, before anybody could take it."""

from __future__ import annotations

import pytest
from django.utils import timezone

from models_catalog import downloads
from models_catalog.models import Download, Host
from servers import tasks
from servers.models import ServerInstance, ServerProfile, State
from servers.supervision import lifecycle

pytestmark = pytest.mark.django_db(transaction=True)

TINY = "test-org/tiny-llama"
GIB = 1024**3


@pytest.fixture
def beta(db):
    """Another host, online (it heartbeats just now), with room on its disk."""
    return Host.objects.create(
        name="beta", last_heartbeat=timezone.now(), memory_total=64 * GIB, disk_free=500 * GIB
    )


@pytest.fixture
def beta_profile(beta, member):
    return ServerProfile.objects.create(
        name="On beta", slug="on-beta", model_id="acme/tiny", host=beta, port=8150, owner=member
    )


def only_on(queues, queue: str) -> list[tuple[str, list]]:
    """The tasks waiting on `queue`, after checking no other queue got any."""
    others = [k.decode() for k in queues.client.keys("*") if k.decode() != queue]
    leaked = {name: queues.tasks(name) for name in others if name.startswith(("host.", "default"))}
    assert not any(leaked.values()), f"tasks sent elsewhere: {leaked}"
    return queues.tasks(queue)


def test_a_download_and_its_control_tasks_go_to_the_hosts_queue(hf, member, beta, queues):
    download, _ = downloads.start_download(TINY, member, host=beta)
    assert only_on(queues, "host.beta") == [("models_catalog.download_model", [download.pk])]
    queues.purge()

    downloads.pause_download(download.pk, member)
    downloads.resume_download(download.pk, member)
    assert only_on(queues, "host.beta") == [("models_catalog.download_model", [download.pk])]
    queues.purge()

    downloads.cancel_download(download.pk, member)
    assert only_on(queues, "host.beta") == [("models_catalog.cleanup_download", [download.pk])]
    queues.purge()

    Download.objects.filter(pk=download.pk).update(files_removed=True)
    downloads.retry_download(download.pk, member)
    assert only_on(queues, "host.beta") == [("models_catalog.download_model", [download.pk])]


def test_a_lost_download_is_requeued_on_its_hosts_queue(member, beta, queues):
    download = Download.objects.create(
        repo_id=TINY, revision="c" * 40, host=beta, state=Download.State.RUNNING,
        lease_owner="gone", lease_expires_at=timezone.now() - timezone.timedelta(seconds=5),
    )  # fmt: skip
    assert downloads.reconcile_downloads()["requeued"] == 1
    assert only_on(queues, "host.beta") == [("models_catalog.download_model", [download.pk])]


def test_start_stop_and_restart_go_to_the_profiles_hosts_queue(beta_profile, queues):
    instance = lifecycle.request_start(beta_profile)
    assert instance.state == State.STARTING
    assert only_on(queues, "host.beta") == [("servers.tasks.launch_server", [instance.pk])]
    queues.purge()

    ServerInstance.objects.filter(pk=instance.pk).update(state=State.RUNNING)
    lifecycle.request_restart(beta_profile)
    assert only_on(queues, "host.beta") == [("servers.tasks.launch_server", [instance.pk])]
    queues.purge()

    ServerInstance.objects.filter(pk=instance.pk).update(state=State.RUNNING)
    lifecycle.request_stop(beta_profile)
    assert only_on(queues, "host.beta") == [("servers.tasks.stop_server", [instance.pk])]


def test_reconcile_fans_out_one_task_per_host_to_its_own_queue(beta_profile, member, queues):
    local = Host.objects.this_machine()
    ServerProfile.objects.create(
        name="Here", slug="here", model_id="acme/tiny", host=local, port=8151, owner=member
    )
    tasks.reconcile()
    assert queues.tasks("host.beta") == [("servers.tasks.reconcile_host", [beta_profile.host.pk])]
    assert queues.tasks(local.queue) == [("servers.tasks.reconcile_host", [local.pk])]
    assert queues.tasks("default") == []


def test_a_workers_autostart_goes_to_its_own_hosts_queue(beta, settings, queues):
    settings.HOST_NAME = "beta"  # as in beta's worker process
    tasks._autostart_on_worker_ready()
    assert only_on(queues, "host.beta") == [("servers.tasks.autostart", ["beta"])]


def test_starting_a_server_on_an_offline_host_is_refused_and_sends_nothing(beta_profile, queues):
    Host.objects.filter(pk=beta_profile.host_id).update(
        last_heartbeat=timezone.now() - timezone.timedelta(minutes=5)
    )
    with pytest.raises(lifecycle.StartRefused, match="Host beta is offline"):
        lifecycle.request_start(beta_profile)
    assert beta_profile.get_instance().state == State.STOPPED
    assert only_on(queues, "host.beta") == []


def test_stopping_a_server_on_an_offline_host_says_it_waits_for_its_worker(beta_profile, queues):
    instance = beta_profile.get_instance()
    ServerInstance.objects.filter(pk=instance.pk).update(state=State.RUNNING)
    Host.objects.filter(pk=beta_profile.host_id).update(
        last_heartbeat=timezone.now() - timezone.timedelta(minutes=5)
    )
    instance = lifecycle.request_stop(beta_profile)
    assert instance.reason == (
        "Stop requested: host beta is offline, so its worker stops the server when it is back."
    )
    assert only_on(queues, "host.beta") == [("servers.tasks.stop_server", [instance.pk])]


def test_the_download_button_starts_the_download_on_the_chosen_host(
    hf, member_client, beta, queues
):
    response = member_client.post(
        "/models/downloads/start/", {"repo_id": TINY, "host": "beta", "fragment": "action"}
    )
    assert response.status_code == 200
    download = Download.objects.get(repo_id=TINY)
    assert download.host == beta
    assert only_on(queues, "host.beta") == [("models_catalog.download_model", [download.pk])]
    assert 'name="host" value="beta"' in response.text or "host=beta" in response.text


def test_a_download_queued_for_an_offline_host_says_it_waits_for_its_worker(
    hf, member_client, beta, queues
):
    Host.objects.filter(pk=beta.pk).update(
        last_heartbeat=timezone.now() - timezone.timedelta(minutes=5)
    )
    member_client.post("/models/downloads/start/", {"repo_id": TINY, "host": "beta"})
    assert Download.objects.get(repo_id=TINY).state == Download.State.QUEUED
    panel = member_client.get("/models/downloads/").content.decode()
    assert "beta is offline: the download waits for its worker" in panel
    Host.objects.filter(pk=beta.pk).update(last_heartbeat=timezone.now())
    assert "is offline" not in member_client.get("/models/downloads/").content.decode()
