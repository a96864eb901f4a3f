"""Keyword search in Tantivy (SEARCH_KEYWORD_ENGINE=tantivy): a BM25 engine beside the database.

PostgreSQL's full text scores every document that matches any term of a query with
``ts_rank_cd``: at a million patents a pasted claim took 372-390 ms p95 even with its terms
bounded, and ranked the known answer lower than BM25 (0.67 against 0.94 in the top 10;
bench/README.md, 2026-12-06). Tantivy (Lucene's design, in Rust, in-process through its
Python binding) ranks by BM25 with top-k pruning and reads exact document frequencies.

The database stays the source of truth, as for the FAISS index: the engine's files under
``INDEX_DIR/keyword/`` are derived from the published patents and can be rebuilt from them
at any time (``search_index keyword --rebuild``). Patents reach the engine in the order of
their document vector rows (``IndexedVector`` ids only grow, and each published patent has
one row with no claim number): ``sync.json`` records the last such id that is in, written
after Tantivy's commit, so a crash between the two adds the same patents again, which
replaces them (each document is deleted by its id before it is added). Withdrawals are
deleted at once when the engine is free, and the next sync finds any it missed by
comparing counts with the database.

One process writes at a time (``keyword_lock``); readers in every web process see each
commit on their next query (``Index.reload``).
"""

import json
import logging
import shutil
import threading
import time
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

DIRECTORY = "keyword"
SYNC_FILE = "sync.json"
SYNC_VERSION = 1
# Tantivy's built-in analyzer of the same name: words, lowercased, Snowball English stems,
# tokens over 40 bytes dropped. Queries are analysed by an identical one (``_analyzer``).
TOKENIZER = "en_stem"
# The fields and their weights, as FTS5's bm25(search_fts, 3.0, 2.0, 1.0).
FIELDS = (("title", 3.0), ("abstract", 2.0), ("claims", 1.0))
# Documents per commit in a bulk sync: a commit makes the batch searchable and durable.
COMMIT_EVERY = 50_000
READ_BATCH = 2000
WRITER_HEAP = 128_000_000


class KeywordUnavailable(RuntimeError):
    """The keyword engine's files are missing, unreadable or of another version."""


def _missing(path: Path) -> KeywordUnavailable:
    return KeywordUnavailable(
        f"no keyword index at {path}: run `manage.py search_index keyword` (or start an "
        "indexing worker) to build it from the database"
    )


def engine_dir() -> Path:
    from search.store import index_dir

    return index_dir() / DIRECTORY


def keyword_lock(timeout: float = 600):
    from filelock import FileLock

    path = engine_dir()
    path.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / ".keyword.lock"), timeout=timeout)


_schema: list = []


def fulltext_schema():
    """The engine's schema (built once a process: every query names it)."""
    if _schema:
        return _schema[0]
    import tantivy

    builder = tantivy.SchemaBuilder()
    # Signed: the binding passes Python ints as i64 terms (deletes by id need the same type).
    builder.add_integer_field("id", stored=False, indexed=True, fast=True)
    for name, _ in FIELDS:
        builder.add_text_field(name, stored=False, tokenizer_name=TOKENIZER)
    _schema.append(builder.build())
    return _schema[0]


_analyzer_local = threading.local()


def _analyzer():
    analyzer = getattr(_analyzer_local, "analyzer", None)
    if analyzer is None:
        import tantivy

        analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stemmer("english"))
            .build()
        )
        _analyzer_local.analyzer = analyzer
    return analyzer


def fulltext_stems(words: list[str]) -> dict[str, str]:
    """``{word: the term the engine indexes it as}``: its English stem."""
    analyzer = _analyzer()
    stems = {}
    for w in words:
        tokens = analyzer.analyze(w)
        stems[w] = tokens[0] if tokens else w
    return stems


def _open(*, create: bool):
    """The engine's index at ``engine_dir()``: made when ``create`` and there is none."""
    import tantivy

    path = engine_dir()
    path.mkdir(parents=True, exist_ok=True)
    if not create and not (path / "meta.json").exists():
        raise _missing(path)
    try:
        return tantivy.Index(fulltext_schema(), path=str(path), reuse=True)
    except (ValueError, OSError) as exc:
        raise KeywordUnavailable(f"keyword index at {path} unreadable: {exc}") from exc


# --- reading ------------------------------------------------------------------------------

_reader_lock = threading.Lock()
_reader: dict = {"index": None, "stamp": None, "path": None}


def _meta_stamp(path: Path):
    from search.store import file_stamp

    return file_stamp(path / "meta.json")


def _searcher():
    """This process's searcher, reloaded when a commit has changed ``meta.json``."""
    path = engine_dir()
    stamp = _meta_stamp(path)
    if stamp is None:
        raise _missing(path)
    with _reader_lock:
        if _reader["index"] is None or _reader["path"] != path:
            _reader.update(index=_open(create=False), path=path, stamp=None)
        if _reader["stamp"] != stamp:
            try:
                _reader["index"].reload()
            except (ValueError, OSError) as exc:
                _reader.update(index=None, stamp=None)
                raise KeywordUnavailable(f"keyword index at {path} unreadable: {exc}") from exc
            _reader["stamp"] = stamp
        return _reader["index"].searcher()


