"""The triggers that keep the gateway's remembered look-ups honest (common/rows.py,
`lookup_versions`): a one-row table of two counters, and on every table those look-ups read,
a trigger that bumps its counter on any INSERT, UPDATE or DELETE (and TRUNCATE on PostgreSQL)
— whatever makes the change: `save()`, `QuerySet.update`, the many-to-many managers, the
Django admin, raw SQL.

`ensure` creates what is missing and is run by migration servers/0014 and again after every
`migrate` (servers/apps.py): SQLite drops a table's triggers when Django's schema editor
rebuilds the table (most ALTERs on SQLite), and a watched table without its trigger would let a
web thread keep a revoked key's row. On PostgreSQL the row triggers are deferred to the commit
(constraint triggers): the counter row is locked only while a transaction commits, never while
it waits for other rows, and the new count becomes visible with the change it counts.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "portal_lookup_version"
MIGRATION = "0014_lookup_version"  # of servers: the one that creates them first

# The tables each counter watches: what accounts.api_keys.find_api_key and accounts.teams.
# membership read (accounts), and servers.gateway.calls.find_profile (servers). A test checks
# this against the models (tests/servers/test_gateway_lookup_versions.py).
WATCHED: dict[str, tuple[str, ...]] = {
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

_OPERATIONS = ("insert", "update", "delete")
# Triggers are named `plv_<table>_<operation>` (SQLite) or `plv_<table>` and
# `plv_<table>_truncate` (PostgreSQL), within PostgreSQL's 63 characters.
_PREFIX = "plv_"

# Every name in the statements below is this module's own constant: nothing of a request
# reaches them.


def ensure(connection: BaseDatabaseWrapper) -> None:
    """Create the counters' table and row and every trigger that is missing."""
    vendor = connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        raise RuntimeError(f"No look-up version triggers for {vendor} (SQLite, PostgreSQL only).")
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id integer PRIMARY KEY, "
            "accounts bigint NOT NULL, servers bigint NOT NULL)"
        )
        cursor.execute(
            f"INSERT INTO {TABLE} (id, accounts, servers) VALUES (1, 1, 1) "  # noqa: S608
            "ON CONFLICT (id) DO NOTHING"
        )
        for column, tables in WATCHED.items():
            if vendor == "sqlite":
                for table in tables:
                    for operation in _OPERATIONS:
                        cursor.execute(
                            f'CREATE TRIGGER IF NOT EXISTS "{_PREFIX}{table}_{operation}" '  # noqa: S608
                            f'AFTER {operation.upper()} ON "{table}" BEGIN UPDATE {TABLE} '
                            f"SET {column} = {column} + 1 WHERE id = 1; END"
                        )
                continue
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION {TABLE}_bump_{column}() RETURNS trigger "  # noqa: S608
                f"LANGUAGE plpgsql AS $$ BEGIN UPDATE {TABLE} SET {column} = {column} + 1 "
                "WHERE id = 1; RETURN NULL; END $$"
            )
            for table in tables:
                cursor.execute(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass", [f'"{table}"']
                )
                present = {row[0] for row in cursor.fetchall()}
                if f"{_PREFIX}{table}" not in present:
                    cursor.execute(
                        f'CREATE CONSTRAINT TRIGGER "{_PREFIX}{table}" AFTER INSERT OR UPDATE '
                        f'OR DELETE ON "{table}" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW '
                        f"EXECUTE FUNCTION {TABLE}_bump_{column}()"
                    )
                if f"{_PREFIX}{table}_truncate" not in present:
                    # TRUNCATE fires no row trigger (Django's flush truncates between tests).
                    cursor.execute(
                        f'CREATE TRIGGER "{_PREFIX}{table}_truncate" AFTER TRUNCATE ON "{table}" '
                        f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_bump_{column}()"
                    )


def drop(connection: BaseDatabaseWrapper) -> None:
    """Remove the triggers, their functions and the counters' table."""
    with connection.cursor() as cursor:
        for column, tables in WATCHED.items():
            for table in tables:
                if connection.vendor == "postgresql":
                    cursor.execute(f'DROP TRIGGER IF EXISTS "{_PREFIX}{table}" ON "{table}"')
                    cursor.execute(
                        f'DROP TRIGGER IF EXISTS "{_PREFIX}{table}_truncate" ON "{table}"'
                    )
                else:
                    for operation in _OPERATIONS:
                        cursor.execute(f'DROP TRIGGER IF EXISTS "{_PREFIX}{table}_{operation}"')
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP FUNCTION IF EXISTS {TABLE}_bump_{column}()")
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
