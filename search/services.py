"""Writes for search: feed the keyword index, add vectors to FAISS, rebuild, remove."""

import json
import logging
import os
import time
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from allthepatents.bulk import rows_insert
from patents.models import Claim, Patent
from patents.text import cpc_subclasses
from search.fulltext import (
    KeywordUnavailable,
    fulltext_enabled,
    fulltext_shares,
    keyword_index_sync,
)
from search.keyword import keyword_documents_delete, keyword_documents_write
from search.models import EmbeddingShard, IndexedVector, KeywordDocument, StoredQuery
from search.selectors import vectors_pending_query
from search.store import (
    IndexUnavailable,
    delta_save,
    index_kind,
    index_kind_for,
    index_load_checked,
    index_merge_streamed,
    index_new,
    index_save,
    manifest_safe,
    stored_vectors,
    writer_lock,
)

logger = logging.getLogger(__name__)

BATCH = 256
# Patents per transaction when their keyword and vector rows are written (an import's batch).
SYNC_BATCH = 1000
# Below this many vectors, starting processes (each loads the model) costs more than it saves.
POOL_MIN_ROWS = 2000


def search_documents_sync(*, patent_ids: list[int] | None = None) -> int:
    """Step one, database only: keyword rows and vector-id rows for unindexed patents.

    Cheap and transactional, so it runs right after publication; the embeddings follow
    in ``search_index_update`` on the indexing queue.
    """
    pending = Patent.objects.filter(status=Patent.Status.PUBLISHED, keyword_document=None)
    if patent_ids is not None:
        pending = pending.filter(pk__in=patent_ids)
    ids = list(pending.values_list("pk", flat=True))
    done = 0
    for start in range(0, len(ids), SYNC_BATCH):
        chunk = ids[start : start + SYNC_BATCH]
        with transaction.atomic():
            # Plain rows, not model instances: an import runs this for every batch, and
            # building and prefetching models was a fifth of a million-patent import.
            heads = list(
                Patent.objects.filter(pk__in=chunk)
                .order_by("pk")
                .values_list("pk", "title", "abstract")
            )
            claims: dict[int, list[tuple[int, str]]] = {}
            for pid, number, text in (
                Claim.objects.filter(patent_id__in=chunk)
                .order_by("patent_id", "number")
                .values_list("patent_id", "number", "text")
            ):
                claims.setdefault(pid, []).append((number, text))
            keyword_documents_write(
                [
                    (pk, title or "", abstract or "", "\n".join(t for _, t in claims.get(pk, ())))
                    for pk, title, abstract in heads
                ]
            )
            now = timezone.now()
            rows_insert(
                KeywordDocument,
                ["patent", "indexed_at"],
                [(pk, now) for pk, _, _ in heads],
                ignore_conflicts=True,
            )
            vectors = []
            for pk, _, _ in heads:
                vectors.append((pk, None, now))
                vectors.extend((pk, number, now) for number, _ in claims.get(pk, ()))
            rows_insert(
                IndexedVector,
                ["patent", "claim_number", "created_at"],
                vectors,
                ignore_conflicts=True,
            )
        done += len(heads)
    return done


def keyword_documents_refeed(*, progress: Callable[[int], None] | None = None) -> int:
    """Writes the database's full text again for every keyword-indexed patent: after a
    time on SEARCH_KEYWORD_ENGINE=tantivy, which leaves it unwritten. Each batch's marks
    are dropped and written again with its rows in one transaction, so a crash leaves
    nothing half done (the batch is fed again by the next sync). Returns patents fed."""
    done, after = 0, 0
    while True:
        chunk = list(
            KeywordDocument.objects.filter(patent_id__gt=after)
            .order_by("patent_id")
            .values_list("patent_id", flat=True)[:SYNC_BATCH]
        )
        if not chunk:
            return done
        with transaction.atomic():
            KeywordDocument.objects.filter(patent_id__in=chunk).delete()
            done += search_documents_sync(patent_ids=chunk)
        after = chunk[-1]
        if progress is not None:
            progress(len(chunk))


