"""config/rows.py: the gateway's one-query look-ups give what the ORM gives, related rows
included, on SQLite and PostgreSQL alike."""

from datetime import UTC, datetime, timedelta

import pytest

from accounts.api_keys import create_api_key, revoke_api_key
from accounts.models import ApiKey
from common.rows import first_row, insert_row
from models_catalog.models import Host
from servers.models import ServerInstance, ServerProfile, State, UsageRecord

pytestmark = pytest.mark.django_db


def concrete_values(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


@pytest.fixture
def profile(member):
    profile = ServerProfile.objects.create(
        name="Rows",
        slug="rows",
        model_id="mlx-community/Tiny-A-4bit",
        port=18555,
        owner=member,
        host=Host.objects.this_machine(),
        chat_template_args={"enable_thinking": False, "nested": [1, "two"]},
        trust_remote_code=True,
        temperature=0.25,
    )
    ServerInstance.objects.create(
        profile=profile,
        state=State.RUNNING,
        port=18555,
        pid=4242,
        command=["python", "-m", "servers.supervision.mlx_entry", "--port", "18555"],
        started_at=datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC),
    )
    return profile


def test_a_row_and_its_relations_equal_what_the_orm_reads(profile):
    expected = ServerProfile.objects.select_related("host", "instance").get(pk=profile.pk)

    found = first_row(ServerProfile, {"slug": "rows"}, related=("host", "instance"))

    assert isinstance(found, ServerProfile)
    assert concrete_values(found) == concrete_values(expected)
    assert found.chat_template_args == {"enable_thinking": False, "nested": [1, "two"]}
    assert found.created_at.tzinfo is not None
    assert concrete_values(found.host) == concrete_values(expected.host)
    assert concrete_values(found.instance) == concrete_values(expected.instance)
    assert found.instance.started_at == datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
    assert found.instance.command[-1] == "18555"
    assert found._state.adding is False and found.instance._state.adding is False


def test_one_query_reads_the_row_with_its_relations(profile, django_assert_num_queries):
    host_name = Host.objects.this_machine().name
    with django_assert_num_queries(1):
        found = first_row(ServerProfile, {"slug": "rows"}, related=("host", "instance"))
        # Loaded as select_related loads them: reading them, both ways, costs nothing more.
        assert found.host.name == host_name
        assert found.instance.profile is found
        assert found.running_url() == "http://127.0.0.1:18555"


def test_a_missing_one_to_one_row_reads_as_does_not_exist_without_a_query(
    profile, django_assert_num_queries
):
    ServerInstance.objects.filter(profile=profile).delete()
    found = first_row(ServerProfile, {"slug": "rows"}, related=("host", "instance"))
    with django_assert_num_queries(0):
        with pytest.raises(ServerInstance.DoesNotExist):
            found.instance  # noqa: B018
        assert found.running_url() is None
    assert found.get_instance().state == State.STOPPED  # created on first use, as before


def test_no_row_is_none(profile):
    assert first_row(ServerProfile, {"slug": "no-such-profile"}) is None
    assert first_row(ServerProfile, {"slug": "no-such"}, related=("host", "instance")) is None


def test_a_list_means_in_and_none_means_is_null(member):
    live = create_api_key(member, "live").api_key
    gone = create_api_key(member, "gone").api_key
    revoke_api_key(gone)
    hashes = [live.key_hash, gone.key_hash, "0" * 64]

    found = first_row(ApiKey, {"key_hash": hashes, "revoked_at": None}, related=("user",))
    assert found.pk == live.pk
    assert found.user.email == member.email
    assert first_row(ApiKey, {"key_hash": [gone.key_hash], "revoked_at": None}) is None
    # The same shape again (a cached plan) with other values.
    assert first_row(ApiKey, {"key_hash": [gone.key_hash, "1" * 64], "revoked_at": None}) is None
    assert first_row(ApiKey, {"key_hash": gone.key_hash})._state.adding is False


def test_values_never_become_sql(profile):
    hostile = "rows' OR '1'='1"
    assert first_row(ServerProfile, {"slug": hostile}) is None
    assert (
        first_row(ServerProfile, {"slug": [hostile, "x); DROP TABLE servers_serverprofile;--"]})
        is None
    )
    assert ServerProfile.objects.filter(slug="rows").exists()


def test_only_foreign_keys_and_one_to_ones_can_be_joined(profile):
    with pytest.raises(ValueError, match="not a foreign key or a one-to-one"):
        first_row(ServerProfile, {"slug": "rows"}, related=("name",))


