"""Importing reference patents: JSON Lines of the shared format and USPTO full-text files
(XML, SGML, weekly zips), streamed in batches; each batch is one transaction, and a
re-import skips what is there (by source id)."""

import datetime as dt
import json
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

from allthepatents.bulk import instances_insert, rows_insert
from patents.minhash import patent_text, texts_bands
from patents.models import Claim, MinHashBand, Patent
from patents.nearcopy import bands_insert
from patents.records import ImportReport, RecordError, reference_record_parse
from patents.services import (
    patent_ids_unused,
    patent_tally_add,
    publish_hooks_run,
    reference_area_tally_add,
)
from patents.text import content_hash, cpc_codes_text, cpc_subclasses


def _number(claim: dict) -> int:
    return claim["number"]


def _record_text(p: dict) -> str:
    return patent_text(
        abstract=p["abstract"], claims=[c["text"] for c in sorted(p["claims"], key=_number)]
    )


def _reference_batch_write(
    parsed: list[dict], bands: list[list[int]], report: ImportReport
) -> list[int]:
    """Writes one batch in one transaction: all of a patent or none of it. ``bands``: each
    record's MinHash bands, in the order of ``parsed``."""
    ids = [p["source_id"] for p in parsed]
    existing = set(Patent.objects.filter(source_id__in=ids).values_list("source_id", flat=True))
    fresh, fresh_bands = [], []
    for p, b in zip(parsed, bands, strict=True):
        if p["source_id"] in existing:
            report.skipped_existing += 1
            continue
        existing.add(p["source_id"])
        fresh.append(p)
        fresh_bands.append(b)
    if not fresh:
        return []
    now = timezone.now()
    public_ids = patent_ids_unused(len(fresh))
    with transaction.atomic():
        patents = [
            Patent(
                public_id=public_ids[i],
                origin=Patent.Origin.REFERENCE,
                title=p["title"],
                abstract=p["abstract"],
                content_hash=content_hash(
                    title=p["title"], abstract=p["abstract"], claims=p["claims"]
                ),
                published_at=(
                    dt.datetime.combine(p["source_date"], dt.time(), tzinfo=dt.UTC)
                    if p["source_date"]
                    else now
                ),
                source_id=p["source_id"],
                source_date=p["source_date"],
                filing_date=p["filing_date"],
                source_meta=p["source_meta"],
                cpc_codes=cpc_codes_text(p["source_meta"].get("cpc")),
            )
            for i, p in enumerate(fresh)
        ]
        instances_insert(patents)
        pk_by_source = dict(
            Patent.objects.filter(source_id__in=[p["source_id"] for p in fresh]).values_list(
                "source_id", "pk"
            )
        )
        rows_insert(
            Claim,
            ["patent", "number", "text", "depends_on"],
            [
                (pk_by_source[p["source_id"]], c["number"], c["text"], c["depends_on"])
                for p in fresh
                for c in p["claims"]
            ],
        )
        new_ids = list(pk_by_source.values())
        patent_tally_add(origin=Patent.Origin.REFERENCE, n=len(new_ids))
        reference_area_tally_add(
            counts=Counter(area for p in patents for area in cpc_subclasses(p.cpc_codes))
        )
        bands_insert(
            bands={pk_by_source[p["source_id"]]: b for p, b in zip(fresh, fresh_bands, strict=True)}
        )
        transaction.on_commit(lambda: publish_hooks_run(new_ids))
    report.imported += len(fresh)
    return new_ids