def vector_texts(rows: list[IndexedVector]) -> list[str]:
    """What each vector embeds: title + abstract for a document, the claim's text."""
    patent_ids = {r.patent_id for r in rows}
    patents = {p.pk: p for p in Patent.objects.filter(pk__in=patent_ids).only("title", "abstract")}
    claims = {
        (c.patent_id, c.number): c.text
        for c in Claim.objects.filter(patent_id__in=patent_ids).only("patent_id", "number", "text")
    }
    texts = []
    for r in rows:
        p = patents[r.patent_id]
        if r.claim_number is None:
            texts.append(f"{p.title}. {p.abstract}".strip(". ") or p.title or "untitled")
        else:
            texts.append(claims.get((r.patent_id, r.claim_number), ""))
    return texts


class _Progress:
    """Indexing progress, for `search_index status`, /healthz and the worker log: written to
    INDEX_DIR/progress.json at most every two seconds, logged every LOG_EVERY vectors."""

    LOG_EVERY = 5000

    def __init__(self, *, total: int, callback):
        self.total, self.done, self.callback = total, 0, callback
        self.started = time.time()
        self.written = 0.0
        self.logged = 0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.time()
        if now - self.written >= 2 or self.done >= self.total:
            self.written = now
            progress_write(self.snapshot(state="indexing"))
        if self.done - self.logged >= self.LOG_EVERY or self.done >= self.total:
            self.logged = self.done
            snap = self.snapshot(state="indexing")
            logger.info(
                "indexing: %d of %d vectors (%.0f/s, about %s s left)",
                self.done,
                self.total,
                snap["vectors_per_s"],
                snap["eta_seconds"],
            )
        if self.callback:
            self.callback(n)

    def snapshot(self, *, state: str) -> dict:
        elapsed = max(time.time() - self.started, 1e-6)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        return {
            "state": state,
            "pid": os.getpid(),
            "done": self.done,
            "total": self.total,
            "started_at": self.started,
            "updated_at": time.time(),
            "vectors_per_s": round(rate, 1),
            "eta_seconds": round(left / rate) if rate > 0 else None,
        }


def progress_write(data: dict) -> None:
    from allthepatents.files import file_write_atomic
    from search.store import index_dir

    try:
        file_write_atomic(index_dir() / "progress.json", json.dumps(data).encode())
    except OSError as exc:
        logger.warning("could not write index progress: %s", exc)


def index_rows_add(index, rows, progress: _Progress | None = None, checkpoint=None, *, pool=None):
    """Embeds and adds ``rows``; ``checkpoint(index, last_id)`` saves a partial index every
    SEARCH_INDEX_CHECKPOINT vectors so that search uses what is done while the rest runs.
    ``pool``: an ``EmbeddingPool`` that embeds each batch across its processes."""
    import numpy as np

    from search.embeddings import embed

    step = BATCH * (pool.processes if pool else 1)
    since_checkpoint = 0

    def add(chunk, vectors):
        nonlocal since_checkpoint
        index.add_with_ids(vectors, np.array([r.pk for r in chunk], dtype="int64"))
        if progress:
            progress.advance(len(chunk))
        since_checkpoint += len(chunk)
        if checkpoint and since_checkpoint >= settings.SEARCH_INDEX_CHECKPOINT:
            checkpoint(index, chunk[-1].pk)
            since_checkpoint = 0

    # With a pool the processes embed one batch while this one reads the next batch's
    # texts and adds (and checkpoints) the previous one: the processes never wait on it.
    pending = None
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        texts = vector_texts(chunk)
        if pool is None:
            add(chunk, embed(texts, bulk=True))
            continue
        waiting = pool.embed_async(texts)
        if pending:
            add(pending[0], pending[1]())
        pending = (chunk, waiting)
    if pending:
        add(pending[0], pending[1]())


RETYPE_CHUNK = 100_000

# An IVF index is retrained when it holds this many times the vectors its lists were
# trained on: lists trained on a tenth of the corpus grow unbalanced and slow.
IVF_RETRAIN_GROWTH = 4


