"""A bulk index build spread over workers (search.shards): real Celery workers over real
Redis embed the shards with the real embedder; the merge, the claims and the resumption are
checked against the index a one-process rebuild makes of the same rows."""

import datetime as dt
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from patents.importing import reference_import_records
from search.embeddings import embedding_bulk_precision
from search.models import EmbeddingShard, IndexedVector
from search.selectors import embedding_shards_progress, index_health
from search.services import search_documents_sync, search_index_rebuild, search_index_update
from search.shards import (
    ShardError,
    embedding_shard_claim,
    embedding_shard_embed,
    embedding_shards_merge,
    embedding_shards_plan,
    embedding_shards_resume,
)
from search.store import index_load_checked, manifest_read, reader_reset, stored_vectors
from tests.helpers import wait_for


@pytest.fixture
def imported(fixture_jsonl, settings, tmp_path, monkeypatch):
    settings.INDEX_DIR = tmp_path / "index"
    reader_reset()
    # Nothing is queued by the publish hook: each test says who embeds what.
    import search.services as services

    monkeypatch.setattr(services, "search_index_update_enqueue", lambda: False)
    lines = fixture_jsonl.read_text().splitlines()
    reference_import_records(enumerate(lines, start=1))
    search_documents_sync()
    yield list(IndexedVector.objects.order_by("pk").values_list("pk", flat=True))
    reader_reset()


@pytest.fixture
def no_broker(monkeypatch):
    """Shards planned in these tests are run by the test itself, not sent anywhere."""
    import search.shards as shards

    sent = []
    monkeypatch.setattr(shards, "_send", lambda ids: sent.extend(ids))
    monkeypatch.setattr(shards, "_merge_send", lambda: sent.append("merge"))
    return sent


def _index_content():
    reader_reset()
    from django.conf import settings

    loaded = index_load_checked(model=settings.EMBEDDING_MODEL)
    ids, vectors = stored_vectors(loaded.index)
    order = np.argsort(ids)
    return ids[order], np.asarray(vectors)[order]


@pytest.mark.django_db(transaction=True)
def test_two_workers_embed_the_shards_and_the_last_merges_them_like_a_rebuild(
    imported, worker_factory, settings, tmp_path
):
    env = {"INDEX_DIR": str(settings.INDEX_DIR)}
    workers = [worker_factory(**env), worker_factory(**env)]
    queued = embedding_shards_plan(size=40)
    assert len(queued) == -(-len(imported) // 40) >= 4

    def merged():
        manifest = manifest_read()
        return manifest and manifest["last_vector_id"] == imported[-1]

    wait_for(
        merged,
        timeout=300,
        message=lambda: "\n".join(w.log_text()[-3000:] for w in workers),
    )
    shards = list(EmbeddingShard.objects.order_by("first_id"))
    assert {s.status for s in shards} == {EmbeddingShard.Status.MERGED}
    assert all(s.vectors is None and s.done == s.planned for s in shards)
    # Both workers took shards: the work was spread, not done by one.
    assert len({s.worker for s in shards}) == 2, [s.worker for s in shards]
    ids, vectors = _index_content()
    assert ids.tolist() == imported

    search_index_rebuild()
    rebuilt_ids, rebuilt = _index_content()
    assert rebuilt_ids.tolist() == imported
    cosines = (vectors * rebuilt).sum(axis=1)
    # Each id's vector is its own text's, whichever worker, shard or batch embedded it
    # (another text's is far from it). bf16 and fp32 embed a text alike in any
    # batch; fbgemm's int8 (``auto`` on a CPU without native bf16) scales activations per
    # batch, so the same text in another batch moves by up to 0.017 (0.983 measured on an
    # AVX2-only EPYC: as far as int8 is from fp32 itself).
    floor = 0.97 if embedding_bulk_precision().startswith("int8") else 0.99
    assert cosines.min() > floor, cosines.min()


@pytest.mark.django_db
def test_a_shard_is_taken_by_one_worker_and_taken_over_when_its_worker_goes_silent(
    imported, no_broker, settings
):
    embedding_shards_plan(size=len(imported))
    shard = EmbeddingShard.objects.get()
    assert embedding_shard_claim(shard_id=shard.pk, worker="a") is True
    assert embedding_shard_claim(shard_id=shard.pk, worker="b") is False
    assert embedding_shard_embed(shard_id=shard.pk, worker="b")["result"] == "taken"

    EmbeddingShard.objects.filter(pk=shard.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=settings.SEARCH_SHARD_LEASE + 1)
    )
    assert embedding_shards_resume(stale_only=True) == [shard.pk]
    result = embedding_shard_embed(shard_id=shard.pk, worker="b")
    assert result == {"shard": shard.pk, "result": "done", "vectors": len(imported)}
    shard.refresh_from_db()
    assert (shard.worker, shard.attempts, shard.status) == ("b", 2, "done")
    assert "merge" in no_broker  # the last shard to finish queues the merge
    # The silent worker wakes up: its shard is no longer its own, it writes nothing.
    from search.shards import _still_mine

    assert _still_mine(shard.pk, "a", done=1) is False


