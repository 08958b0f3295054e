"""The gateway's look-ups remembered per process (common/rows.py) behind counters that database
triggers bump (servers/migrations/0014_lookup_version.py): while nothing changed, a request's
key, groups, limits and profile cost one read of the counters; any change of the tables they
come from — by `save()`, `QuerySet.update`, the many-to-many managers or raw SQL — is seen at
the very next look-up. In process, on committed data (transactional tests: the counters move
at the commit), as a gateway request makes them: the key, then the caller's membership, then
the profile they name."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.api_keys import create_api_key, find_api_key, still_allowed
from accounts.models import ApiKey, Limits, User
from accounts.teams import membership
from common.rows import lookup_versions
from models_catalog.models import Host
from servers import lookup_triggers
from servers.gateway.calls import find_profile, server_url
from servers.gateway.errors import GatewayError
from servers.lookup_triggers import WATCHED
from servers.models import ServerInstance, ServerProfile, State

pytestmark = pytest.mark.django_db(transaction=True)

VERSION_SQL = "portal_lookup_version"


@pytest.fixture
def team(member):
    group = Group.objects.create(name="Research")
    member.groups.add(group)
    Limits.objects.create(group=group, requests_per_minute=100)
    return group


@pytest.fixture
def profile(make_profile, team):
    profile = make_profile("Tiny", allow_on_demand=False)
    profile.allowed_groups.add(team)
    ServerInstance.objects.create(profile=profile, state=State.RUNNING, port=profile.port)
    return profile


@pytest.fixture
def secret(member):
    return create_api_key(member, "lookups").secret


def look_up(secret: str, model: str = "tiny"):
    """What a gateway request looks up before it sends: its key (with its user), the user's
    groups and limits, the profile it names."""
    api_key = find_api_key(f"Bearer {secret}")
    if api_key is None:
        return None, None, None
    member = membership(api_key.user)
    try:
        profile = find_profile(model, api_key.user, member.group_ids)
    except GatewayError:
        profile = None
    return api_key, member, profile


def warm(secret: str) -> None:
    """Two requests: the first records the key's last use (a change), the second reads the rows
    the next ones are given."""
    look_up(secret)
    look_up(secret)


def test_a_request_after_nothing_changed_reads_only_the_counters(secret, profile):
    warm(secret)
    with CaptureQueriesContext(connection) as queries:
        api_key, member, found = look_up(secret)
    assert [query["sql"] for query in queries] == [
        f"SELECT accounts, servers FROM {VERSION_SQL} WHERE id = 1"
    ]
    assert api_key is not None and api_key.user.email == "member@example.com"
    assert member is not None and member.limits.requests_per_minute == 100
    assert found is not None and found.pk == profile.pk and found.instance.state == State.RUNNING


def test_each_request_gets_its_own_instances_from_the_remembered_rows(secret, profile):
    warm(secret)
    first, _, first_profile = look_up(secret)
    first.user.email = "changed@example.com"
    first_profile.instance.state = State.STOPPED
    second, _, second_profile = look_up(secret)
    assert second.user.email == "member@example.com"
    assert second_profile.instance.state == State.RUNNING


@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(lambda key: key.save(), id="save"),
        pytest.param(
            lambda key: ApiKey.objects.filter(pk=key.pk).update(revoked_at="2026-12-07T08:00Z"),
            id="queryset-update",
        ),
        pytest.param(
            lambda key: _raw(
                "UPDATE accounts_apikey SET revoked_at = %s WHERE id = %s",
                ["2026-12-07 08:00:00", key.pk],
            ),
            id="raw-sql",
        ),
        pytest.param(
            lambda key: _raw("DELETE FROM accounts_apikey WHERE id = %s", [key.pk]), id="raw-delete"
        ),
    ],
)
def test_a_revoked_or_deleted_key_is_refused_at_the_next_look_up(secret, profile, revoke):
    warm(secret)
    api_key = ApiKey.objects.get(user__email="member@example.com")
    api_key.revoked_at = api_key.created_at  # what save() writes
    revoke(api_key)
    assert look_up(secret) == (None, None, None)


@pytest.mark.parametrize(
    "disable",
    [
        pytest.param(
            lambda user: User.objects.filter(pk=user.pk).update(status=User.Status.DISABLED),
            id="queryset-update",
        ),
        pytest.param(
            lambda user: _raw(
                "UPDATE accounts_user SET is_active = %s WHERE id = %s", [False, user.pk]
            ),
            id="raw-sql",
        ),
    ],
)
def test_a_disabled_user_is_refused_at_the_next_look_up_and_in_a_running_stream(
    secret, profile, member, disable
):
    warm(secret)
    api_key, _, _ = look_up(secret)
    assert still_allowed(member.pk, api_key.pk) and still_allowed(member.pk, api_key.pk)
    disable(member)
    assert look_up(secret) == (None, None, None)
    assert not still_allowed(member.pk, api_key.pk)
    assert not still_allowed(member.pk)


def test_a_membership_added_or_removed_is_seen_at_the_next_look_up(secret, member, team):
    other = Group.objects.create(name="Design")
    warm(secret)
    member.groups.add(other)  # the many-to-many manager: an INSERT into the through table
    _, seen, _ = look_up(secret)
    assert seen.group_ids == {team.pk, other.pk}
    _raw("DELETE FROM accounts_user_groups WHERE group_id = %s", [team.pk])
    _, seen, _ = look_up(secret)
    assert seen.group_ids == {other.pk}


def test_a_changed_limit_or_group_name_is_seen_at_the_next_look_up(secret, team):
    warm(secret)
    Limits.objects.filter(group=team).update(requests_per_minute=5)
    _, seen, _ = look_up(secret)
    assert seen.limits.requests_per_minute == 5
    _raw("UPDATE auth_group SET name = %s WHERE id = %s", ["Renamed", team.pk])
    _, seen, _ = look_up(secret)
    assert seen.limits.source["requests_per_minute"] == "group Renamed"
    Limits.objects.create(user=User.objects.get(email="member@example.com"), requests_per_minute=9)
    _, seen, _ = look_up(secret)
    assert seen.limits.requests_per_minute == 9


def test_a_profile_closed_to_the_callers_groups_is_not_found_at_the_next_look_up(
    secret, profile, team
):
    warm(secret)
    closed = Group.objects.create(name="Closed")
    profile.allowed_groups.set([closed])
    assert look_up(secret)[2] is None
    _raw(
        "INSERT INTO servers_serverprofile_allowed_groups (serverprofile_id, group_id) "
        "VALUES (%s, %s)",
        [profile.pk, team.pk],
    )
    assert look_up(secret)[2] is not None


def test_a_stopped_server_is_refused_at_the_next_look_up(secret, profile):
    warm(secret)
    ServerInstance.objects.filter(profile=profile).update(state=State.STOPPED)
    _, _, found = look_up(secret)
    assert found.instance.state == State.STOPPED
    with pytest.raises(GatewayError) as refused:
        server_url(found)
    assert refused.value.code == "server_not_running"


def test_a_profile_or_host_changed_by_raw_sql_is_seen_at_the_next_look_up(secret, profile):
    warm(secret)
    _raw(
        "UPDATE models_catalog_host SET web_url = %s WHERE id = %s",
        ["http://studio-2.lan", profile.host_id],
    )
    assert look_up(secret)[2].host.web_url == "http://studio-2.lan"
    _raw(
        "UPDATE servers_serverprofile SET slug = %s, name = %s WHERE id = %s",
        ["renamed", "Renamed", profile.pk],
    )
    assert look_up(secret)[2] is None
    assert look_up(secret, "renamed")[2].pk == profile.pk
    _raw("DELETE FROM servers_serverinstance WHERE profile_id = %s", [profile.pk])
    _raw(
        "DELETE FROM servers_serverprofile_allowed_groups WHERE serverprofile_id = %s", [profile.pk]
    )
    _raw("DELETE FROM servers_serverprofile WHERE id = %s", [profile.pk])
    assert look_up(secret, "renamed")[2] is None


def test_inside_a_transaction_every_look_up_asks_the_database(secret, profile):
    warm(secret)
    with transaction.atomic():
        assert lookup_versions() is None
        ApiKey.objects.update(revoked_at="2026-12-07T08:00Z")
        assert look_up(secret) == (None, None, None)  # its own change, not yet counted
        transaction.set_rollback(True)
    assert look_up(secret)[0] is not None


# Every table a remembered look-up reads, from the models (a new relation to read must be
# watched too): the key and its user, the user's groups and their limits; the profile, its
# allowed groups, its instance and its host.
READ_BY_LOOKUPS = {
    "accounts": [ApiKey, User, User.groups.through, Group, Limits],
    "servers": [ServerProfile, ServerProfile.allowed_groups.through, ServerInstance, Host],
}


def test_the_triggers_watch_exactly_the_tables_the_look_ups_read():
    assert {
        counter: sorted(model._meta.db_table for model in models)
        for counter, models in READ_BY_LOOKUPS.items()
    } == {counter: sorted(tables) for counter, tables in WATCHED.items()}


def test_every_table_the_look_ups_read_bumps_its_counter(secret, profile, member, team):
    for counter, models in READ_BY_LOOKUPS.items():
        for model in models:
            table = model._meta.db_table
            before = _counters()
            _raw(f'UPDATE "{table}" SET id = id')
            after = _counters()
            assert after[counter] > before[counter], f"{table} does not move '{counter}'"


def test_ensuring_the_triggers_again_changes_nothing(secret, team):
    lookup_triggers.ensure(connection)
    lookup_triggers.ensure(connection)
    before = _counters()
    Limits.objects.filter(group=team).update(requests_per_minute=6)
    assert _counters()["accounts"] == before["accounts"] + 1  # one trigger, not two


@pytest.mark.skipif(connection.vendor != "sqlite", reason="PostgreSQL keeps triggers on ALTER")
def test_a_table_rebuilt_by_a_migration_on_sqlite_gets_its_trigger_back_after_migrate(team):
    """Django's SQLite schema editor rebuilds a table for most ALTERs, which drops its
    triggers; `migrate` puts them back (servers/apps.py), or a web thread would keep rows that
    changed."""
    with connection.schema_editor() as editor:
        editor._remake_table(Limits)
    before = _counters()
    Limits.objects.filter(group=team).update(requests_per_minute=7)
    assert _counters() == before  # the hazard: the rebuilt table has no trigger
    call_command("migrate", verbosity=0)
    Limits.objects.filter(group=team).update(requests_per_minute=8)
    assert _counters()["accounts"] > before["accounts"]


def _counters() -> dict[str, int]:
    versions = lookup_versions()
    assert versions is not None
    return dict([versions.accounts, versions.servers])


def _raw(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
