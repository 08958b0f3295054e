"""The one lock mechanism (accounts.locks): a named row, held for a transaction or leased."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts import locks
from accounts.models import Lock

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lease_is_taken_once_until_it_is_given_back():
    with locks.lease("pass:alpha", 60) as first:
        assert first
        with locks.lease("pass:alpha", 60) as second:
            assert not second  # held: a second pass skips its turn
        with locks.lease("pass:beta", 60) as other:
            assert other  # another name is another lock
    with locks.lease("pass:alpha", 60) as again:
        assert again  # given back on leaving


def test_a_lease_whose_holder_died_runs_out():
    with locks.lease("pass:alpha", 60) as taken:
        assert taken
    Lock.objects.filter(name="pass:alpha").update(
        held_by="a-dead-worker", held_until=timezone.now() - timedelta(seconds=1)
    )
    with locks.lease("pass:alpha", 60) as taken:
        assert taken


def test_only_one_of_many_threads_takes_a_free_lease():
    """One conditional UPDATE takes the row: of eight threads at once, one holds it (until the
    seven others have been refused), on SQLite and PostgreSQL alike."""
    barrier = threading.Barrier(8)
    results: list[bool] = []
    refused_all = threading.Event()
    lock = threading.Lock()

    def contend() -> None:
        try:
            barrier.wait(10)
            with locks.lease("pass:race", 60) as got:
                with lock:
                    results.append(got)
                    if results.count(False) == 7:
                        refused_all.set()
                if got:
                    refused_all.wait(10)  # held while the others try
        finally:
            connection.close()

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [False] * 7 + [True]


def test_hold_needs_a_transaction_and_keeps_the_row():
    with pytest.raises(RuntimeError, match=r"inside transaction.atomic\(\)"):
        locks.hold("critical")
    with transaction.atomic():
        locks.hold("critical")
    assert Lock.objects.filter(name="critical").exists()