def test_a_row_changed_after_a_first_read_is_read_fresh(profile):
    first_row(ServerProfile, {"slug": "rows"}, related=("host", "instance"))
    ServerInstance.objects.filter(profile=profile).update(
        state=State.FAILED, started_at=datetime.now(UTC) - timedelta(hours=1)
    )
    again = first_row(ServerProfile, {"slug": "rows"}, related=("host", "instance"))
    assert again.instance.state == State.FAILED
    assert again.running_url() is None


def test_a_compiled_query_gives_the_orms_rows_and_sees_later_changes(profile, member):
    from common.rows import compiled_rows

    columns = ("slug", "chat_template_args", "trust_remote_code", "created_at",
               "instance__state", "instance__started_at", "host__name")  # fmt: skip
    built = []

    def build():
        built.append(1)
        return (
            ServerProfile.objects.select_related("instance").order_by("slug").values_list(*columns)
        )

    def orm():
        return list(ServerProfile.objects.order_by("slug").values_list(*columns))

    first = compiled_rows(ServerProfile, "test-rows", build)
    assert first == orm()
    assert first[0][1] == {"enable_thinking": False, "nested": [1, "two"]}
    assert first[0][2] is True and first[0][3].tzinfo is not None

    ServerProfile.objects.create(
        name="Another", slug="another", model_id="m/x", port=18556, owner=member,
        host=Host.objects.this_machine(),
    )  # fmt: skip
    ServerInstance.objects.filter(profile=profile).update(state=State.FAILED)
    again = compiled_rows(ServerProfile, "test-rows", build)
    assert again == orm() and len(again) == 2
    assert dict((row[0], row[4]) for row in again)["rows"] == State.FAILED
    assert built == [1]  # compiled once: the second call ran the same SQL


def test_a_compiled_query_takes_new_values_for_its_placeholders(profile, member):
    from common.rows import compiled_rows

    ServerProfile.objects.create(
        name="Another", slug="another", model_id="m/x", port=18556, owner=member,
        host=Host.objects.this_machine(),
    )  # fmt: skip
    ids = sorted(ServerProfile.objects.values_list("pk", flat=True))

    def above(pk):
        return compiled_rows(
            ServerProfile,
            "test-rows-above",
            lambda: ServerProfile.objects.filter(pk__gt=0).order_by("pk").values_list("pk"),
            params=[pk],
        )

    assert above(ids[0]) == [(ids[1],)]  # compiled by this call: its value, not the build's
    assert above(0) == [(ids[0],), (ids[1],)]
    assert above(ids[1]) == []
    with pytest.raises(ValueError, match="1 placeholders"):
        compiled_rows(ServerProfile, "test-rows-above", lambda: None, params=[1, 2])


def test_an_inserted_row_equals_what_the_orm_creates(profile, member):
    values = {
        "user_id": member.pk, "api_key_id": None, "profile_id": profile.pk,
        "profile_name": "Rows ünïcode", "host_id": profile.host_id, "source": "api",
        "endpoint": "chat/completions", "stream": True, "prompt_tokens": 5,
        "completion_tokens": 128, "ttft_ms": 12.5, "generation_ms": None, "duration_ms": 300.25,
        "status": "ok", "status_code": 200, "error_code": "", "route_name": "",
        "queue_ms": None, "started_at": datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC),
        "finished_at": datetime(2026, 12, 1, 8, 30, 16, tzinfo=UTC),
    }  # fmt: skip
    expected = UsageRecord.objects.create(**values)

    first = insert_row(UsageRecord, values)
    second = insert_row(UsageRecord, {**values, "prompt_tokens": 7, "stream": False})  # compiled

    assert first != second and expected.pk not in (first, second)
    rows = {row.pk: concrete_values(row) for row in UsageRecord.objects.all()}
    assert rows[first] == {**concrete_values(expected), "id": first}
    assert rows[second] == {**rows[first], "id": second, "prompt_tokens": 7, "stream": False}


def test_a_column_left_out_of_an_insert_gets_its_default(profile, member):
    """As `Model()` fills it: a column added to the model later does not break the INSERT."""
    pk = insert_row(UsageRecord, {"user_id": member.pk, "profile_name": "Rows", "status": "ok"})

    row = UsageRecord.objects.get(pk=pk)
    assert (row.user_id, row.profile_id, row.prompt_tokens, row.stream) == (
        member.pk,
        None,
        0,
        False,
    )
    assert row.status_code == 200 and row.started_at is not None


def test_an_insert_needs_columns_of_the_model(member):
    with pytest.raises(KeyError):
        insert_row(UsageRecord, {"user_id": member.pk, "no_such_column": 1})
