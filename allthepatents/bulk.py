"""Bulk inserts of plain rows, for the writes that run per claim or per band of a million
records: the ORM's ``bulk_create`` spends most of an import building model instances and
compiling SQL for rows that are only tuples (`bench/million.py import`)."""

from django.db import connection


def rows_insert(model, fields: list[str], rows: list[tuple], *, ignore_conflicts: bool = False):
    """INSERTs ``rows`` (tuples in the order of ``fields``, model field names) into
    ``model``'s table. ``ignore_conflicts`` skips rows that break a unique constraint, as
    ``bulk_create(ignore_conflicts=True)`` does."""
    if not rows:
        return
    meta = model._meta
    columns = [meta.get_field(f).column for f in fields]
    if connection.vendor == "postgresql":
        if ignore_conflicts:
            types = [meta.get_field(f).db_type(connection) for f in fields]
            _unnest_insert(meta.db_table, columns, types, rows)
        else:
            _copy_rows(meta.db_table, columns, rows)
        return
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    marks = ", ".join(["%s"] * len(fields))
    verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
    table = connection.ops.quote_name(meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(f"{verb} INTO {table} ({quoted}) VALUES ({marks})", rows)  # noqa: S608 (names from the model's meta, values bound)


def instances_insert(objs: list) -> None:
    """``bulk_create`` for an import's new rows, without setting their primary keys (the
    caller reads them back by a unique field). On PostgreSQL one COPY: Django's INSERT is
    quoted into SQL text value by value in Python, a tenth of a million-patent import."""
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs)
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    plain = [f for f in fields if _plain(f)]
    prepared = [f for f in fields if not _plain(f)]
    names = [f.attname for f in plain]
    rows = []
    for obj in objs:
        values = obj.__dict__
        row = [values[name] for name in names]
        row += [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in prepared]
        rows.append(row)
    _copy_rows(model._meta.db_table, [f.column for f in [*plain, *prepared]], rows)


def _plain(field) -> bool:
    """Whether the field's value goes to the database as it is (on PostgreSQL): Django's
    preparation of each value was most of building a million patents' rows."""
    from django.db import models

    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return False
    if type(field) is models.ForeignKey:
        return _plain(field.target_field) or field.target_field.primary_key
    return type(field) in (
        models.CharField,
        models.TextField,
        models.DateField,
        models.IntegerField,
        models.BigIntegerField,
        models.PositiveSmallIntegerField,
        models.SmallIntegerField,
        models.BooleanField,
    )


def _copy_rows(table: str, columns: list[str], rows: list[tuple]) -> None:
    # COPY, its rows formatted by psycopg's C code: 4 times the rate of one INSERT of column
    # arrays, which Django's client-side binding quotes element by element in Python (the
    # bands alone were a sixth of an import).
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in columns)
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _unnest_insert(table: str, columns: list[str], types: list[str], rows: list[tuple]) -> None:
    # One statement of one array a column: psycopg's executemany sends a statement a row
    # (76 rows a patent, 45 µs each). COPY has no ON CONFLICT.
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in columns)
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(table)} ({names}) SELECT * FROM unnest({arrays}) "  # noqa: S608 (names and types from the model's meta, values bound)
            "ON CONFLICT DO NOTHING",
            column_arrays(rows),
        )


def column_arrays(rows: list[tuple]) -> list[list]:
    """``rows`` as one list a column: the parameters of a PostgreSQL ``unnest``."""
    return [list(column) for column in zip(*rows, strict=True)]


def ids_subquery(ids: list[int]):
    """``ids`` as one bound parameter of a subquery, for ``pk__in``: thousands of candidate
    ids made thousands of parameters (a quarter of a filtered search's time in Django's
    lookup preparation at a million patents)."""
    import json

    from django.db.models.expressions import RawSQL

    if connection.vendor == "sqlite":
        return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(ids)])  # noqa: S611 (constant SQL, bound parameter)
    return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])  # noqa: S611 (as above)
