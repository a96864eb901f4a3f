"""Bulk inserts of plain rows, for the writes that run per claim or per band of a million
records: the ORM's ``bulk_create`` spends most of an import building model instances and
compiling SQL for rows that are only tuples (`bench/million.py import`)."""

from django.db import connection


def rows_insert(model, fields: list[str], rows: list[tuple], *, ignore_conflicts: bool = False):
    """INSERTs ``rows`` (tuples in the order of ``fields``, model field names) into
    ``model``'s table with one ``executemany``. ``ignore_conflicts`` skips rows that break a
    unique constraint, as ``bulk_create(ignore_conflicts=True)`` does."""
    if not rows:
        return
    meta = model._meta
    columns = ", ".join(connection.ops.quote_name(meta.get_field(f).column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    verb, tail = "INSERT", ""
    if ignore_conflicts:
        if connection.vendor == "sqlite":
            verb = "INSERT OR IGNORE"
        else:
            tail = " ON CONFLICT DO NOTHING"
    table = connection.ops.quote_name(meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement of one array a column: psycopg's executemany sends a statement a
            # row, and its Python side was most of an import (76 rows a patent, 45 µs each:
            # 61 of 75 s for the shared 12,607 patents).
            types = [meta.get_field(f).db_type(connection) for f in fields]
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}){tail}",  # noqa: S608 (names and types from the model's meta, values bound)
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        cursor.executemany(f"{verb} INTO {table} ({columns}) VALUES ({marks}){tail}", rows)  # noqa: S608 (names from the model's meta, values bound)


def ids_subquery(ids: list[int]):
    """``ids`` as one bound parameter of a subquery, for ``pk__in``: thousands of candidate
    ids made thousands of parameters (a quarter of a filtered search's time in Django's
    lookup preparation at a million patents)."""
    import json

    from django.db.models.expressions import RawSQL

    if connection.vendor == "sqlite":
        return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(ids)])  # noqa: S611 (constant SQL, bound parameter)
    return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])  # noqa: S611 (as above)
