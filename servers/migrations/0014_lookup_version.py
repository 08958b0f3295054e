"""The version row of the gateway's remembered look-ups (common/rows.py, `lookup_versions`):
two counters that database triggers bump on every change of the tables those look-ups read,
whatever made the change — `save()`, `QuerySet.update`, a bulk delete, the admin, raw SQL, a
TRUNCATE (PostgreSQL). A process then keeps the rows of an API key, a person's groups and
limits and a profile as long as the counter of their tables has not moved, and reads that one
row per request instead of the look-ups (docs/benchmarks.md §1l).

On PostgreSQL the row triggers are deferred to the commit (constraint triggers): the counter row
is locked only while the transaction commits, so two transactions never wait on it while
holding other rows (no deadlock), and the new count becomes visible with the change it counts.
"""

from django.db import migrations

TABLE = "portal_lookup_version"

# The tables each counter watches: what accounts.api_keys.find_api_key, accounts.teams.membership
# (accounts) and servers.gateway.calls.find_profile (servers) read.
WATCHED = {
    "accounts": (
        "accounts_apikey",
        "accounts_user",
        "accounts_user_groups",
        "auth_group",
        "accounts_limits",
    ),
    "servers": (
        "servers_serverprofile",
        "servers_serverprofile_allowed_groups",
        "servers_serverinstance",
        "models_catalog_host",
    ),
}

OPERATIONS = ("insert", "update", "delete")


# Every name below is this module's own constant: nothing of a request reaches these statements.


def _sqlite(column: str, table: str) -> list[str]:
    return [
        f'CREATE TRIGGER "{TABLE}_{table}_{operation}" AFTER {operation.upper()} ON "{table}" '  # noqa: S608
        f"BEGIN UPDATE {TABLE} SET {column} = {column} + 1 WHERE id = 1; END"
        for operation in OPERATIONS
    ]


def _postgresql_function(column: str) -> str:
    return (
        f"CREATE FUNCTION {TABLE}_bump_{column}() RETURNS trigger LANGUAGE plpgsql AS $$ "  # noqa: S608
        f"BEGIN UPDATE {TABLE} SET {column} = {column} + 1 WHERE id = 1; RETURN NULL; END $$"
    )


def _postgresql(column: str, table: str) -> list[str]:
    return [
        f'CREATE CONSTRAINT TRIGGER "{TABLE}_{table}" AFTER INSERT OR UPDATE OR DELETE '
        f'ON "{table}" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW '
        f"EXECUTE FUNCTION {TABLE}_bump_{column}()",
        # TRUNCATE fires no row trigger (Django's flush truncates between tests).
        f'CREATE TRIGGER "{TABLE}_{table}_truncate" AFTER TRUNCATE ON "{table}" '
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_bump_{column}()",
    ]


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        raise RuntimeError(f"No look-up version triggers for {vendor} (SQLite, PostgreSQL only).")
    run = schema_editor.execute
    run(
        f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, accounts bigint NOT NULL, "
        "servers bigint NOT NULL)"
    )
    run(f"INSERT INTO {TABLE} (id, accounts, servers) VALUES (1, 1, 1)")  # noqa: S608
    for column, tables in WATCHED.items():
        if vendor == "postgresql":
            run(_postgresql_function(column))
        for table in tables:
            for statement in (_postgresql if vendor == "postgresql" else _sqlite)(column, table):
                run(statement)


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    run = schema_editor.execute
    for column, tables in WATCHED.items():
        for table in tables:
            if vendor == "postgresql":
                run(f'DROP TRIGGER IF EXISTS "{TABLE}_{table}" ON "{table}"')
                run(f'DROP TRIGGER IF EXISTS "{TABLE}_{table}_truncate" ON "{table}"')
            else:
                for operation in OPERATIONS:
                    run(f'DROP TRIGGER IF EXISTS "{TABLE}_{table}_{operation}"')
        if vendor == "postgresql":
            run(f"DROP FUNCTION IF EXISTS {TABLE}_bump_{column}()")
    run(f"DROP TABLE IF EXISTS {TABLE}")


class Migration(migrations.Migration):
    dependencies = [
        ("servers", "0013_message_image"),
        ("accounts", "0004_limits"),
        ("models_catalog", "0008_host_memory_plan"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