def _index_retype(index_map, *, dimension: int, kind: str):
    """The stored vectors moved into an index of ``kind`` without re-embedding (exact to
    IVF when the corpus grew past SEARCH_IVF_THRESHOLD, back to exact when the threshold
    was raised above it, a legacy HNSW index to either), chunk by chunk from a zero-copy
    view of the old index's vectors."""
    ids, matrix = stored_vectors(index_map)
    index = index_new(dimension, kind=kind, training=matrix if kind == "ivf" else None)
    if kind == "ivf":
        # One call: the full-precision copy is then allocated once, at its size. Added in
        # chunks it grew by doubling, and at 8.5 million vectors old and new buffers
        # together (26 GB) did not fit a 24 GB machine.
        index.add_with_ids(matrix, ids)
        return index
    for start in range(0, len(ids), RETYPE_CHUNK):
        index.add_with_ids(matrix[start : start + RETYPE_CHUNK], ids[start : start + RETYPE_CHUNK])
    return index


def vectors_pending(**kwargs) -> list:
    return list(vectors_pending_query(**kwargs).order_by("pk"))


def _ivf_due(index, trained_on: int) -> bool:
    """Whether the index should be (re)built as IVF now: it is past the threshold and
    exact, or IVF grown well past what its lists were trained on."""
    if index_kind_for(int(index.ntotal)) != "ivf":
        return False
    return index_kind(index) != "ivf" or index.ntotal > IVF_RETRAIN_GROWTH * trained_on