def reader_reset() -> None:
    with _reader_lock:
        _reader.update(index=None, stamp=None, path=None)


def fulltext_shares(stems: list[str], *, searcher=None) -> tuple[dict[str, float], int]:
    """(``{stem: share of indexed documents that hold it in any field}``, documents): exact
    document frequencies, per field, the largest of the three standing for the term; from
    ``searcher``, or the site's engine."""
    searcher = searcher or _searcher()
    documents = searcher.num_docs
    shares = {}
    for stem in stems:
        df = max(searcher.doc_freq(name, stem) for name, _ in FIELDS)
        shares[stem] = df / documents if documents else 0.0
    return shares, documents


def fulltext_query(schema, stems: list[str], *, allowed_ids: list[int] | None = None):
    """The engine's query for documents holding any of ``stems`` (already the engine's
    terms), the title weighing three times the claims and the abstract twice;
    ``allowed_ids`` keeps those patents only."""
    import tantivy

    should = []
    for stem in stems:
        for name, weight in FIELDS:
            query = tantivy.Query.term_query(schema, name, stem, index_option="freq")
            if weight != 1.0:
                query = tantivy.Query.boost_query(query, weight)
            should.append((tantivy.Occur.Should, query))
    query = tantivy.Query.boolean_query(should)
    if allowed_ids is not None:
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, query),
                (tantivy.Occur.Must, tantivy.Query.term_set_query(schema, "id", allowed_ids)),
            ]
        )
    return query


def fulltext_hits(searcher, query, *, limit: int) -> list[tuple[int, float]]:
    """(id, BM25 score) best first, equal scores in id order as the database engines sort."""
    result = searcher.search(query, limit=limit, count=False)
    if not result.hits:
        return []
    ids = searcher.fast_field_values("id", [address for _, address in result.hits])
    hits = [(int(pk), float(score)) for (score, _), pk in zip(result.hits, ids, strict=True)]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits


def fulltext_search(
    stems: list[str], *, limit: int, allowed_ids: list[int] | None = None
) -> list[tuple[int, float]]:
    """(patent id, BM25 score) best first from the site's engine (``fulltext_query``)."""
    searcher = _searcher()
    if not stems or limit < 1 or allowed_ids == []:
        return []
    query = fulltext_query(fulltext_schema(), stems, allowed_ids=allowed_ids)
    return fulltext_hits(searcher, query, limit=limit)


# --- writing ------------------------------------------------------------------------------


def _sync_read(path: Path) -> dict:
    try:
        data = json.loads((path / SYNC_FILE).read_text())
        if data.get("version") == SYNC_VERSION:
            return data
    except (OSError, ValueError):
        pass
    return {"version": SYNC_VERSION, "through": 0}


def _sync_write(path: Path, through: int) -> None:
    from allthepatents.files import file_write_atomic

    file_write_atomic(
        path / SYNC_FILE,
        json.dumps({"version": SYNC_VERSION, "through": through, "at": time.time()}).encode(),
    )


def _documents(patent_ids: list[int]) -> list[tuple[int, str, str, str]]:
    from patents.models import Claim, Patent

    heads = list(
        Patent.objects.filter(pk__in=patent_ids, status=Patent.Status.PUBLISHED)
        .order_by("pk")
        .values_list("pk", "title", "abstract")
    )
    claims: dict[int, list[str]] = {}
    for pid, text in (
        Claim.objects.filter(patent_id__in=[h[0] for h in heads])
        .order_by("patent_id", "number")
        .values_list("patent_id", "text")
    ):
        claims.setdefault(pid, []).append(text)
    return [(pk, t or "", a or "", "\n".join(claims.get(pk, ()))) for pk, t, a in heads]


def fulltext_documents_add(writer, rows) -> None:
    """Adds (id, title, abstract, claims' text) rows, each replacing any document of its id."""
    import tantivy

    for pk, title, abstract, claims in rows:
        writer.delete_documents_by_term("id", pk)
        writer.add_document(
            tantivy.Document(id=[pk], title=[title], abstract=[abstract], claims=[claims])
        )


