"""The gateway bench's spinner: it runs in the idle scheduling class (it yields to any other
work) while the block runs, and is gone after it."""

import os
import time

import psutil

from bench.harness import cpus_awake


def _spinners() -> list[psutil.Process]:
    return psutil.Process().children()


def test_the_spinner_runs_in_the_idle_class_only_inside_the_block():
    with cpus_awake() as awake:
        assert awake is True
        (spinner,) = _spinners()
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(spinner.pid) != os.SCHED_IDLE:
            assert time.monotonic() < deadline, "the spinner never entered SCHED_IDLE"
            time.sleep(0.01)
        assert spinner.status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)
    assert not spinner.is_running() or spinner.status() == psutil.STATUS_ZOMBIE
    assert _spinners() == []


def test_disabled_it_starts_nothing():
    with cpus_awake(enabled=False) as awake:
        assert awake is False
        assert _spinners() == []
