"""One clock for every machine that shares the database."""

import datetime as dt

from django.db import connection
from django.utils import timezone


def db_now() -> dt.datetime:
    """Now, by the clock every worker shares. On PostgreSQL, the database server's: workers
    on several machines compare and write times of one another's rows (leases, heartbeats,
    the ledger), and a machine whose clock runs ahead would take leases still held, one
    behind would hold them past their end or date prior art before it existed. On SQLite
    every process is on one machine, and its clock is the one."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0].astimezone(dt.UTC)
    return timezone.now()
