"""Who gets in: sign-up status, approval, admin rights, and the last-admin rule.

Every path that changes a user's status, admin rights or existence — the portal's Users page,
the Django admin (change form, bulk actions, delete view) — calls the functions here, so the
rule "at least one active admin always remains" lives in one place:
`ensure_admins_remain()`.
"""

import logging
from collections.abc import Iterable

from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from accounts import locks
from accounts.audit import log as audit
from accounts.models import ApiKey, User

logger = logging.getLogger(__name__)

FIRST_USER_LOCK = "accounts.first-user"

#: Sent (after the commit) when an admin approves a person: `user`, `by`. accounts/signals.py
#: tells them by email (accounts/notifications.py).
approved_by_admin = Signal()


class LastAdminError(ValidationError):
    """The change would leave the portal without an active admin."""

    def __init__(self, users: Iterable[User]):
        names = ", ".join(sorted(str(user) for user in users))
        super().__init__(
            f"The portal must keep at least one active admin, so {names} cannot lose admin "
            "rights. Make another approved user an admin first.",
            code="last_admin",
        )


def active_admins() -> QuerySet[User]:
    """Users who can sign in and administer: approved, active, staff or superuser."""
    return User.objects.filter(
        Q(is_staff=True) | Q(is_superuser=True),
        is_active=True,
        status=User.Status.APPROVED,
    )


