"""Admins' changes to groups (teams: Django's `auth.Group`) and to limits: create, rename,
delete, set a group's members, set a group's or a person's limits.

The Groups and Users pages and the Django admin call these, so each change is one audit entry
whichever way it is made. Which limit applies to a person is `accounts.teams`' rule; a
person's own groups are set by `accounts.approval.set_groups`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count

from accounts.audit import log as audit
from accounts.models import Limits, User
from accounts.teams import LIMIT_FIELDS, LIMIT_NAMES, describe, limits_for

NAME_MAX_LENGTH = Group._meta.get_field("name").max_length


def clean_name(name: str) -> str:
    """A group's name as stored: spaces at the ends dropped, runs of spaces made one."""
    return " ".join(name.split())


def name_taken(name: str, *, other_than: Group | None = None) -> Group | None:
    """The group already called `name`, whatever its case (None if there is none)."""
    groups = Group.objects.filter(name__iexact=name)
    if other_than is not None:
        groups = groups.exclude(pk=other_than.pk)
    return groups.first()


def checked_name(name: str, *, other_than: Group | None = None) -> str:
    """`name` as stored, if it may name a group (`other_than`, being renamed); raise
    ValidationError saying what to do otherwise."""
    name = clean_name(name)
    if not name:
        raise ValidationError("Give the group a name, e.g. “Research”.", code="required")
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError(
            f"Keep the name to {NAME_MAX_LENGTH} characters or fewer.", code="max_length"
        )
    if taken := name_taken(name, other_than=other_than):
        raise ValidationError(
            f"There is already a group named “{taken.name}” (names are compared ignoring "
            "case). Pick another name.",
            code="unique",
        )
    return name


def create_group(name: str, *, by: audit.Actor) -> Group:
    with transaction.atomic():
        group = Group.objects.create(name=name)
        audit.record(by, audit.Action.GROUP_CREATE, group, after={"name": name})
    return group


def rename_group(group: Group, name: str, *, by: audit.Actor) -> bool:
    """Rename `group`; False when the name is the same."""
    if group.name == name:
        return False
    before = group.name
    with transaction.atomic():
        group.name = name
        group.save(update_fields=["name"])
        audit.record(
            by, audit.Action.GROUP_RENAME, group, before={"name": before}, after={"name": name}
        )
    return True


def _emails(users) -> list[str]:
    return sorted(user.email for user in users)


def set_members(group: Group, users: Iterable[User], *, by: audit.Actor) -> bool:
    """Make `users` exactly the members of `group`; False when nothing changes."""
    wanted = list(users)
    before = _emails(group.user_set.all())
    after = _emails(wanted)
    if before == after:
        return False
    with transaction.atomic():
        group.user_set.set(wanted)
        audit.record(
            by, audit.Action.GROUP_MEMBERS, group,
            before={"members": before}, after={"members": after},
        )  # fmt: skip
    return True


@dataclass(frozen=True)
class Reach:
    """What deleting a group touches: its members, the profiles it is allowed to, and of those
    the ones it alone is allowed to (with no group rule left, every member may use them)."""

    members: int
    profiles: list[str]
    opened: list[str]


def reach(group: Group) -> Reach:
    # Counted in a query of its own: annotating group.server_profiles would count only the
    # join its own filter made (this group), never the profiles' other groups.
    profile_model = group.server_profiles.model
    profiles = profile_model.objects.filter(pk__in=group.server_profiles.values("pk"))
    counted = profiles.annotate(groups=Count("allowed_groups")).order_by("name")
    rows = list(counted.values_list("name", "groups"))
    return Reach(
        members=group.user_set.count(),
        profiles=[name for name, _ in rows],
        opened=[name for name, groups in rows if groups == 1],
    )


def delete_group(group: Group, *, by: audit.Actor) -> Reach:
    """Delete `group` (its limits go with it; its members stay, outside it)."""
    with transaction.atomic():
        touched = reach(group)
        before = {
            "name": group.name,
            "members": _emails(group.user_set.all()),
            "profiles": touched.profiles,
        }
        audit.record(by, audit.Action.GROUP_DELETE, group, before=before)
        group.delete()
    return touched


def limits_of(owner: Group | User) -> dict[str, int | None]:
    """The limits set on `owner` itself (a group, or a person's own overrides)."""
    row = Limits.objects.filter(**_owner(owner)).first()
    return {name: getattr(row, name) if row else None for name in LIMIT_FIELDS}


def _owner(owner: Group | User) -> dict:
    return {"user": owner} if isinstance(owner, User) else {"group": owner}


def set_limits(owner: Group | User, values: dict[str, int | None], *, by: audit.Actor) -> bool:
    """Set the limits of a group or a person's own (None: no limit); all None removes the row.
    False when nothing changes. Applies from the next request (`teams.limits_for` reads it)."""
    after = {name: values.get(name) for name in LIMIT_FIELDS}
    with transaction.atomic():
        row = Limits.objects.select_for_update().filter(**_owner(owner)).first()
        before = {name: getattr(row, name) if row else None for name in LIMIT_FIELDS}
        if before == after:
            return False
        if all(value is None for value in after.values()):
            row.delete()  # a row exists: otherwise before == after
        else:
            row = row or Limits(**_owner(owner))
            for name, value in after.items():
                setattr(row, name, value)
            row.full_clean()
            row.save()
        record_limits(owner, before, by=by)
    return True


def record_limits(owner: Group | User, before: dict[str, int | None], *, by: audit.Actor) -> bool:
    """One audit entry when `owner`'s limits differ from `before` (for edits saved elsewhere:
    the Django admin's forms); False when they do not."""
    after = limits_of(owner)
    if before == after:
        return False
    audit.record(by, audit.Action.LIMITS, owner, before=before, after=after)
    return True


def summary(row: Limits | None) -> list[str]:
    """The limits a Limits row sets, as text ("100 requests per minute"); [] for none."""
    if row is None:
        return []
    values = [(name, getattr(row, name)) for name in LIMIT_FIELDS]
    return [f"{value:,} {LIMIT_NAMES[name]}" for name, value in values if value is not None]


def applying(user: User) -> list[str]:
    """What applies to `user` now and where it comes from (`accounts.teams`' rule)."""
    limits = limits_for(user)
    return [
        describe(limits, name) if getattr(limits, name) is not None else f"no limit of {text}"
        for name, text in LIMIT_NAMES.items()
    ]