def _bands_pool():
    """A second process for the MinHash bands (half an import's CPU time), so that they are
    computed for the next batch while this process writes the last one. Spawned, not
    forked: a fork of a process whose threads hold locks (OpenMP, a test runner's) can hang
    in the child; it imports patents.minhash only."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    if (os.cpu_count() or 1) < 2:
        return None
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


# Batches written before the second process is started: a small import (a test's, an
# admin's) is done before the process would have started.
POOL_AFTER_BATCHES = 4


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


# SQLite's page cache while importing (KiB): the band, claim and keyword indexes take rows
# all over their B-trees, and the default 2 MB cache made every insert read pages back.
IMPORT_SQLITE_CACHE_KIB = 512 * 1024
# Pages the write-ahead log grows to before a commit copies them into the database: the
# default (1,000) made a fifth of an import's time checkpoints that copied the same index
# pages again batch after batch.
IMPORT_WAL_CHECKPOINT_PAGES = 20_000


@contextmanager
def _import_cache():
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        cache = cursor.fetchone()[0]
        cursor.execute("PRAGMA wal_autocheckpoint")
        checkpoint = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA cache_size = -{IMPORT_SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {IMPORT_WAL_CHECKPOINT_PAGES}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(cache)}")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint)}")


def _bands_value_index():
    return next(i for i in MinHashBand._meta.indexes if list(i.fields) == ["value"])


def _index_present(model, name: str) -> bool:
    with connection.cursor() as cursor:
        return name in connection.introspection.get_constraints(cursor, model._meta.db_table)


def _index_sql(sql: str) -> None:
    # Plain DDL rather than the schema editor: SQLite's refuses to start inside a
    # transaction (a test's, a caller's), which this DDL does not mind on either database.
    with connection.cursor() as cursor:
        cursor.execute(sql)


@contextmanager
def _bands_index_deferred(report: ImportReport):
    """On a first load (no bands stored yet) the index on band values is dropped for the
    import and built once at its end. Each patent inserts 64 random keys into that B-tree,
    and every commit rewrote most of its pages: at a million patents it was the largest
    part of the import, while building it from the finished table sorts once
    (bench/README.md). Near-copy checks made during such an import scan the table: slower, still
    right. An import that finds the index missing (one killed before it could build it)
    builds it at its end too."""
    index = _bands_value_index()
    present = _index_present(MinHashBand, index.name)
    defer = not present or not MinHashBand.objects.exists()
    if defer and present:
        _index_sql(f"DROP INDEX IF EXISTS {connection.ops.quote_name(index.name)}")
    try:
        yield
    finally:
        if defer:
            started = time.monotonic()
            if connection.vendor == "postgresql" and connection.in_atomic_block:
                # Inside a caller's transaction the rows' deferred foreign-key checks are
                # still pending, and PostgreSQL builds no index over a table with any.
                _index_sql("SET CONSTRAINTS ALL IMMEDIATE")
            quote = connection.ops.quote_name
            column = MinHashBand._meta.get_field("value").column
            _index_sql(
                f"CREATE INDEX IF NOT EXISTS {quote(index.name)} ON "
                f"{quote(MinHashBand._meta.db_table)} ({quote(column)})"
            )
            report.bands_index_seconds = time.monotonic() - started


# An import that adds at least this many patents refreshes PostgreSQL's planner statistics.
ANALYZE_MIN_IMPORTED = 10_000


def _import_in_batches(records: Iterable[dict], report: ImportReport, batch_size: int) -> None:
    with _import_cache(), _bands_index_deferred(report):
        _import_pipelined(records, report, batch_size)
    if report.imported >= ANALYZE_MIN_IMPORTED:
        _statistics_refresh(report)


def _statistics_refresh(report: ImportReport) -> None:
    """ANALYZE of the tables an import fills, on PostgreSQL. Autovacuum had not analysed
    them an hour after a million-patent import: the planner took the claims of a result page
    (10 patents) for 1.9 million rows, scanned in parallel with JIT compilation, 49 ms
    instead of 0.2 (82 ms of a 194 ms search, bench/README.md 2026-12-06); ANALYZE took 3.9 s.
    SQLite plans these lookups by their indexes without statistics."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return
    started = time.monotonic()
    with connection.cursor() as cursor:
        # The whole database: the publish hook's tables (keyword and vector rows) grew too.
        cursor.execute("ANALYZE")
    report.analyze_seconds = time.monotonic() - started


def _import_pipelined(records: Iterable[dict], report: ImportReport, batch_size: int) -> None:
    pool = None
    batches = 0

    def bands_of(batch):
        nonlocal pool, batches
        batches += 1
        if pool is None and batches > POOL_AFTER_BATCHES:
            pool = _bands_pool() or False
        texts = [_record_text(p) for p in batch]
        return pool.submit(texts_bands, texts) if pool else _Done(texts_bands(texts))

    pending = None  # (batch, future bands): written once the next batch is submitted
    try:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= batch_size:
                submitted = (batch, bands_of(batch))
                if pending:
                    _reference_batch_write(pending[0], pending[1].result(), report)
                pending, batch = submitted, []
        if batch:
            submitted = (batch, bands_of(batch))
            if pending:
                _reference_batch_write(pending[0], pending[1].result(), report)
            pending = submitted
        if pending:
            _reference_batch_write(pending[0], pending[1].result(), report)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def reference_import_records(
    records: Iterable[tuple[int, str]],
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Imports reference patents from numbered JSON lines; idempotent by source id."""
    report = ImportReport()

    def parsed():
        line_no = 0
        iterator = iter(records)
        while True:
            try:
                line_no, line = next(iterator)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error, UnicodeError) as exc:
                # A truncated or corrupt file: keep what came before, say where it broke.
                report.broken = (
                    f"the file breaks after line {line_no:,}: "
                    f"{type(exc).__name__}: {exc or 'unexpected end of data'}"
                )
                report.bad.append((f"after line {line_no}", report.broken))
                return
            report.lines += 1
            if progress:
                progress(1)
            if not line.strip():
                continue
            try:
                yield reference_record_parse(json.loads(line))
            except json.JSONDecodeError as exc:
                report.bad.append((line_no, f"invalid JSON: {exc.msg}"))
            except RecordError as exc:
                report.bad.append((line_no, str(exc)))

    _import_in_batches(parsed(), report, batch_size)
    return report


def uspto_import_paths(
    paths: list[Path], *, batch_size: int = 500, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Imports USPTO full-text files (XML, weekly zips) as reference patents, streaming."""
    from patents.uspto import DocumentError, uspto_document_parse, uspto_documents

    report = ImportReport()

    def documents(path):
        location = "the start"
        iterator = uspto_documents(path)
        while True:
            try:
                location, text = next(iterator)
            except StopIteration:
                return
            except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                report.broken = f"{path.name} breaks after {location}: {type(exc).__name__}: {exc}"
                report.bad.append((f"{path.name}:{location}", report.broken))
                return
            yield location, text

    def parsed():
        for path in paths:
            for location, text in documents(path):
                report.lines += 1
                if progress:
                    progress(1)
                try:
                    yield reference_record_parse(uspto_document_parse(text))
                except (DocumentError, RecordError) as exc:
                    report.bad.append((f"{path.name}:{location}", str(exc)))

    _import_in_batches(parsed(), report, batch_size)
    return report