def search_index_update(
    *,
    progress: Callable[[int], None] | None = None,
    force_rebuild: bool = False,
    lock_timeout: float = 600,
    processes: int = 1,
    documents_only: bool = False,
) -> dict:
    """Brings the FAISS index in step with the database; rebuilds when it is unusable.

    Vectors whose id is above the manifest's ``last_vector_id`` are embedded and added, so
    a crash between the database and the file loses nothing: the next run adds them. Rows
    that arrive while it runs are picked up before it ends, so the tasks enqueued meanwhile
    find nothing to do and return at once. A long first build (or one that replaces an
    unusable index) saves a partial index every SEARCH_INDEX_CHECKPOINT vectors.
    ``processes`` > 1 embeds a build of more than POOL_MIN_ROWS vectors in that many
    one-thread processes (the command line's choice; a Celery worker's task cannot fork).

    ``documents_only`` adds the patents' title + abstract vectors and leaves their claims
    for a later run: a first build is searchable in a fifth of the time. The manifest then
    says so (``documents_through``: every document vector up to that id is in; the claims
    past ``last_vector_id`` are not), and the next full run adds what is left."""
    from search.embeddings import EmbeddingPool, bulk_threads, embedding_dimension
    from search.shards import embedding_shards_unmerged

    search_documents_sync()
    if fulltext_enabled():
        # Before the embeddings, which may take hours: keywords are searchable at once.
        keyword_index_sync(lock_timeout=lock_timeout)
    else:
        _term_stats_refresh()
    model = settings.EMBEDDING_MODEL
    if force_rebuild:
        # A rebuild embeds every row itself: a sharded plan for the old index is void.
        EmbeddingShard.objects.filter(embedding_model=model).exclude(
            status=EmbeddingShard.Status.MERGED
        ).delete()
    elif shards_left := embedding_shards_unmerged(model=model):
        # Shards are merged in id order; rows past them wait for the merge, which queues
        # this update once the plan is in.
        manifest = manifest_safe() or {}
        return {
            "added": 0,
            "count": int(manifest.get("count", 0)),
            "rebuilt": False,
            "shards_left": shards_left,
        }
    with writer_lock(timeout=lock_timeout), bulk_threads():
        dimension = embedding_dimension(model)
        total = IndexedVector.objects.count()
        rebuilt = force_rebuild
        last_id = 0
        index = None
        usable_before = False
        # A large (IVF) index takes new vectors into its delta: the main file stays mapped,
        # as readers hold it, and is rewritten only when the delta is merged into it.
        current = manifest_safe() or {}
        delta_mode = (
            not force_rebuild
            and current.get("index_type") == "ivf"
            and index_kind_for(total) == "ivf"
        )
        try:
            loaded = index_load_checked(model=model, dimension=dimension, mmap=delta_mode)
            usable_before = True
        except IndexUnavailable as exc:
            if not force_rebuild:
                logger.warning("index unusable (%s): rebuilding from the database", exc)
            rebuilt = True
            delta_mode = False
        trained_on = 0
        docs_through = 0
        main = None
        if usable_before and not force_rebuild:
            index, last_id = loaded.index, int(loaded.manifest.get("last_vector_id", 0))
            docs_through = int(loaded.manifest.get("documents_through") or 0)
            trained_on = int(loaded.manifest.get("ivf_trained_on") or 0)
            kind = index_kind(index)
            if delta_mode and kind == "ivf":
                main = index
                index = loaded.delta if loaded.delta is not None else index_new(dimension)
            elif loaded.delta is not None:
                # Read whole, the main index takes its delta back before anything else.
                _delta_add(index, loaded.delta)
            # The move to IVF waits for the end, when the vectors to train on are all in;
            # anything else that is not what the corpus asks for becomes exact now.
            elif kind == "hnsw" or (kind == "ivf" and index_kind_for(total) == "flat"):
                # Reuse the stored vectors (re-embedding 200k texts would take the worker
                # an hour).
                index = _index_retype(index, dimension=dimension, kind="flat")
                trained_on = 0
                rebuilt = True
        if index is None:
            index = index_new(dimension)
            last_id, docs_through = 0, 0
        rows = vectors_pending(
            last_vector_id=last_id, documents_through=docs_through, documents_only=documents_only
        )
        due = _ivf_due(main if main is not None else index, trained_on)
        if not rows and not rebuilt and not due:
            return {"added": 0, "count": loaded.ntotal, "rebuilt": False}

        def manifest_for(last, docs, partial):
            manifest = {
                "embedding_model": model,
                "dimension": dimension,
                "index_type": "ivf" if main is not None else index_kind(partial),
                "last_vector_id": last,
            }
            if docs > last:
                manifest["documents_through"] = docs
            if manifest["index_type"] == "ivf":
                manifest["ivf_trained_on"] = trained_on
            return manifest

        save = delta_save if main is not None else index_save

        def checkpoint(partial, last):
            if documents_only:
                save(partial, manifest=manifest_for(last_id, last, partial))
            else:
                save(partial, manifest=manifest_for(last, docs_through, partial))

        # A forced rebuild over a good index keeps serving the old one until it is done.
        use_checkpoints = not (force_rebuild and usable_before)
        tracker = _Progress(total=len(rows), callback=progress)
        added, new_last, new_docs = 0, last_id, docs_through
        pool = None
        try:
            if processes > 1 and len(rows) >= POOL_MIN_ROWS:
                pool = EmbeddingPool(processes, name=model)
            while rows:
                index_rows_add(
                    index, rows, tracker, checkpoint if use_checkpoints else None, pool=pool
                )
                added += len(rows)
                if documents_only:
                    new_docs = max(new_docs, rows[-1].pk)
                else:
                    new_last = max(new_last, rows[-1].pk)
                rows = vectors_pending(
                    last_vector_id=new_last,
                    documents_through=new_docs,
                    documents_only=documents_only,
                )
                tracker.total += len(rows)
            if main is not None:
                full = index.ntotal >= settings.SEARCH_INDEX_DELTA_MAX or due
                if full and not due:
                    # The main file stays mapped; its re-rank rows are streamed into the
                    # new one (None: not an IVF with a re-rank copy, merged in memory below).
                    merged = index_merge_streamed(
                        index, manifest=manifest_for(new_last, new_docs, index)
                    )
                    if merged is not None:
                        _vector_dates_refresh(full=True)
                        return {"added": added, "count": merged["count"], "rebuilt": True}
                if full and not _merge_fits(current):
                    full = False
                if not full:
                    final = manifest_for(new_last, new_docs, index)
                    manifest = delta_save(index, manifest=final)
                    _vector_dates_refresh(full=False)
                    return {"added": added, "count": manifest["count"], "rebuilt": False}
                # The delta is full (or the lists are due for retraining): into the main
                # index, read whole this once.
                index = _delta_merged(index, dimension=dimension)
                rebuilt = True
            if _ivf_due(index, trained_on):
                trained_on = int(index.ntotal)
                index = _index_retype(index, dimension=dimension, kind="ivf")
                rebuilt = True
            manifest = index_save(index, manifest=manifest_for(new_last, new_docs, index))
            _vector_dates_refresh(full=rebuilt)
        finally:
            if pool:
                pool.close()
            progress_write(tracker.snapshot(state="idle"))
    return {"added": added, "count": manifest["count"], "rebuilt": rebuilt}