def ensure_admins_remain(losing: Iterable[User | int]) -> None:
    """The last-admin rule. Raise `LastAdminError` if the users in `losing` stopped being
    active admins (demoted, disabled, deactivated or deleted) and no active admin remained.

    Locks the active admins' rows (SELECT … FOR UPDATE, in primary-key order) until the
    surrounding transaction ends, so two admins demoting each other at once are serialised
    and the second sees the first's change. Call it inside `transaction.atomic()` together
    with the change itself.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ensure_admins_remain() must run inside transaction.atomic()")
    losing_ids = {item.pk if isinstance(item, User) else item for item in losing}
    if not losing_ids:
        return
    admins = list(active_admins().select_for_update().order_by("pk"))
    if admins and not [admin for admin in admins if admin.pk not in losing_ids]:
        raise LastAdminError([admin for admin in admins if admin.pk in losing_ids])


def register(user: User, *, by: audit.Actor = None, via: str = "password") -> User:
    """Save a newly signed-up user: the very first becomes an approved superuser, everyone
    after waits as `pending`. The audit log records the sign-up (by the user themselves unless
    `by` says who created the account), and `via` how (password, a provider).

    A named lock makes "am I the first?" and the insert one step, so even twenty sign-ups at
    once on an empty database make exactly one admin.
    """
    with transaction.atomic():
        locks.hold(FIRST_USER_LOCK)
        if User.objects.exists():
            user.status = User.Status.PENDING
            user.is_staff = user.is_superuser = False
        else:
            user.status = User.Status.APPROVED
            user.is_staff = user.is_superuser = True
            user.approved_at = timezone.now()
        user.save()
        action = audit.Action.SIGNUP if by is None else audit.Action.USER_CREATE
        after = {"status": user.status, "admin": user.is_admin, "via": via}
        audit.record(by or user, action, user, after=after)
    return user


# The fields of a user that say who they are and what they may do, recorded when an admin
# edits them directly (the Django admin's change form).
ACCESS_FIELDS = ("email", "username", "status", "is_active", "is_staff", "is_superuser")


def record_edit(user: User, before: dict, *, by: audit.Actor) -> None:
    """One audit entry for a direct edit of `user`'s access fields (`before`: their values
    before the edit), named after what matters most: status, then admin rights."""
    old, new = audit.changes(before, {name: getattr(user, name) for name in ACCESS_FIELDS})
    if not new:
        return
    if "status" in new:
        action = STATUS_ACTIONS[user.status]
    elif {"is_staff", "is_superuser"} & set(new):
        action = audit.Action.MAKE_ADMIN if user.is_admin else audit.Action.REMOVE_ADMIN
    else:
        action = audit.Action.USER_CHANGE
    audit.record(by, action, user, before=old, after=new)


def _ids(users: Iterable[User | int]) -> list[int]:
    return [item.pk if isinstance(item, User) else item for item in users]


def _locked(ids: list[int]) -> list[User]:
    return list(User.objects.select_for_update().filter(pk__in=ids).order_by("pk"))


def save_status(user: User, previous_status: str | None, *, by: audit.Actor) -> None:
    """Save `user` whose `status` may have changed from `previous_status`, with the change's
    consequences: approval records who and when; disabling ends sessions and revokes keys.
    """
    if user.status == User.Status.APPROVED and previous_status != User.Status.APPROVED:
        user.approved_by = by if isinstance(by, User) else None
        user.approved_at = timezone.now()
        if isinstance(by, User):
            transaction.on_commit(
                lambda: approved_by_admin.send(sender=User, user=user, by=by), robust=True
            )
    user.save()
    if user.status == User.Status.DISABLED and previous_status != User.Status.DISABLED:
        end_access(user)


STATUS_ACTIONS = {
    User.Status.APPROVED: audit.Action.APPROVE,
    User.Status.DISABLED: audit.Action.DISABLE,
    User.Status.PENDING: audit.Action.PEND,
}


def set_status(
    users: Iterable[User | int], status: str, *, by: audit.Actor, why: str = ""
) -> list[User]:
    """Approve or disable (or send back to pending) `users`; return those that changed. Each
    change is an audit entry by `by` (a person, or a system actor with `why`)."""
    if status not in User.Status.values:
        raise ValueError(f"unknown status {status!r}")
    ids = _ids(users)
    with transaction.atomic():
        # Admin rows first, then the targets: one lock order everywhere, so no deadlocks.
        if status != User.Status.APPROVED:
            ensure_admins_remain(ids)
        targets = _locked(ids)
        changed = []
        for user in targets:
            if user.status == status:
                continue
            previous, user.status = user.status, status
            save_status(user, previous, by=by)
            audit.record(
                by, STATUS_ACTIONS[status], user, before={"status": previous},
                after={"status": status}, detail=why,
            )  # fmt: skip
            changed.append(user)
    return changed


def approve(users: Iterable[User | int], *, by: audit.Actor, why: str = "") -> list[User]:
    return set_status(users, User.Status.APPROVED, by=by, why=why)


def disable(users: Iterable[User | int], *, by: audit.Actor) -> list[User]:
    return set_status(users, User.Status.DISABLED, by=by)


def set_admin(users: Iterable[User | int], admin: bool, *, by: audit.Actor) -> list[User]:
    """Give (`admin=True`) or take away admin rights (staff + superuser)."""
    ids = _ids(users)
    with transaction.atomic():
        if not admin:
            ensure_admins_remain(ids)
        targets = _locked(ids)
        changed = []
        for user in targets:
            if user.is_staff == admin and user.is_superuser == admin:
                continue
            before = {"admin": user.is_admin}
            user.is_staff = user.is_superuser = admin
            user.save(update_fields=["is_staff", "is_superuser"])
            action = audit.Action.MAKE_ADMIN if admin else audit.Action.REMOVE_ADMIN
            audit.record(by, action, user, before=before, after={"admin": admin})
            changed.append(user)
    return changed


def make_admin(users: Iterable[User | int], *, by: audit.Actor) -> list[User]:
    return set_admin(users, True, by=by)


def remove_admin(users: Iterable[User | int], *, by: audit.Actor) -> list[User]:
    return set_admin(users, False, by=by)


def set_groups(user: User, names: Iterable[str], *, by: audit.Actor, why: str = "") -> bool:
    """Put `user` in exactly the existing groups named `names` (a name with no group is left
    out: groups are made by admins); an audit entry when that changes anything."""
    wanted = list(Group.objects.filter(name__in=set(names)).order_by("name"))
    before = sorted(user.groups.values_list("name", flat=True))
    after = [group.name for group in wanted]
    if before == after:
        return False
    with transaction.atomic():
        user.groups.set(wanted)
        audit.record(by, audit.Action.GROUPS, user, before={"groups": before},
                     after={"groups": after}, detail=why)  # fmt: skip
    return True


def delete_users(users: Iterable[User | int], *, by: audit.Actor) -> int:
    """Delete `users` unless that would remove the last active admin; return how many."""
    ids = _ids(users)
    with transaction.atomic():
        ensure_admins_remain(ids)
        targets = _locked(ids)
        for user in targets:
            end_access(user)
            audit.record(by, audit.Action.USER_DELETE, user, before={"status": user.status})
        User.objects.filter(pk__in=[user.pk for user in targets]).delete()
    return len(targets)


def ensure_edit_allowed(user: User, *, will_be_active_admin: bool) -> None:
    """For forms that edit a user's fields directly (the Django admin's change form): refuse
    the edit if it takes admin rights from the last active admin. Call inside the
    transaction that saves the edit (the Django admin wraps its change view in one)."""
    if user.pk is None or will_be_active_admin:
        return
    current = User.objects.filter(pk=user.pk).first()
    if current is not None and current.is_active_admin:
        ensure_admins_remain([current])


def end_access(user: User) -> None:
    """End every session of `user` at once and revoke their API keys."""
    revoke_api_keys(user)
    user_id = str(user.pk)
    expired_before = timezone.now()
    stale = [
        session.session_key
        for session in Session.objects.filter(expire_date__gt=expired_before).iterator()
        if session.get_decoded().get("_auth_user_id") == user_id
    ]
    Session.objects.filter(session_key__in=stale).delete()
    logger.info("Ended %d session(s) of %s", len(stale), user)


def revoke_api_keys(user: User) -> int:
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def pending_count() -> int:
    return User.objects.filter(status=User.Status.PENDING).count()
