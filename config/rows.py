"""One row of a model by raw SQL, for the gateway's hot path.

The ORM compiles a query each time it runs it: ~0.5 to 0.9 ms of CPU for the gateway's two
look-ups (an API key with its user, a profile with its host and instance), most of what a
request cost before its first byte (docs/benchmarks.md §1e). `Model.objects.raw` skips the
compiler and still gives model instances, each column converted as the ORM converts it
(dates, JSON, booleans): ~0.1 ms a row. Column names come from the code, never from a
request; values are always parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import connection
from django.db.models import Model


def first_row[M: Model](model: type[M], where: Mapping[str, object]) -> M | None:
    """The first row of `model` whose columns equal `where`'s values (None: IS NULL; a list
    or tuple: IN), as a model instance; None when there is none. Meant for unique columns."""
    quote = connection.ops.quote_name
    parts: list[str] = []
    params: list[object] = []
    for column, value in where.items():
        if value is None:
            parts.append(f"{quote(column)} IS NULL")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            parts.append(f"{quote(column)} IN ({', '.join(['%s'] * len(value))})")
            params.extend(value)
        else:
            parts.append(f"{quote(column)} = %s")
            params.append(value)
    # Names are the code's own (quoted), values are parameters: nothing of a request is spliced.
    sql = f"SELECT * FROM {quote(model._meta.db_table)} WHERE {' AND '.join(parts)}"  # noqa: S608
    for row in model.objects.raw(sql, params):
        return row
    return None