def search_index_retype(*, lock_timeout: float = 600) -> dict:
    """An IVF index of 8-bit scalar codes (built before fast-scan) rebuilt with fast-scan
    codes from its own stored vectors, its delta folded in: no embedding, the same ids,
    so the table of vector dates stays valid. Needs about the main file's size in memory
    (the new full-precision copy; the old one is read through the page cache)."""
    from search.embeddings import embedding_dimension
    from search.store import ivf_codes

    model = settings.EMBEDDING_MODEL
    dimension = embedding_dimension(model)
    with writer_lock(timeout=lock_timeout):
        loaded = index_load_checked(model=model, dimension=dimension, mmap=True)
        before = ivf_codes(loaded.index)
        if before != "sq8":
            return {"retyped": False, "codes": before or loaded.manifest.get("index_type")}
        available = memory_available()
        needed = int(loaded.manifest.get("file_size", 0))
        if available is not None and needed > available:
            raise IndexUnavailable(
                "memory",
                f"retyping needs about {needed / 1e9:.1f} GB of memory, "
                f"{available / 1e9:.1f} GB are available",
            )
        started = time.monotonic()
        index = _index_retype(loaded.index, dimension=dimension, kind="ivf")
        if loaded.delta is not None:
            _delta_add(index, loaded.delta)
        manifest = index_save(
            index, manifest={**loaded.manifest, "ivf_trained_on": int(index.ntotal)}
        )
        return {
            "retyped": True,
            "codes": ivf_codes(index),
            "count": manifest["count"],
            "seconds": round(time.monotonic() - started, 1),
        }


def search_index_dates_write(*, lock_timeout: float = 600) -> dict:
    """The table of vector dates written whole (an index built before it existed, or one
    built from given vectors)."""
    from search.vector_dates import vector_dates_refresh

    with writer_lock(timeout=lock_timeout):
        return vector_dates_refresh(full=True)


def _vector_dates_refresh(*, full: bool) -> None:
    """The table of vector dates, in step with the index (under its writer lock). It only
    speeds date filters up (search.vector_dates): a failure is logged, not raised, and
    filters that find no table for a vector check it after the search as before."""
    from search.vector_dates import vector_dates_refresh

    try:
        vector_dates_refresh(full=full)
    except Exception:
        logger.exception("the table of vector dates was not brought up to date")


def memory_available() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _merge_fits(manifest: dict) -> bool:
    """Whether merging the delta into the main index in memory fits (a retraining, or an
    index without a re-rank copy; ``index_merge_streamed`` needs little): the main file is read
    whole, and its full-precision copy may be reallocated once as it grows (about twice
    the file, at worst). When it does not, the delta keeps growing (exact, searched with the
    main file: every vector stays searchable, a query scans it) and the log says why, rather
    than the worker being killed on every attempt."""
    available = memory_available()
    if available is None:
        return True
    needed = 2 * int(manifest.get("file_size", 0))
    if needed <= available:
        return True
    logger.warning(
        "the index delta is not merged: merging needs about %.1f GB, %.1f GB are available; "
        "queries scan the delta exactly until a machine with more memory merges it "
        "(docs/capacity.md)",
        needed / 1e9,
        available / 1e9,
    )
    return False


def _delta_merged(delta, *, dimension: int):
    """The main index read whole (not mapped) with ``delta``'s vectors added."""
    from search.store import index_main_read

    main = index_main_read(dimension=dimension)
    _delta_add(main, delta)
    return main


