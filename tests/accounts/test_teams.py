"""The rule of which limit applies to a person (accounts.teams): their own value wins; else the
most generous of their groups', where a group without that limit means no limit."""

import pytest
from django.contrib.auth.models import Group

from accounts.models import Limits
from accounts.teams import NO_LIMITS, describe, limits_for, membership

pytestmark = pytest.mark.django_db


def group(name, **limits):
    made = Group.objects.create(name=name)
    if limits is not None:
        Limits.objects.create(group=made, **limits)
    return made


@pytest.mark.parametrize(
    "groups, own, expected",
    [
        ([], None, (None, None, None)),
        ([], {"requests_per_minute": 5}, (5, None, None)),
        ([{"requests_per_minute": 10, "tokens_per_day": 1000}], None, (10, 1000, None)),
        # The most generous group wins.
        (
            [{"requests_per_minute": 10, "tokens_per_day": 1000},
             {"requests_per_minute": 30, "tokens_per_day": 500}],
            None, (30, 1000, None),
        ),
        # A group without that limit lifts it.
        ([{"requests_per_minute": 10}, {}], None, (None, None, None)),
        ([{"requests_per_minute": 10}, None], None, (None, None, None)),
        # The user's own value wins over every group, higher or lower.
        ([{"requests_per_minute": 10, "concurrent_requests": 4}], {"requests_per_minute": 2},
         (2, None, 4)),
        ([{"requests_per_minute": 10}], {"requests_per_minute": 50}, (50, None, None)),
    ],
)  # fmt: skip
def test_the_most_specific_then_the_most_generous_limit_applies(member, groups, own, expected):
    for index, limits in enumerate(groups):
        made = Group.objects.create(name=f"team-{index}")
        if limits is not None:
            Limits.objects.create(group=made, **limits)
        member.groups.add(made)
    if own is not None:
        Limits.objects.create(user=member, **own)
    limits = limits_for(member)
    assert (limits.requests_per_minute, limits.tokens_per_day, limits.concurrent_requests) == (
        expected
    )


def test_membership_names_the_groups_and_where_each_limit_comes_from(member, make_user):
    research = group("Research", requests_per_minute=10, tokens_per_day=1000)
    group("Other", requests_per_minute=99)  # not theirs
    member.groups.add(research)
    Limits.objects.create(user=member, tokens_per_day=50)
    Limits.objects.create(user=make_user("else@example.com"), requests_per_minute=1)
    found = membership(member)
    assert found.group_ids == {research.pk}
    assert (
        describe(found.limits, "requests_per_minute") == "10 requests per minute (group Research)"
    )
    assert describe(found.limits, "tokens_per_day") == "50 tokens per day (your own limit)"
    assert membership(make_user("free@example.com")).limits == NO_LIMITS
