"""One row of a model, with the rows it points at, in one plain SQL query: the gateway's
hot path.

The ORM compiles a query each time it runs it, and even `Model.objects.raw` works out each
column's converters again for every row: ~0.15-0.35 ms of CPU a row on the 2-core VM, for
the five rows (an API key and its user; a profile, its host and its instance) that every
gateway request reads before its first byte (docs/benchmarks.md §1f). Here the SQL and the
converters of one shape of look-up are worked out once per database connection; a look-up
then costs one `execute`, the ORM's own converters for its columns (dates, JSON, booleans)
and `Model.from_db`, which builds each instance as a queryset would. Related rows come in
the same query, cached on the instance as `select_related` caches them. Column names come
from the code, never from a request; values are always parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignObject, ForeignObjectRel, Model, QuerySet
from django.db.models.base import ModelState
from django.db.models.expressions import Col
from django.db.models.sql import InsertQuery

# A forward foreign key or one-to-one field (ForeignObject), or the reverse side of a one-to-one.
Relation = ForeignObject | ForeignObjectRel


@dataclass(frozen=True)
class _Part:
    """One model's columns in the SELECT: where they start, and how to build its instance."""

    model: type[Model]
    start: int
    attnames: list[str]
    # (index of the column in the row, its column expression, its converters in ORM order)
    converters: list[tuple[int, Col, list[Callable]]]
    relation: Relation | None  # how the main row reaches it (None: the main)
    pk_index: int  # where its primary key is among its own columns


# Rows remembered per shape of look-up (and per connection): a few keys, profiles and users.
_BUILT_MAX = 256


@dataclass(frozen=True)
class _Seen:
    """A look-up's last answer: the row as the database gave it (None: no row), the instances
    built from it (never handed out: copies are), and the version it was read under (None:
    none was given, so the next look-up asks the database again)."""

    row: tuple | None
    instances: list[Model | None]
    version: Hashable | None


@dataclass(frozen=True)
class _Plan:
    sql: str
    parts: list[_Part]
    built: dict[tuple, _Seen] = dataclasses.field(default_factory=dict)  # by parameters


# One cache per connection object (each thread has its own): converters may be bound to it.
_plans: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict[tuple, _Plan]] = (
    weakref.WeakKeyDictionary()
)


def _is_list(value: object) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _shape(value: object) -> object:
    """What of a value shapes the SQL: NULL, a list of n values (IN), or one value."""
    if value is None:
        return None
    return len(value) if _is_list(value) else "="


def _relation(model: type[Model], name: str) -> Relation:
    relation = model._meta.get_field(name)
    forward = (isinstance(relation, Field) and relation.many_to_one) or relation.one_to_one
    if not relation.is_relation or not forward:
        raise ValueError(f"{model.__name__}.{name} is not a foreign key or a one-to-one relation")
    return cast(Relation, relation)  # what the checks above leave


def _part(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    start: int,
    relation: Relation | None,
) -> _Part:
    table = model._meta.db_table
    converters: list[tuple[int, Col, list[Callable]]] = []
    for index, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if found:
            converters.append((start + index, col, found))
    attnames = [field.attname for field in model._meta.concrete_fields]
    pk_index = attnames.index(model._meta.pk.attname)
    return _Part(model, start, attnames, converters, relation, pk_index)