def _delta_add(index, delta) -> None:
    ids, matrix = stored_vectors(delta)
    for start in range(0, len(ids), RETYPE_CHUNK):
        index.add_with_ids(matrix[start : start + RETYPE_CHUNK], ids[start : start + RETYPE_CHUNK])


def _term_stats_refresh() -> None:
    from search.keyword import term_stats_refresh

    try:
        term_stats_refresh()
    except Exception:  # estimates are an optimisation: queries keep every term without them
        logger.exception("could not refresh the keyword term shares")


def search_index_rebuild(
    *,
    progress: Callable[[int], None] | None = None,
    lock_timeout: float = 600,
    processes: int = 1,
    documents_only: bool = False,
) -> dict:
    return search_index_update(
        progress=progress,
        force_rebuild=True,
        lock_timeout=lock_timeout,
        processes=processes,
        documents_only=documents_only,
    )


def search_index_catch_up() -> bool:
    """At a worker's start: shards whose workers went silent are queued again; and when the
    index holds documents whose claims were left for later
    (``search_index update --documents-only``, as `make demo` builds it), queue the update
    that adds them. Returns whether one was queued."""
    from search.shards import embedding_shards_resume

    if embedding_shards_resume(stale_only=True):
        logger.info("queued again the shards whose workers went silent")
    manifest = manifest_safe() or {}
    if int(manifest.get("documents_through") or 0) <= int(manifest.get("last_vector_id", 0)):
        return False
    return search_index_update_enqueue()


def search_documents_remove(*, patent_ids: list[int]) -> None:
    """Withdrawn patents leave the keyword index and the vector map at once; their vectors
    stay in the FAISS file, unreachable (results are joined to the map), until a rebuild."""
    with transaction.atomic():
        keyword_documents_delete(patent_ids)
        KeywordDocument.objects.filter(patent_id__in=patent_ids).delete()
        IndexedVector.objects.filter(patent_id__in=patent_ids).delete()


def on_publish(patent_ids: list[int]) -> None:
    """The publish hook: keyword rows now (and the term shares once the corpus has doubled:
    an import's queries stay fast before its worker runs), embeddings on the indexing
    queue."""
    search_documents_sync(patent_ids=patent_ids)
    if fulltext_enabled():
        if len(patent_ids) <= KEYWORD_INLINE_MAX:
            _keyword_index_sync_now()
    else:
        _term_stats_refresh()
    search_index_update_enqueue()


# A publication of this many patents or fewer (a job's inventions) reaches the keyword
# engine before the hook returns; an import's batches wait for the indexing worker, which
# adds them in large commits.
KEYWORD_INLINE_MAX = 100


def _keyword_index_sync_now() -> None:
    from filelock import Timeout

    try:
        keyword_index_sync(lock_timeout=0, reconcile=False)
    except Timeout:
        pass  # another process is writing the engine; the indexing worker's update adds these
    except KeywordUnavailable:
        logger.exception("keyword index unavailable: the indexing worker rebuilds it")


INDEX_ENQUEUED_KEY = "search-index-update-enqueued"


def search_index_update_enqueue() -> bool:
    """One pending indexing task at a time: a job publishing batch after batch would
    otherwise queue a task per batch, all but the first finding nothing to do. The task
    clears the mark when it starts, and the update picks up rows that arrive while it
    runs. Returns whether a task was sent."""
    from django.core.cache import cache

    from allthepatents.celery import task_send
    from search.tasks import search_index_update_task

    try:
        if not cache.add(INDEX_ENQUEUED_KEY, 1, timeout=600):
            return False
    except Exception as exc:  # the cache is down: enqueue anyway, a no-op costs little
        logger.warning("index enqueue mark unavailable: %s", exc)
    try:
        task_send(search_index_update_task, countdown=2)
        return True
    except Exception as exc:  # a dead broker: the next update (or `search_index update`) catches up
        logger.warning("could not enqueue indexing: %s", exc)
        try:
            cache.delete(INDEX_ENQUEUED_KEY)
        except Exception:  # noqa: S110 (the cache is down too; its mark expires by itself)
            pass
        return False


