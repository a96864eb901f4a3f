"""A bulk index build spread over workers: the pending vector rows are cut into shards
(runs of ids), every worker that consumes the indexing queue, on any machine that reaches
the database and the broker, takes a shard by compare-and-swap, embeds it (on its GPU when
it has one) and leaves the vectors in the shard's row; the merge then adds finished shards
to the index in id order, so the manifest's promise (every row up to ``last_vector_id`` is
in) holds after every step. A worker that dies leaves its shard running without a
heartbeat: after SEARCH_SHARD_LEASE seconds any worker takes it over.

Writes live here (the search app's services for shards); reads are in ``search.selectors``.
"""

import io
import logging
import os
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from allthepatents.clock import db_now
from search.models import EmbeddingShard, IndexedVector
from search.selectors import vectors_pending_query

logger = logging.getLogger(__name__)

# Vectors embedded between two heartbeats (and progress updates) of a running shard.
HEARTBEAT_ROWS = 512


class ShardError(RuntimeError):
    pass


def _unmerged(model: str):
    return EmbeddingShard.objects.filter(embedding_model=model).exclude(
        status=EmbeddingShard.Status.MERGED
    )


def embedding_shards_unmerged(*, model: str | None = None) -> int:
    return _unmerged(model or settings.EMBEDDING_MODEL).count()


