"""The reconcile loop's bookkeeping paths that need no process (the rest: test_supervisor)."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from accounts import locks
from models_catalog.models import Host
from servers import tasks
from servers.models import ServerInstance, State
from servers.supervision import lifecycle

pytestmark = pytest.mark.usefixtures("clean_queues")


def test_beat_runs_the_reconcile_task_every_few_seconds():
    entry = settings.CELERY_BEAT_SCHEDULE["servers-reconcile"]
    assert entry["task"] == tasks.reconcile.name
    assert entry["schedule"] <= 5


def test_a_start_no_worker_picked_up_fails_with_a_hint(make_profile):
    profile = make_profile()
    instance = profile.get_instance()
    instance.transition(State.STARTING, "Start requested", desired_state="running")
    ServerInstance.objects.filter(pk=instance.pk).update(
        state_changed_at=timezone.now() - timedelta(seconds=settings.SERVER_START_TIMEOUT + 1)
    )
    tasks.reconcile_host(Host.objects.this_machine().pk)  # the task body, run here
    instance.refresh_from_db()
    assert instance.state == State.FAILED
    assert "Is its worker running?" in instance.reason


def test_a_running_server_whose_process_is_gone_is_marked_failed_and_scheduled(make_profile):
    profile = make_profile()
    instance = profile.get_instance()
    instance.transition(State.STARTING, "go", desired_state="running")
    instance.transition(State.RUNNING, "ready", pid=2**22 - 3, process_create_time=1.0)
    lifecycle.reconcile()
    instance.refresh_from_db()
    assert instance.state == State.FAILED
    assert instance.reason.startswith("The server ended (exit status unknown")
    assert instance.next_restart_at is not None


def test_restarts_stop_after_the_limit(make_profile, settings):
    settings.SERVER_MAX_RESTARTS = 2
    profile = make_profile()
    instance = profile.get_instance()
    instance.transition(State.STARTING, "go", desired_state="running")
    instance.transition(
        State.FAILED, "boom", restart_count=2, next_restart_at=timezone.now() - timedelta(1)
    )
    lifecycle.reconcile()
    instance.refresh_from_db()
    assert instance.state == State.FAILED
    assert instance.reason == "boom"


def test_back_off_doubles_with_each_restart(make_profile, settings):
    settings.SERVER_RESTART_BACKOFF = 10
    profile = make_profile()
    instance = profile.get_instance()
    delays = []
    for count in range(3):
        ServerInstance.objects.filter(pk=instance.pk).update(
            state=State.RUNNING, desired_state="running", restart_count=count, pid=None
        )
        instance.refresh_from_db()
        before = timezone.now()
        lifecycle.reconcile()
        instance.refresh_from_db()
        delays.append(round((instance.next_restart_at - before).total_seconds()))
    assert delays == [10, 20, 40]


def test_a_supervision_pass_skips_its_turn_while_another_holds_the_hosts_lease(make_profile):
    """The reconcile task of a host runs one pass at a time, whatever the worker threads: a
    pass whose lease is held does nothing (a stuck start is not failed twice at once)."""
    profile = make_profile()
    instance = profile.get_instance()
    instance.transition(State.STARTING, "go", desired_state="running")
    ServerInstance.objects.filter(pk=instance.pk).update(
        state_changed_at=timezone.now() - timedelta(days=1)
    )
    host = Host.objects.this_machine()
    with locks.lease(f"reconcile:{host.name}", 60) as held:
        assert held
        tasks.reconcile_host(host.pk)
        assert ServerInstance.objects.get(pk=instance.pk).state == State.STARTING
    tasks.reconcile_host(host.pk)
    assert ServerInstance.objects.get(pk=instance.pk).state == State.FAILED