def search_index_update_started() -> None:
    from django.core.cache import cache

    try:
        cache.delete(INDEX_ENQUEUED_KEY)
    except Exception as exc:
        logger.warning("index enqueue mark unavailable: %s", exc)


def on_withdraw(patent_ids: list[int]) -> None:
    search_documents_remove(patent_ids=patent_ids)


def stored_query_save(*, text: str) -> str:
    """Keeps a long query under a key derived from its text; returns the key. What is
    stored stays bounded: old and surplus queries are pruned on the way
    (``stored_queries_prune``)."""
    import hashlib

    from django.utils import timezone

    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
    now = timezone.now()
    _, created = StoredQuery.objects.get_or_create(key=key, defaults={"text": text, "used_at": now})
    if not created:
        StoredQuery.objects.filter(key=key).update(used_at=now)
    else:
        stored_queries_prune()
    return key


def stored_queries_prune() -> int:
    """Drops stored queries unused for SEARCH_STORED_QUERY_DAYS, then the least recently
    used beyond SEARCH_STORED_QUERIES_MAX. Returns how many went."""
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    cutoff = timezone.now() - timedelta(days=settings.SEARCH_STORED_QUERY_DAYS)
    gone = StoredQuery.objects.filter(
        Q(used_at__lt=cutoff) | Q(used_at__isnull=True, created_at__lt=cutoff)
    ).delete()[0]
    surplus = StoredQuery.objects.count() - settings.SEARCH_STORED_QUERIES_MAX
    if surplus > 0:
        oldest = StoredQuery.objects.order_by("used_at", "created_at").values_list(
            "key", flat=True
        )[:surplus]
        gone += StoredQuery.objects.filter(key__in=list(oldest)).delete()[0]
    return gone


def search_warm() -> str:
    """Loads what the first search needs (embedding model, index) into this process.
    Returns what it managed, for the log; never raises for a missing or broken index."""
    from search.embeddings import embed
    from search.store import index_for_search
    from search.vector_dates import vector_dates_warm

    embed(["warm-up"], query=True)  # loads the model and runs it once (first allocations)
    if fulltext_enabled():
        try:
            fulltext_shares(["warm"])  # opens the keyword engine's searcher
        except KeywordUnavailable as exc:
            logger.warning("keyword engine not loaded: %s", exc)
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    except IndexUnavailable as exc:
        return f"embedder loaded; index not loaded ({exc.state})"
    try:
        dated = vector_dates_warm(loaded.segments)
    except Exception as exc:  # a damaged table: date filters fall back, the site still starts
        logger.warning("vector dates not prepared: %s", exc)
        dated = False
    return f"embedder and index loaded ({loaded.ntotal} vectors{', dates ready' if dated else ''})"


# Areas a search is counted in: the CPC subclasses of its first few reference results.
TALLY_RESULTS = 5
_tally_purged: dict = {"day": None}


def search_tally_record(*, result, filters=None) -> None:
    """Counts one search in the CPC areas it landed in (``SearchTally``); never fails the
    search it counts."""
    import datetime as dt

    from django.db.models import F

    from search.models import SearchTally

    try:
        areas = set()
        for hit in result.hits[:TALLY_RESULTS]:
            areas.update(cpc_subclasses(hit.patent.cpc_codes))
        for prefix in getattr(filters, "cpc", ()) or ():
            areas.add(prefix[:4].upper())
        today = dt.date.today()
        for area in sorted(a for a in areas if len(a) == 4):
            updated = SearchTally.objects.filter(day=today, cpc=area).update(
                searches=F("searches") + 1
            )
            if not updated:
                try:
                    with transaction.atomic():
                        SearchTally.objects.create(day=today, cpc=area, searches=1)
                except IntegrityError:  # another process created it meanwhile
                    SearchTally.objects.filter(day=today, cpc=area).update(
                        searches=F("searches") + 1
                    )
        if _tally_purged["day"] != today:
            cutoff = today - dt.timedelta(days=settings.SEARCH_TALLY_DAYS)
            SearchTally.objects.filter(day__lt=cutoff).delete()
            _tally_purged["day"] = today
    except Exception:  # the count is a convenience; the search must not pay for it
        logger.exception("search tally failed")