def embedding_shards_plan(*, size: int | None = None) -> list[int]:
    """Cuts the vector rows the index lacks into shards of ``size`` rows and queues them.
    A plan whose shards are not all merged yet is resumed instead (its waiting and stale
    shards queued again): there is one plan at a time, so the merge order stays the id
    order. Returns the ids of the shards queued."""
    from search.store import manifest_safe

    model = settings.EMBEDDING_MODEL
    size = size or settings.SEARCH_SHARD_SIZE
    if _unmerged(model).exists():
        return embedding_shards_resume()
    manifest = manifest_safe() or {}
    if manifest.get("embedding_model", model) != model:
        raise ShardError(
            f"the index was built with {manifest.get('embedding_model')!r}, not {model!r}: "
            "rebuild it (`search_index rebuild`) rather than add shards to it"
        )
    last = int(manifest.get("last_vector_id", 0))
    docs = int(manifest.get("documents_through") or 0)
    ids = list(
        vectors_pending_query(last_vector_id=last, documents_through=docs)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    shards = [
        EmbeddingShard(
            embedding_model=model,
            first_id=chunk[0],
            last_id=chunk[-1],
            documents_through=docs,
            planned=len(chunk),
        )
        for chunk in (ids[at : at + size] for at in range(0, len(ids), size))
    ]
    with transaction.atomic():
        EmbeddingShard.objects.bulk_create(shards)
        queued = list(_unmerged(model).values_list("pk", flat=True))
        transaction.on_commit(lambda: _send(queued))
    return queued


def _stale() -> Q:
    # The shared clock: the workers that beat and the one that judges them silent may be
    # machines apart.
    cutoff = db_now() - timedelta(seconds=settings.SEARCH_SHARD_LEASE)
    return Q(status=EmbeddingShard.Status.RUNNING, heartbeat_at__lt=cutoff)


def embedding_shards_resume(*, stale_only: bool = False) -> list[int]:
    """Queues again the shards of the plan whose worker went silent and, unless
    ``stale_only`` (a worker starting: the broker still holds the waiting ones), those that
    wait or failed. Returns their ids."""
    wanted = _stale()
    if not stale_only:
        wanted |= Q(status=EmbeddingShard.Status.PENDING) | Q(status=EmbeddingShard.Status.FAILED)
    ids = list(_unmerged(settings.EMBEDDING_MODEL).filter(wanted).values_list("pk", flat=True))
    EmbeddingShard.objects.filter(pk__in=ids, status=EmbeddingShard.Status.FAILED).update(
        status=EmbeddingShard.Status.PENDING, error=""
    )
    _send(ids)
    return ids


def _send(ids: list[int]) -> None:
    from allthepatents.celery import task_send

    for pk in ids:
        try:
            task_send("search.embed_shard", args=(pk,))
        except Exception as exc:  # the broker is down: `search_index shards` queues them again
            logger.warning("could not queue shard %s: %s", pk, exc)
            return


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def embedding_shard_claim(*, shard_id: int, worker: str) -> bool:
    """Takes the shard for ``worker`` if it waits, or if its worker went silent: one
    UPDATE ... WHERE, so two workers never both take it."""
    now = db_now()
    taken = (
        EmbeddingShard.objects.filter(pk=shard_id)
        .filter(Q(status=EmbeddingShard.Status.PENDING) | _stale())
        .update(
            status=EmbeddingShard.Status.RUNNING,
            worker=worker,
            claimed_at=now,
            heartbeat_at=now,
            done=0,
            attempts=F("attempts") + 1,
        )
    )
    return bool(taken)


def _still_mine(shard_id: int, worker: str, **changes) -> bool:
    return bool(
        EmbeddingShard.objects.filter(
            pk=shard_id, worker=worker, status=EmbeddingShard.Status.RUNNING
        ).update(heartbeat_at=db_now(), **changes)
    )


def _shard_rows(shard: EmbeddingShard) -> list[IndexedVector]:
    query = IndexedVector.objects.filter(pk__gte=shard.first_id, pk__lte=shard.last_id)
    if shard.documents_through:
        query = query.exclude(claim_number__isnull=True, pk__lte=shard.documents_through)
    return list(query.order_by("pk"))


def vectors_pack(ids, vectors) -> bytes:
    import numpy as np

    out = io.BytesIO()
    np.savez(out, ids=np.asarray(ids, dtype="int64"), vectors=vectors.astype("float32"))
    return out.getvalue()


def vectors_unpack(data: bytes):
    import numpy as np

    with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as f:
        return f["ids"], f["vectors"]


def embedding_shard_embed(*, shard_id: int, worker: str | None = None) -> dict:
    """Claims the shard and embeds its rows, heartbeating as it goes; leaves the vectors in
    the shard. Returns what happened: ``taken`` (another worker has it, or it is done),
    ``lost`` (it was taken over while this worker was silent), or ``done``."""
    from search.embeddings import bulk_threads, embed, embedding_device
    from search.services import vector_texts

    worker = worker or _worker_name()
    if not embedding_shard_claim(shard_id=shard_id, worker=worker):
        return {"shard": shard_id, "result": "taken"}
    shard = EmbeddingShard.objects.get(pk=shard_id)
    started = time.monotonic()
    try:
        rows = _shard_rows(shard)
        import numpy as np

        parts = []
        with bulk_threads():
            device = embedding_device()
            _still_mine(shard_id, worker, device=device)
            for at in range(0, len(rows), HEARTBEAT_ROWS):
                chunk = rows[at : at + HEARTBEAT_ROWS]
                parts.append(embed(vector_texts(chunk), bulk=True))
                if not _still_mine(shard_id, worker, done=at + len(chunk)):
                    return {"shard": shard_id, "result": "lost"}
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype="float32")
        data = vectors_pack([r.pk for r in rows], vectors)
        seconds = time.monotonic() - started
        finished = _still_mine(
            shard_id,
            worker,
            status=EmbeddingShard.Status.DONE,
            done=len(rows),
            vectors=data,
            finished_at=timezone.now(),
            seconds=round(seconds, 2),
        )
    except Exception as exc:
        EmbeddingShard.objects.filter(pk=shard_id, worker=worker).update(
            status=EmbeddingShard.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    if not finished:
        return {"shard": shard_id, "result": "lost"}
    logger.info(
        "shard %s: %d vectors in %.1f s (%.0f/s) on %s",
        shard_id,
        len(rows),
        seconds,
        len(rows) / max(seconds, 1e-6),
        device,
    )
    if not _unmerged(shard.embedding_model).exclude(status=EmbeddingShard.Status.DONE).exists():
        _merge_send()
    return {"shard": shard_id, "result": "done", "vectors": len(rows)}


def _merge_send() -> None:
    from allthepatents.celery import task_send

    try:
        task_send("search.merge_shards")
    except Exception as exc:  # `search_index shards --merge` does it by hand
        logger.warning("could not queue the shard merge: %s", exc)


def embedding_shards_merge(*, lock_timeout: float = 600, progress=None) -> dict:
    """Adds the finished shards that come next in id order to the index (with FAISS's
    add_with_ids, into the index kind the corpus asks for), moving the manifest's
    ``last_vector_id`` shard by shard, and drops their stored vectors. A shard still
    running stops the merge there; the rest waits for the next merge. When the plan is
    all merged, the regular update is queued for rows that arrived meanwhile."""
    from search.embeddings import embedding_dimension
    from search.services import (
        _delta_add,
        _index_retype,
        _ivf_due,
        _vector_dates_refresh,
        search_index_update_enqueue,
    )
    from search.store import (
        IndexUnavailable,
        index_kind,
        index_load_checked,
        index_new,
        index_save,
        manifest_safe,
        writer_lock,
    )

    model = settings.EMBEDDING_MODEL
    merged = added = 0
    with writer_lock(timeout=lock_timeout):
        dimension = embedding_dimension(model)
        try:
            loaded = index_load_checked(model=model, dimension=dimension)
            index, manifest = loaded.index, dict(loaded.manifest)
            if loaded.delta is not None:
                _delta_add(index, loaded.delta)
        except IndexUnavailable as exc:
            # Only a site that never had an index starts one here: a lost or damaged file
            # promised rows this plan does not hold.
            if manifest_safe() is not None:
                raise ShardError(
                    f"the index is unusable ({exc}): rebuild it (`search_index rebuild`)"
                ) from exc
            index, manifest = index_new(dimension), {}
        last = int(manifest.get("last_vector_id", 0))
        docs = int(manifest.get("documents_through") or 0)
        trained_on = int(manifest.get("ivf_trained_on") or 0)
        for shard in _unmerged(model).order_by("first_id"):
            if shard.status != EmbeddingShard.Status.DONE:
                break
            if shard.first_id <= last:
                raise ShardError(
                    f"shard {shard.pk} starts at vector {shard.first_id}, but the index "
                    f"already holds every vector up to {last}: the plan no longer fits the "
                    "index (was it rebuilt meanwhile?); delete the unmerged shards and plan "
                    "again"
                )
            ids, vectors = vectors_unpack(shard.vectors)
            if len(ids):
                index.add_with_ids(vectors, ids)
            last = shard.last_id
            EmbeddingShard.objects.filter(pk=shard.pk).update(
                status=EmbeddingShard.Status.MERGED, vectors=None
            )
            merged += 1
            added += len(ids)
            if progress:
                progress(len(ids))
        if not merged:
            return {"merged": 0, "added": 0, "left": embedding_shards_unmerged()}
        left = embedding_shards_unmerged()
        if not left and _ivf_due(index, trained_on):
            trained_on = int(index.ntotal)
            index = _index_retype(index, dimension=dimension, kind="ivf")
        saved = {
            "embedding_model": model,
            "dimension": dimension,
            "index_type": index_kind(index),
            "last_vector_id": last,
        }
        if docs > last:
            saved["documents_through"] = docs
        if saved["index_type"] == "ivf":
            saved["ivf_trained_on"] = trained_on
        result = index_save(index, manifest=saved)
        _vector_dates_refresh(full=False)
    if not left:
        search_index_update_enqueue()
    return {"merged": merged, "added": added, "left": left, "count": result["count"]}