def keyword_index_sync(
    *, rebuild: bool = False, lock_timeout: float = 600, progress=None, reconcile: bool = True
) -> dict:
    """Brings the engine in step with the database: the patents published since the last
    sync are added, in batches committed every COMMIT_EVERY; then, when the engine's count
    differs from the database's (a withdrawal it missed, a crash), the two id lists are
    compared and the difference mended (unless not ``reconcile``: the count costs 90 ms at
    a million patents, too much for every publication). ``rebuild`` starts from an empty
    index. ``progress(n)``: called with documents added. Returns ``{"added", "removed",
    "count", "seconds"}``."""
    from search.models import IndexedVector, KeywordDocument

    started = time.monotonic()
    path = engine_dir()
    added = removed = 0
    with keyword_lock(timeout=lock_timeout):
        if rebuild and path.exists():
            shutil.rmtree(path)
        try:
            index = _open(create=True)
        except KeywordUnavailable:
            # An unreadable index is rebuilt: every document is in the database.
            logger.exception("keyword index unreadable: rebuilding it from the database")
            shutil.rmtree(path, ignore_errors=True)
            index = _open(create=True)
        through = _sync_read(path)["through"]
        rows = IndexedVector.objects.filter(claim_number=None).order_by("pk")
        writer = None
        pending = 0
        try:
            while True:
                batch = list(
                    rows.filter(pk__gt=through).values_list("pk", "patent_id")[:READ_BATCH]
                )
                if not batch:
                    break
                if writer is None:
                    writer = index.writer(heap_size=WRITER_HEAP, num_threads=1)
                docs = _documents([pid for _, pid in batch])
                fulltext_documents_add(writer, docs)
                added += len(docs)
                pending += len(docs)
                through = batch[-1][0]
                if progress is not None:
                    progress(len(docs))
                if pending >= COMMIT_EVERY:
                    writer.commit()
                    _sync_write(path, through)
                    pending = 0
            if writer is not None:
                writer.commit()
                _sync_write(path, through)
            index.reload()
            count = index.searcher().num_docs
            if reconcile and count != KeywordDocument.objects.count():
                if writer is None:
                    writer = index.writer(heap_size=WRITER_HEAP, num_threads=1)
                removed, mended = _reconcile(index, writer)
                added += mended
                index.reload()
                count = index.searcher().num_docs
            if writer is not None:
                writer.wait_merging_threads()
        except BaseException:
            if writer is not None:
                writer.rollback()
            raise
    return {
        "added": added,
        "removed": removed,
        "count": count,
        "seconds": round(time.monotonic() - started, 1),
    }


def keyword_patents_pending(*, rebuild: bool = False) -> int:
    """Patents a sync (or a rebuild) would add: the command's progress bar."""
    from search.models import IndexedVector

    through = 0 if rebuild else _sync_read(engine_dir())["through"]
    return IndexedVector.objects.filter(claim_number=None, pk__gt=through).count()


def _engine_ids(index) -> set[int]:
    import tantivy

    searcher = index.searcher()
    total = searcher.num_docs
    if not total:
        return set()
    result = searcher.search(tantivy.Query.all_query(), limit=total, count=False)
    return set(searcher.fast_field_values("id", [address for _, address in result.hits]))


def _reconcile(index, writer) -> tuple[int, int]:
    """(removed, added): the engine's ids made equal to the keyword-indexed patents'."""
    from search.models import KeywordDocument

    held = _engine_ids(index)
    wanted = set(KeywordDocument.objects.values_list("patent_id", flat=True))
    stale = held - wanted
    for pk in stale:
        writer.delete_documents_by_term("id", pk)
    missing = sorted(wanted - held)
    for start in range(0, len(missing), READ_BATCH):
        fulltext_documents_add(writer, _documents(missing[start : start + READ_BATCH]))
    writer.commit()
    if stale or missing:
        logger.warning(
            "keyword index mended: %d withdrawn patents removed, %d missing added",
            len(stale),
            len(missing),
        )
    return len(stale), len(missing)


def keyword_index_remove(patent_ids: list[int]) -> bool:
    """Withdrawn patents leave the engine now when no other process is writing it (else
    the next sync removes them; until then the result page drops them, as it drops any
    patent withdrawn since the index was read). Returns whether they left now."""
    if not patent_ids or _meta_stamp(engine_dir()) is None:
        return False
    from filelock import Timeout

    try:
        with keyword_lock(timeout=0):
            index = _open(create=False)
            writer = index.writer(heap_size=WRITER_HEAP, num_threads=1)
            for pk in patent_ids:
                writer.delete_documents_by_term("id", pk)
            writer.commit()
            writer.wait_merging_threads()
            return True
    except Timeout:
        return False
    except (KeywordUnavailable, ValueError, OSError):
        logger.exception("withdrawn patents not removed from the keyword index yet")
        return False


def keyword_index_status() -> dict:
    path = engine_dir()
    if _meta_stamp(path) is None:
        return {"engine": "tantivy", "built": False}
    try:
        documents = _searcher().num_docs
    except KeywordUnavailable as exc:
        return {"engine": "tantivy", "built": True, "error": str(exc)}
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return {
        "engine": "tantivy",
        "built": True,
        "documents": documents,
        "through": _sync_read(path)["through"],
        "bytes": size,
    }


def fulltext_enabled() -> bool:
    return settings.SEARCH_KEYWORD_ENGINE == "tantivy"
