"""The portal's one lock mechanism: a named database row (`accounts.models.Lock`).

- `hold(name)`: for a rare critical section inside a transaction (approving the first user,
  the last-admin rules): the row is locked until the transaction ends.
- `lease(name, seconds)`: for a long pass that must not keep a transaction open (a host's
  supervision pass probes its servers over HTTP for seconds): one conditional UPDATE takes the
  row when it is free or its lease has run out, and the pass gives it back at the end. A holder
  that dies leaves a lease that runs out by itself.

Both work the same on PostgreSQL and SQLite, and need nothing but the database (Redis may be
down: the portal degrades, it does not fail).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Lock


def hold(name: str) -> None:
    """Take the lock `name` until the surrounding transaction ends.

    Must be called inside `transaction.atomic()`. The row is created on first use (an
    INSERT … ON CONFLICT DO NOTHING), then locked with SELECT … FOR UPDATE, so concurrent
    callers on PostgreSQL queue on the row; SQLite's IMMEDIATE transactions already queue on
    the database's write lock.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("accounts.locks.hold() must be called inside transaction.atomic()")
    Lock.objects.bulk_create([Lock(name=name)], ignore_conflicts=True)
    Lock.objects.select_for_update().get(name=name)


@contextmanager
def lease(name: str, seconds: float) -> Iterator[bool]:
    """Hold the lock `name` for at most `seconds`, without a transaction; yields whether it
    was taken (False: another holder has it), and gives it back on leaving."""
    holder = uuid.uuid4().hex
    now = timezone.now()
    Lock.objects.bulk_create([Lock(name=name)], ignore_conflicts=True)
    taken = Lock.objects.filter(
        Q(held_until__isnull=True) | Q(held_until__lt=now), name=name
    ).update(held_by=holder, held_until=now + timedelta(seconds=seconds))
    try:
        yield bool(taken)
    finally:
        if taken:
            Lock.objects.filter(name=name, held_by=holder).update(held_by="", held_until=None)