def _plan(
    connection: BaseDatabaseWrapper, model: type[Model], shape: tuple, related: tuple[str, ...]
) -> _Plan:
    # The stubs type a field's column `str | None`: None only for a field without one, which
    # no concrete field, foreign key or one-to-one field is.
    quote: Callable[..., str] = connection.ops.quote_name
    table = quote(model._meta.db_table)
    parts = [_part(connection, model, 0, None)]
    joins: list[str] = []
    for name in related:
        relation = _relation(model, name)
        other = relation.related_model
        other_table = quote(other._meta.db_table)
        if isinstance(relation, Field):  # this row's key points at the other's target column
            target = quote(relation.target_field.column)
            on = f"{other_table}.{target} = {table}.{quote(relation.column)}"
        else:  # a reverse one-to-one: the other row's key points at this one
            on = (
                f"{other_table}.{quote(relation.field.column)} = "
                f"{table}.{quote(relation.field.target_field.column)}"
            )
        joins.append(f" LEFT JOIN {other_table} ON {on}")
        start = sum(len(part.attnames) for part in parts)
        parts.append(_part(connection, other, start, relation))
    columns = ", ".join(
        f"{quote(part.model._meta.db_table)}.{quote(field.column)}"
        for part in parts
        for field in part.model._meta.concrete_fields
    )
    where: list[str] = []
    count = 0  # placeholders so far: named ones, see _named
    for column, kind in shape:
        name = f"{table}.{quote(column)}"
        if kind is None:
            where.append(f"{name} IS NULL")
        elif kind == "=":
            where.append(f"{name} = %(p{count})s")
            count += 1
        else:
            where.append(f"{name} IN ({', '.join(f'%(p{count + i})s' for i in range(kind))})")
            count += kind
    # Names are the code's own (quoted), values are parameters: nothing of a request is spliced.
    sql = f"SELECT {columns} FROM {table}{''.join(joins)} WHERE {' AND '.join(where)} LIMIT 1"  # noqa: S608
    return _Plan(sql, parts)


def first_row[M: Model](
    model: type[M],
    where: Mapping[str, object],
    related: tuple[str, ...] = (),
    *,
    version: Hashable | None = None,
) -> M | None:
    """The first row of `model` whose columns equal `where`'s values (None: IS NULL; a list
    or tuple: IN), as a model instance; None when there is none. Meant for unique columns.

    `related` names foreign keys and one-to-one relations (either side) to load with it, as
    `select_related` would: reading them afterwards costs no query (a missing one-to-one
    row reads as DoesNotExist, a null foreign key as None).

    `version` (from `lookup_versions`, read before this call) lets the answer be remembered:
    asked again with the same parameters and the same version, it is given again (as new
    copies, or None) without a query. The version must cover every table the look-up reads."""
    alias = router.db_for_read(model)
    connection = connections[alias]
    key = (model, related, *((column, _shape(value)) for column, value in where.items()))
    plans = _plans.setdefault(connection, {})
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _plan(connection, model, key[2:], related)
    params: list[Any] = []  # the database adapter's to judge
    for value in where.values():
        if _is_list(value):
            params.extend(value)
        elif value is not None:
            params.append(value)
    memo_key: tuple | None = tuple(params)
    try:
        seen = plan.built.get(memo_key)  # type: ignore[arg-type]  # a tuple
    except TypeError:  # a parameter that cannot be a key: build, do not remember
        memo_key, seen = None, None
    if seen is not None and version is not None and seen.version == version:
        if seen.row is None:
            return None
        return cast(M, _linked(plan, [_copy(built) for built in seen.instances]))
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, _named(params))
        row = cursor.fetchone()
    if row is None:
        if memo_key is not None and version is not None:
            _remember(plan, memo_key, _Seen(None, [], version))
        return None
    row = tuple(row)
    if seen is not None and seen.row == row:
        instances = seen.instances
    else:
        instances = _build(plan, model, alias, connection, row)
    if memo_key is None:
        return cast(M, _linked(plan, instances))
    _remember(plan, memo_key, _Seen(row, instances, version))
    return cast(M, _linked(plan, [_copy(built) for built in instances]))


def _remember(plan: _Plan, memo_key: tuple, seen: _Seen) -> None:
    if memo_key not in plan.built and len(plan.built) >= _BUILT_MAX:
        plan.built.clear()
    plan.built[memo_key] = seen


def _named(params: Sequence[Any]) -> dict[str, Any]:
    """Parameters by name (`%(p0)s`, `%(p1)s`, …), which both backends take. With `%s`
    placeholders, SQLite's backend rewrites each query with a regular expression before it
    runs: ~70 µs for a look-up's 2 KB of SQL (docs/benchmarks.md §1j); named ones it fills
    with one `%`."""
    return {f"p{index}": value for index, value in enumerate(params)}


_PLACEHOLDER = re.compile(r"(?<!%)%s")


def _with_names(sql: str) -> str:
    """The compiler's SQL with its `%s` placeholders named p0, p1, … in order."""
    names = iter(range(sql.count("%s") + 1))
    return _PLACEHOLDER.sub(lambda _: f"%(p{next(names)})s", sql)


