"""Named database locks for the few places that must not run twice at once."""

from django.db import transaction

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
