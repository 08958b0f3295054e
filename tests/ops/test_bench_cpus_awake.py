"""The gateway bench's spinner: it runs in the idle scheduling class (it yields to any other
work) while the block runs, and is gone after it."""

import os
import time

import psutil
import pytest

from bench.harness import cpus_awake


def _children() -> set[int]:
    # Other fixtures of the session (Playwright's driver) are children too: compare sets.
    return {child.pid for child in psutil.Process().children()}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE here (macOS): nice 19")
def test_the_spinner_runs_in_the_idle_class_only_inside_the_block():
    before = _children()
    with cpus_awake() as awake:
        assert awake is True
        (pid,) = _children() - before
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(pid) != os.SCHED_IDLE:
            assert time.monotonic() < deadline, "the spinner never entered SCHED_IDLE"
            time.sleep(0.01)
        assert psutil.Process(pid).status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)
    assert not psutil.pid_exists(pid)
    assert _children() - before == set()


def test_disabled_it_starts_nothing():
    before = _children()
    with cpus_awake(enabled=False) as awake:
        assert awake is False
        assert _children() - before == set()