@pytest.mark.django_db
def test_a_worker_whose_clock_runs_ahead_takes_no_shard_that_is_beating(
    imported, no_broker, settings, monkeypatch
):
    """Indexing workers on several machines share PostgreSQL: heartbeats and the cutoff that
    judges a worker silent are the database server's times, so a machine whose clock runs an
    hour ahead (its `timezone.now`, patched) takes no shard whose worker still beats. On
    SQLite every worker is on one machine, and that machine's clock is the one used."""
    from django.db import connection

    embedding_shards_plan(size=len(imported))
    shard = EmbeddingShard.objects.get()
    assert embedding_shard_claim(shard_id=shard.pk, worker="a") is True
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + dt.timedelta(hours=1))
    taken = embedding_shard_claim(shard_id=shard.pk, worker="ahead")
    assert taken is (connection.vendor != "postgresql")


@pytest.mark.django_db
def test_the_merge_adds_finished_shards_in_order_and_stops_at_one_still_running(
    imported, no_broker
):
    embedding_shards_plan(size=60)
    first, second, *rest = EmbeddingShard.objects.order_by("first_id")
    embedding_shard_embed(shard_id=first.pk, worker="w")
    for shard in rest:
        embedding_shard_embed(shard_id=shard.pk, worker="w")
    assert embedding_shard_claim(shard_id=second.pk, worker="slow") is True

    result = embedding_shards_merge()
    assert result["merged"] == 1 and result["left"] == 1 + len(rest)
    manifest = manifest_read()
    assert manifest["last_vector_id"] == first.last_id
    ids, _ = _index_content()
    assert ids.tolist() == [i for i in imported if i <= first.last_id]
    # Meanwhile the regular update leaves the rows to the plan instead of embedding them.
    assert search_index_update()["shards_left"] == 1 + len(rest)
    with pytest.raises(CommandError, match="sharded build is under way"):
        call_command("search_index", "update", "--no-progress")
    status = index_health()["sharded_build"]
    assert status["shards"]["running"] == 1 and status["shards"]["merged"] == 1

    embedding_shard_embed(shard_id=second.pk, worker="late")  # not its shard: taken
    assert EmbeddingShard.objects.get(pk=second.pk).status == "running"
    EmbeddingShard.objects.filter(pk=second.pk).update(status="pending")
    embedding_shard_embed(shard_id=second.pk, worker="late")
    assert embedding_shards_merge()["left"] == 0
    ids, _ = _index_content()
    assert ids.tolist() == imported
    assert embedding_shards_progress() is None


@pytest.mark.django_db
def test_a_failing_shard_says_why_and_is_queued_again(imported, no_broker, monkeypatch):
    import search.embeddings as embeddings

    embedding_shards_plan(size=len(imported))
    shard = EmbeddingShard.objects.get()
    real = embeddings.embed

    def broken(texts, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(embeddings, "embed", broken)
    with pytest.raises(RuntimeError):
        embedding_shard_embed(shard_id=shard.pk, worker="w")
    shard.refresh_from_db()
    assert shard.status == "failed" and "CUDA out of memory" in shard.error
    assert index_health()["sharded_build"]["failed"][0]["error"].endswith("CUDA out of memory")

    no_broker.clear()
    monkeypatch.setattr(embeddings, "embed", real)
    assert embedding_shards_plan() == [shard.pk]  # planning again resumes the plan
    assert no_broker == [shard.pk]
    assert EmbeddingShard.objects.get(pk=shard.pk).status == "pending"
    assert embedding_shard_embed(shard_id=shard.pk, worker="w")["result"] == "done"


@pytest.mark.django_db
def test_shards_after_a_documents_first_build_embed_the_claims_only(imported, no_broker, capsys):
    search_index_update(documents_only=True)
    documents = set(IndexedVector.objects.filter(claim_number=None).values_list("pk", flat=True))
    call_command("search_index", "shards", "--size", "50")
    assert "queued" in capsys.readouterr().out
    planned = sum(EmbeddingShard.objects.values_list("planned", flat=True))
    assert planned == len(imported) - len(documents)
    for pk in EmbeddingShard.objects.values_list("pk", flat=True):
        embedding_shard_embed(shard_id=pk, worker="w")
    call_command("search_index", "shards", "--merge")
    shards = EmbeddingShard.objects.count()
    assert f"merged {shards} shards" in capsys.readouterr().out
    manifest = manifest_read()
    assert manifest["last_vector_id"] == imported[-1]
    assert "documents_through" not in manifest
    ids, _ = _index_content()
    assert ids.tolist() == imported
    status = json.loads(_status_text(capsys))
    assert status["pending_vectors"] == 0 and "sharded_build" not in status


@pytest.mark.django_db
def test_a_plan_that_no_longer_fits_a_rebuilt_index_is_refused_and_a_rebuild_drops_it(
    imported, no_broker
):
    embedding_shards_plan(size=len(imported))
    shard = EmbeddingShard.objects.get()
    embedding_shard_embed(shard_id=shard.pk, worker="w")
    search_index_rebuild()  # embeds every row itself
    assert not EmbeddingShard.objects.exists()

    embedding_shards_plan(size=len(imported))
    assert not EmbeddingShard.objects.exists()  # nothing is pending: no shards
    IndexedVector.objects.filter(pk=imported[-1]).delete()
    vector = IndexedVector.objects.create(
        patent_id=IndexedVector.objects.first().patent_id, claim_number=999
    )
    stale = EmbeddingShard.objects.create(
        embedding_model=shard.embedding_model,
        first_id=imported[0],
        last_id=vector.pk,
        planned=1,
        status="done",
        vectors=b"",
    )
    with pytest.raises(ShardError, match="no longer fits"):
        embedding_shards_merge()
    assert EmbeddingShard.objects.get(pk=stale.pk).status == "done"


def _status_text(capsys) -> str:
    call_command("search_index", "status")
    return capsys.readouterr().out
