"""Teams (Django's `auth.Group`) and the limits that apply to a person: the one rule of which
limit wins, and the one query that reads a person's groups and limits on the gateway's hot path.

The rule (`issues show 24`): a user's own value wins; otherwise the most generous of their
groups' values, where a group without that limit (or with no limits row) means no limit, so
joining a group can never tighten what another group of theirs allowed. A user in no group and
with no limits of their own has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import Group
from django.db.models import CharField, IntegerField, Value

from common.rows import compiled_rows, versions_of

from .models import Limits

LIMIT_FIELDS = ("requests_per_minute", "tokens_per_day", "concurrent_requests")

# How a person meets each limit's name: in refusals, on the Usage and API keys pages.
LIMIT_NAMES = {
    "requests_per_minute": "requests per minute",
    "tokens_per_day": "tokens per day",
    "concurrent_requests": "requests in flight at once",
}


@dataclass(frozen=True)
class UserLimits:
    """The limits that apply to one person (None: no limit), and where each comes from
    ("your own limit" or the group's name)."""

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    concurrent_requests: int | None = None
    source: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_FIELDS)


NO_LIMITS = UserLimits()


@dataclass(frozen=True)
class Membership:
    """A person's groups and the limits that apply to them, read in one query."""

    group_ids: frozenset[int]
    limits: UserLimits


def _membership_query():
    # The user's own limits row, then one row per group of theirs with its limits (NULLs when
    # the group has none): one UNION ALL, compiled once per connection (common.rows).
    own = Limits.objects.filter(user_id=0).values_list(
        Value(None, IntegerField()),
        Value(None, CharField()),
        *LIMIT_FIELDS,
    )
    groups = Group.objects.filter(user__id=0).values_list(
        "id", "name", *(f"limits__{name}" for name in LIMIT_FIELDS)
    )
    return own.union(groups, all=True)


def membership(user) -> Membership:
    """`user`'s groups and limits (`limits_for`'s rule), in one query."""
    # A gateway request's user carries the counters read with its key (common/rows.py): then
    # the rows of last time are given again while no group, membership or limit changed.
    versions = versions_of(user)
    rows = compiled_rows(
        Limits,
        "accounts-membership",
        _membership_query,
        params=[user.pk] * 2,
        version=versions.accounts if versions is not None else None,
    )
    own = [row for row in rows if row[0] is None]
    groups = [row for row in rows if row[0] is not None]
    return Membership(
        group_ids=frozenset(row[0] for row in groups),
        limits=_combine(own[0][2:] if own else None, [(row[1], row[2:]) for row in groups]),
    )


def limits_for(user) -> UserLimits:
    """The limits that apply to `user`."""
    return membership(user).limits


def _combine(own: tuple | None, groups: list[tuple[str, tuple]]) -> UserLimits:
    values: dict[str, int | None] = {}
    source: dict[str, str] = {}
    for index, name in enumerate(LIMIT_FIELDS):
        if own is not None and own[index] is not None:
            values[name], source[name] = own[index], "your own limit"
            continue
        if not groups:
            values[name] = None
            continue
        group_values = [(value[index], group) for group, value in groups]
        if any(value is None for value, _ in group_values):
            values[name] = None  # one of their groups has no such limit
            continue
        value, group = max(group_values, key=lambda pair: pair[0])
        values[name], source[name] = value, f"group {group}"
    return UserLimits(**values, source=source)


def describe(limits: UserLimits, name: str) -> str:
    """'100 requests per minute (group Research)'."""
    value = getattr(limits, name)
    where = limits.source.get(name)
    text = f"{value:,} {LIMIT_NAMES[name]}"
    return f"{text} ({where})" if where else text
