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

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignObject, ForeignObjectRel, Model, QuerySet
from django.db.models.expressions import Col

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


@dataclass(frozen=True)
class _Plan:
    sql: str
    parts: list[_Part]


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
    for column, kind in shape:
        name = f"{table}.{quote(column)}"
        if kind is None:
            where.append(f"{name} IS NULL")
        elif kind == "=":
            where.append(f"{name} = %s")
        else:
            where.append(f"{name} IN ({', '.join(['%s'] * kind)})")
    # Names are the code's own (quoted), values are parameters: nothing of a request is spliced.
    sql = f"SELECT {columns} FROM {table}{''.join(joins)} WHERE {' AND '.join(where)} LIMIT 1"  # noqa: S608
    return _Plan(sql, parts)


def first_row[M: Model](
    model: type[M], where: Mapping[str, object], related: tuple[str, ...] = ()
) -> M | None:
    """The first row of `model` whose columns equal `where`'s values (None: IS NULL; a list
    or tuple: IN), as a model instance; None when there is none. Meant for unique columns.

    `related` names foreign keys and one-to-one relations (either side) to load with it, as
    `select_related` would: reading them afterwards costs no query (a missing one-to-one
    row reads as DoesNotExist, a null foreign key as None)."""
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
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for part in plan.parts:
        for index, col, converters in part.converters:
            value = values[index]
            for converter in converters:
                value = converter(value, col, connection)
            values[index] = value
    main = plan.parts[0]
    instance = model.from_db(alias, main.attnames, values[: len(main.attnames)])
    for part in plan.parts[1:]:
        own = values[part.start : part.start + len(part.attnames)]
        other = None
        if own[part.pk_index] is not None:  # LEFT JOIN: no row there
            other = part.model.from_db(alias, part.attnames, own)
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
) -> list[tuple]:
    """The rows of the `values_list` queryset of `model` that `build()` makes, compiled to SQL
    once per database connection under `key` and run again as is: for a query that a page
    polls (the Servers page's tiles, every 2 s per open page), where compiling cost more than
    running it (1.3 ms of CPU against 0.4 ms, docs/benchmarks.md §2f). The ORM's own
    converters are applied to the rows. `key` must name one shape of query: its SQL is kept,
    and a later `build()` is not called. Its parameters are the first build's, or `params`:
    the values of its placeholders in the compiled SQL's order (a query whose only variable
    part is a value, `pk__gt=…`)."""
    connection = connections[router.db_for_read(model)]
    plans = _compiled.setdefault(connection, {})
    plan = plans.get(key)
    if plan is None:
        queryset = build()
        compiler = queryset.query.get_compiler(connection=connection)
        plan = plans[key] = (compiler, *compiler.as_sql())
    compiler, sql, built_params = plan
    if params is not None and len(params) != len(built_params):
        raise ValueError(f"{key}: {len(params)} parameters for {len(built_params)} placeholders")
    with connection.cursor() as cursor:
        cursor.execute(sql, built_params if params is None else tuple(params))
        rows = cursor.fetchall()
    return list(compiler.results_iter(results=[rows], tuple_expected=True))