def _build(
    plan: _Plan, model: type[Model], alias: str, connection: BaseDatabaseWrapper, row: Sequence
) -> list[Model | None]:
    """The instances of `row`: the main one, then one per related part (None: no row)."""
    values = list(row)
    for part in plan.parts:
        for index, col, converters in part.converters:
            value = values[index]
            for converter in converters:
                value = converter(value, col, connection)
            values[index] = value
    main = plan.parts[0]
    instances: list[Model | None] = [
        model.from_db(alias, main.attnames, values[: len(main.attnames)])
    ]
    for part in plan.parts[1:]:
        own = values[part.start : part.start + len(part.attnames)]
        other = None
        if own[part.pk_index] is not None:  # LEFT JOIN: no row there
            other = part.model.from_db(alias, part.attnames, own)
        instances.append(other)
    return instances


def _copy(instance: Model | None) -> Model | None:
    """A new instance with the same field values as `instance` (as built by `_build`: no
    relation cached yet), without running the model's __init__ or the converters again."""
    if instance is None:
        return None
    other = instance.__class__.__new__(instance.__class__)
    other.__dict__.update(instance.__dict__)
    for name, value in instance.__dict__.items():
        if isinstance(value, dict | list):  # a JSON field's value: the copy's own
            other.__dict__[name] = copy.deepcopy(value)
    state = ModelState()
    state.db, state.adding = instance._state.db, False
    other._state = state
    return other


def _linked(plan: _Plan, instances: list[Model | None]) -> Model | None:
    """The main instance, with the related ones cached on it as `select_related` caches them
    (a missing one-to-one row reads as DoesNotExist, a null foreign key as None)."""
    instance = instances[0]
    assert instance is not None  # the main row is always there
    for part, other in zip(plan.parts[1:], instances[1:], strict=True):
        part.relation.set_cached_value(instance, other)  # type: ignore[union-attr]  # not the main
        if other is not None and isinstance(part.relation, ForeignObjectRel):
            part.relation.field.set_cached_value(other, instance)  # instance.profile, say
    return instance


# --- a values_list query compiled once ------------------------------------------------------------

_compiled: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict[str, tuple]] = (
    weakref.WeakKeyDictionary()
)


def compiled_rows(
    model: type[Model],
    key: str,
    build: Callable[[], QuerySet],
    params: Sequence[Any] | None = None,
    *,
    version: Hashable | None = None,
) -> list[tuple]:
    """The rows of the `values_list` queryset of `model` that `build()` makes, compiled to SQL
    once per database connection under `key` and run again as is: for a query that a page
    polls (the Servers page's tiles, every 2 s per open page), where compiling cost more than
    running it (1.3 ms of CPU against 0.4 ms, docs/benchmarks.md §2f). The ORM's own
    converters are applied to the rows. `key` must name one shape of query: its SQL is kept,
    and a later `build()` is not called. Its parameters are the first build's, or `params`:
    the values of its placeholders in the compiled SQL's order (a query whose only variable
    part is a value, `pk__gt=…`). With a `version` (as for `first_row`), the rows of the same
    parameters read under the same version are given again without a query."""
    connection = connections[router.db_for_read(model)]
    plans = _compiled.setdefault(connection, {})
    plan = plans.get(key)
    if plan is None:
        queryset = build()
        compiler = queryset.query.get_compiler(connection=connection)
        sql, built = compiler.as_sql()
        plan = plans[key] = (compiler, _with_names(sql), built, {})
    compiler, sql, built_params, seen = plan
    if params is not None and len(params) != len(built_params):
        raise ValueError(f"{key}: {len(params)} parameters for {len(built_params)} placeholders")
    values = tuple(built_params if params is None else params)
    if version is not None:
        remembered = seen.get(values)
        if remembered is not None and remembered[0] == version:
            return list(remembered[1])
    with connection.cursor() as cursor:
        cursor.execute(sql, _named(values))
        rows = cursor.fetchall()
    result = list(compiler.results_iter(results=[rows], tuple_expected=True))
    if version is not None:
        if values not in seen and len(seen) >= _BUILT_MAX:
            seen.clear()
        seen[values] = (version, tuple(result))
    return result


# --- what the remembered look-ups depend on -------------------------------------------------------

