"""servers/supervision/monitor.py: each host's worker measures its running servers, and the tiles of
any host's Servers page show what it stored."""

import contextlib
import re
import subprocess
from datetime import timedelta

import psutil
import pytest
from django.urls import reverse
from django.utils import timezone

from models_catalog.models import Host
from servers.models import ServerInstance, State
from servers.supervision import monitor
from tests.servers.helpers import wait_for


@pytest.fixture
def process_tree():
    """A real process with a child (`sh` running `sleep`), as mlx_lm.server's tree is measured;
    killed afterwards."""
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 120 & wait"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    parent = psutil.Process(shell.pid)
    wait_for(lambda: parent.children(), 10, what="the child sleep")
    children = parent.children(recursive=True)
    yield parent
    for process in [parent, *children]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    shell.wait(10)


def _run(profile, process: psutil.Process | None = None, **fields) -> ServerInstance:
    instance = profile.get_instance()
    fields.setdefault("state", State.RUNNING)
    if process is not None:
        fields.update(pid=process.pid, process_create_time=process.create_time())
    ServerInstance.objects.filter(pk=instance.pk).update(**fields)
    instance.refresh_from_db()
    return instance


def _tile(client, slug: str) -> str:
    html = client.get(reverse("servers:list"), headers={"HX-Request": "true"}).content.decode()
    match = re.search(rf'<article[^>]*id="server-{slug}".*?</article>', html, re.S)
    assert match, html[:500]
    return match.group(0)


def test_a_running_servers_process_tree_is_measured_and_its_tile_shows_it(
    member_client, make_profile, process_tree
):
    profile = make_profile("Measured")
    _run(profile, process_tree)

    assert monitor.sample_servers() == 1

    instance = ServerInstance.objects.get(profile=profile)
    own = sum(p.memory_info().rss for p in [process_tree, *process_tree.children()])
    assert instance.rss is not None and instance.rss >= own // 2  # the whole tree: sh + sleep
    assert instance.cpu_percent is not None and instance.cpu_percent >= 0
    assert timezone.now() - instance.stats_at < timedelta(seconds=30)
    tile = _tile(member_client, profile.slug)
    assert 'data-testid="rss"' in tile and 'data-testid="cpu"' in tile


def test_a_process_that_is_gone_is_stored_without_figures(make_profile, process_tree):
    profile = make_profile("Gone")
    _run(profile, process_tree, rss=123, cpu_percent=5.0, stats_at=timezone.now())
    create_time = process_tree.create_time()
    process_tree.kill()
    process_tree.wait(10)
    ServerInstance.objects.filter(profile=profile).update(process_create_time=create_time)

    assert monitor.sample_servers() == 0
    instance = ServerInstance.objects.get(profile=profile)
    assert instance.rss is None and instance.cpu_percent is None


def test_only_this_hosts_active_servers_are_measured(make_profile, process_tree):
    other = Host.objects.create(name="studio-2", last_heartbeat=timezone.now())
    elsewhere = make_profile("Elsewhere", host=other)
    stopped = make_profile("Stopped")
    _run(elsewhere, process_tree)  # a pid of this machine, but the row belongs to studio-2
    _run(stopped, process_tree, state=State.STOPPED)

    assert monitor.sample_servers() == 0
    assert not ServerInstance.objects.filter(stats_at__isnull=False).exists()
    assert monitor.sample_servers("studio-2") == 1  # what studio-2's own worker does


def test_another_hosts_figures_show_on_its_tile(member_client, make_profile):
    """The figures come from the row, written by that host's worker: a server on another
    machine shows its memory and CPU like one on this machine."""
    other = Host.objects.create(name="studio-2", last_heartbeat=timezone.now())
    profile = make_profile("Remote", host=other)
    _run(profile, rss=6 * 2**30, cpu_percent=87.5, stats_at=timezone.now(), pid=4242)

    tile = _tile(member_client, profile.slug)
    assert re.search(r'data-testid="rss">6\.0\xa0GB<', tile), tile
    assert re.search(r'data-testid="cpu">87\.5 %<', tile), tile


@pytest.mark.parametrize(
    "change",
    ["stale", "before the restart", "stopped", "host offline"],
)
def test_no_figures_are_shown_when_they_are_old_or_the_server_is_not_up(
    member_client, make_profile, settings, change
):
    other = Host.objects.create(name="studio-2", last_heartbeat=timezone.now())
    profile = make_profile("Remote", host=other)
    fields = {"rss": 2**30, "cpu_percent": 10.0, "stats_at": timezone.now(), "pid": 4242}
    if change == "stale":
        fields["stats_at"] = timezone.now() - monitor.max_age() - timedelta(seconds=1)
    elif change == "before the restart":  # the previous process's figures, a moment ago
        fields["started_at"] = fields["stats_at"] + timedelta(seconds=1)
    elif change == "stopped":
        fields["state"] = State.STOPPED
    else:
        Host.objects.filter(pk=other.pk).update(
            last_heartbeat=timezone.now() - timedelta(seconds=settings.HOST_OFFLINE_AFTER + 5)
        )
    _run(profile, **fields)

    assert 'data-testid="rss"' not in _tile(member_client, profile.slug)


def test_the_worker_keeps_its_servers_figures_fresh(
    transactional_db, make_profile, process_tree, tmp_path
):
    """A real Celery worker of this host (its own process) samples every
    MLX_PORTAL_SERVER_STATS_SECONDS: the row gets figures, then newer ones."""
    from tests.support.workers import new_worker

    profile = make_profile("Watched")
    _run(profile, process_tree)
    worker = new_worker(tmp_path, MLX_PORTAL_SERVER_STATS_SECONDS="0.5").start()
    try:
        worker.wait_ready()
        first = wait_for(
            lambda: ServerInstance.objects.get(profile=profile).stats_at, 60, what="a sample"
        )
        wait_for(
            lambda: ServerInstance.objects.get(profile=profile).stats_at > first,
            30,
            what="a newer sample",
        )
    finally:
        worker.stop()
    assert ServerInstance.objects.get(profile=profile).rss > 0