# One row of counters that database triggers bump on every change of the tables a remembered
# look-up reads (servers/lookup_triggers.py): `accounts` for API keys, users,
# their groups and limits; `servers` for profiles, their allowed groups, instances and hosts.
_VERSION_SQL = "SELECT accounts, servers FROM portal_lookup_version WHERE id = 1"
_VERSIONS_ATTRIBUTE = "_portal_lookup_versions"


@dataclass(frozen=True)
class LookupVersions:
    """The counters read at the start of one request: pass `accounts` or `servers` as the
    `version` of a look-up that reads only that counter's tables."""

    accounts: tuple[str, int]
    servers: tuple[str, int]


def lookup_versions(alias: str = "default") -> LookupVersions | None:
    """The counters now (one indexed read), or None inside a transaction: there a look-up asks
    the database itself — the transaction sees its own changes before they are counted (on
    PostgreSQL the counters move at the commit), and what it reads may yet be rolled back.

    Read them before the look-ups they guard: a change committed after this read moves the
    counter, so the next request's look-ups ask the database again."""
    connection = connections[alias]
    if connection.in_atomic_block:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_VERSION_SQL)
        accounts, servers = cursor.fetchone()
    return LookupVersions(("accounts", accounts), ("servers", servers))


def carry_versions(instance: Model, versions: LookupVersions | None) -> None:
    """Note on `instance` (a request's user, say) the counters its row was read under, so the
    request's next look-ups that start from it use the same reading (`versions_of`)."""
    setattr(instance, _VERSIONS_ATTRIBUTE, versions)


def versions_of(instance: object) -> LookupVersions | None:
    """The counters `carry_versions` noted on `instance`; None for any other instance (a
    session's user: its look-ups ask the database)."""
    versions = getattr(instance, _VERSIONS_ATTRIBUTE, None)
    return versions if isinstance(versions, LookupVersions) else None


# --- an INSERT compiled once ----------------------------------------------------------------------

# (SQL with named placeholders, the fields in its order, whether it returns the new key)
_inserts: weakref.WeakKeyDictionary[
    BaseDatabaseWrapper, dict[tuple, tuple[str, list[Field], bool]]
] = weakref.WeakKeyDictionary()


def insert_row(model: type[Model], values: Mapping[str, object]) -> Any:
    """INSERT one row of `model` whose columns are `values` (field attnames → Python values;
    a column left out gets its field's default, as `Model()` would give it) and return its
    primary key.

    `Model.objects.create` compiles the INSERT each time (~0.3-0.7 ms of CPU for a usage
    record on the 2-core VM, docs/benchmarks.md §1k); here it is compiled by the ORM once per
    connection and set of columns given, and each call prepares the values with the fields'
    own `get_db_prep_save` (what `save` does). No `save` signals are sent and no instance is
    built: for rows nothing listens to (usage records)."""
    connection = connections[router.db_for_write(model)]
    key = (model, tuple(values))
    plans = _inserts.setdefault(connection, {})
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _insert_plan(connection, model, values)
    sql, fields, returns = plan
    params = {
        f"p{index}": field.get_db_prep_save(
            values[field.attname] if field.attname in values else field.get_default(),
            connection,
        )
        for index, field in enumerate(fields)
    }
    opts = model._meta
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returns:
            return cursor.fetchone()[0]
        return connection.ops.last_insert_id(cursor, opts.db_table, cast(str, opts.pk.column))


def _insert_plan(
    connection: BaseDatabaseWrapper, model: type[Model], values: Mapping[str, object]
) -> tuple[str, list[Field], bool]:
    opts = model._meta
    # The columns `save` inserts for a new row: every concrete one but the automatic key.
    fields = [field for field in opts.local_concrete_fields if field is not opts.auto_field]
    unknown = set(values) - {field.attname for field in fields}
    if unknown:
        raise KeyError(f"{opts.label} has no column {', '.join(sorted(unknown))}")
    query = InsertQuery(model)
    query.insert_values(fields, [model(**values)])
    compiler = query.get_compiler(connection=connection)
    returns = bool(connection.features.can_return_columns_from_insert)
    compiler.returning_fields = [opts.pk] if returns else None
    ((sql, params),) = compiler.as_sql()
    if len(params) != len(fields) or compiler.returning_params:
        raise ValueError(f"{opts.label}: the compiled INSERT is not one placeholder a column")
    return _with_names(sql), fields, returns
