"""Indexing a new site: progress while it runs, partial indexes that serve, rows that
arrive mid-run, one pending task instead of a stream, and the bulk encoder's agreement."""

import json

import pytest

from patents.importing import reference_import_records
from search.params import SearchFilters
from search.selectors import index_health, search_patents
from search.services import (
    search_documents_sync,
    search_index_rebuild,
    search_index_update,
    search_index_update_enqueue,
    search_index_update_started,
)
from search.store import manifest_read, reader_reset
from tests.factories import patent_published


@pytest.fixture
def fixture_corpus(fixture_jsonl, tmp_path, memo_embeddings, settings):
    settings.INDEX_DIR = tmp_path / "index"
    settings.NEAR_COPY_EMBEDDING_CHECK = False
    reader_reset()
    lines = fixture_jsonl.read_text().splitlines()
    reference_import_records(enumerate(lines, start=1))
    search_documents_sync()
    yield lines
    reader_reset()


@pytest.mark.django_db
def test_progress_and_partial_indexes_while_a_first_build_runs(fixture_corpus, settings):
    from search.models import IndexedVector

    settings.SEARCH_INDEX_CHECKPOINT = 100
    total = IndexedVector.objects.count()
    assert total > 300
    seen = []

    def progress(n):
        health = index_health()
        seen.append(health)

    search_index_update(progress=progress)
    building = [h for h in seen if h.get("building")]
    assert building, "no progress was visible during the build"
    assert all(h["building"]["total"] == total for h in building)
    dones = [h["building"]["done"] for h in building]
    assert dones == sorted(dones) and dones[-1] == total
    # Partial indexes were saved and served while the rest ran.
    partial = [h for h in seen if h.get("count") and h["count"] < total]
    assert partial and partial[0]["state"] == "building"
    final = index_health()
    assert final["state"] == "ok" and final["count"] == total and "building" not in final


@pytest.mark.django_db
def test_a_partial_index_answers_searches(fixture_corpus, settings):
    settings.SEARCH_INDEX_CHECKPOINT = 64
    answers = []

    def progress(n):
        if manifest_read() and not answers:
            result = search_patents("telephone keyboard", filters=SearchFilters(origin="all"), k=5)
            answers.append(result.engine)

    search_index_update(progress=progress)
    assert answers == ["hybrid"]


@pytest.mark.django_db
def test_rows_arriving_mid_run_are_indexed_by_the_same_run(fixture_corpus):
    from search.models import IndexedVector

    added = []

    def progress(n):
        if not added:
            added.append(patent_published(n=501))
            search_documents_sync()  # the publish hook, which runs on commit

    result = search_index_update(progress=progress)
    assert added
    assert result["added"] == IndexedVector.objects.count()
    assert search_index_update()["added"] == 0  # the follow-up finds nothing, quickly


@pytest.mark.django_db
def test_one_pending_index_task_at_a_time(settings, monkeypatch):

    sent = []
    from search.tasks import search_index_update_task

    monkeypatch.setattr(
        search_index_update_task, "apply_async", lambda **kw: sent.append("search.update_index")
    )
    search_index_update_started()
    for _ in range(5):
        search_index_update_enqueue()
    assert sent == ["search.update_index"]
    search_index_update_started()  # the task began: the next publication enqueues again
    search_index_update_enqueue()
    assert sent == ["search.update_index", "search.update_index"]


@pytest.mark.django_db
def test_search_index_status_shows_progress(fixture_corpus, settings, capsys):
    from django.core.management import call_command

    settings.SEARCH_INDEX_CHECKPOINT = 100
    statuses = []

    def progress(n):
        call_command("search_index", "status")
        statuses.append(json.loads(capsys.readouterr().out))

    search_index_update(progress=progress)
    assert any(s.get("building", {}).get("eta_seconds") is not None for s in statuses)


@pytest.mark.parametrize("precision, floor", [("bf16", 0.99), ("int8", 0.95)])
def test_bulk_vectors_agree_with_query_vectors(settings, precision, floor):
    """The bulk paths (bf16 where the CPU has it, int8 elsewhere) against fp32 on real text:
    bf16 >= 0.99; int8 >= 0.95 (0.975 at worst on 400 shared texts, and no recall lost
    on search_eval's dev split: bench/README.md)."""
    import numpy as np

    from search.embeddings import embed, embedding_bulk_precision

    settings.EMBEDDING_BULK_PRECISION = precision

    texts = [
        "A telephone comprising a keyboard, a display and a dialing circuit.",
        "1. A method of polishing a semiconductor wafer with a slurry comprising silica "
        "particles, wherein the pad rotates at a speed between 30 and 90 rpm.",
        "Golf club head with adjustable weights.",
    ]
    fp32 = embed(texts)
    bulk = embed(texts, bulk=True)
    cosine = np.sum(fp32 * bulk, axis=1)
    assert cosine.min() >= floor, (embedding_bulk_precision(), cosine)


def test_a_query_is_embedded_in_the_query_precision(settings, monkeypatch):
    """EMBEDDING_QUERY_PRECISION: a search's query goes through the query model (bf16 is
    a bf16 copy of the embedder, within 0.99 of fp32's vector, as bulk bf16; fp32 is the embedder
    itself); ``auto`` follows the CPU."""
    import numpy as np
    import torch

    from search import embeddings

    query = "1. A method of polishing a semiconductor wafer with a slurry of silica particles."
    settings.EMBEDDING_QUERY_PRECISION = "fp32"
    assert embeddings._query_model(None) is embeddings.embedder_get(None)
    settings.EMBEDDING_QUERY_PRECISION = "bf16"
    model = embeddings._query_model(None)
    assert next(model.parameters()).dtype == torch.bfloat16
    bf16 = model.encode([query], normalize_embeddings=True, convert_to_tensor=True).float()
    fp32 = embeddings.embedder_get(None).encode([query], normalize_embeddings=True)
    bf16 = bf16.numpy()
    assert float(fp32[0] @ bf16[0]) >= 0.99 and not np.array_equal(fp32, bf16)
    asked = []
    inner = embeddings.embed
    monkeypatch.setattr(
        embeddings, "embed", lambda texts, **kw: asked.append(kw) or inner(texts, **kw)
    )
    assert embeddings.embed_queries([query]).shape == (1, fp32.shape[1])
    assert asked and all(kw.get("query") for kw in asked)
    settings.EMBEDDING_QUERY_PRECISION = "auto"
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr("allthepatents.cpu.cpu_has_native_bf16", lambda n=native: n)
        assert embeddings.embedding_query_precision() == expected


@pytest.mark.django_db
def test_a_forced_rebuild_keeps_serving_the_old_index(fixture_corpus, settings):
    settings.SEARCH_INDEX_CHECKPOINT = 64
    search_index_update()
    full = manifest_read()["count"]
    counts = []
    search_index_rebuild(progress=lambda n: counts.append(manifest_read()["count"]))
    assert set(counts) == {full}  # no partial index replaced the good one mid-rebuild
    assert index_health()["count"] == full


@pytest.mark.django_db
def test_search_alert_feed_lists_new_matching_inventions(
    client, settings, tmp_path, memo_embeddings
):
    settings.INDEX_DIR = tmp_path / "alerts"
    settings.SEARCH_ALERT_CACHE_SECONDS = 0
    reader_reset()
    stirrer = dict(
        title="Self-stirring mug",
        abstract="A mug with a magnetic stirrer driven by a small motor in its base.",
        claims=[{"number": 1, "text": "A mug comprising a base, a motor and a magnetic stirrer."}],
    )
    patent_published(n=1, **stirrer)
    patent_published(
        n=2,
        title="Folding ladder hook",
        abstract="A hook that holds a folding ladder on a wall bracket.",
        claims=[{"number": 1, "text": "A hook comprising a bracket and a hinge."}],
    )
    search_documents_sync()
    search_index_update()
    url = "/search/feed.atom?q=mug+with+a+magnetic+stirrer+motor"
    feed = client.get(url).content.decode()
    assert "Self-stirring mug" in feed and "Folding ladder hook" not in feed
    later = patent_published(n=3, **{**stirrer, "title": "Self-stirring travel mug"})
    search_documents_sync()
    search_index_update()
    feed = client.get(url).content.decode()
    assert "Self-stirring travel mug" in feed and later.public_id in feed
    reader_reset()


@pytest.mark.django_db
def test_each_alert_feed_has_its_own_id_and_a_self_link_that_fetches_it(
    client, settings, tmp_path, memo_embeddings
):
    """A feed reader tells feeds apart by their id and refreshes from rel="self": every
    search's feed must name itself, with its filters, or readers merge them or poll a URL
    that answers 404."""
    import xml.etree.ElementTree as ET

    settings.INDEX_DIR = tmp_path / "alert-ids"
    settings.SEARCH_ALERT_CACHE_SECONDS = 0
    reader_reset()
    patent_published(n=1, title="Self-stirring mug")
    search_documents_sync()
    search_index_update()
    atom = "{http://www.w3.org/2005/Atom}"

    def feed(url):
        response = client.get(url)
        assert response.status_code == 200, url
        root = ET.fromstring(response.content)
        links = {link.get("rel"): link.get("href") for link in root.findall(f"{atom}link")}
        return root.findtext(f"{atom}id"), links, response.content

    mug_id, mug_links, mug = feed("/search/feed.atom?q=stirring+mug&origin=generated&junk=1")
    hook_id, hook_links, _ = feed("/search/feed.atom?q=ladder+hook")
    assert mug_id != hook_id
    assert "q=stirring+mug" in mug_id and "origin=generated" in mug_id
    self_url = mug_links["self"]
    assert self_url.startswith("http://testserver/search/feed.atom?") and "junk" not in self_url
    assert "q=stirring+mug" in self_url and "origin=generated" in self_url
    assert feed(self_url.removeprefix("http://testserver"))[0] == mug_id
    assert mug_links["alternate"] == mug_id  # the search page it follows
    assert b"Self-stirring mug" in mug
    reader_reset()


@pytest.mark.django_db
def test_a_first_build_keeps_every_core_when_it_loads_the_model(
    fixture_jsonl, tmp_path, settings, monkeypatch
):
    """The model's first load used to reset torch to TORCH_THREADS inside the indexing
    context: a first `search_index update` from the command line ran on one core."""
    import torch

    import search.embeddings as embeddings

    settings.INDEX_DIR = tmp_path / "threads"
    settings.TORCH_THREADS = 1
    settings.SEARCH_INDEX_THREADS = 2
    settings.NEAR_COPY_EMBEDDING_CHECK = False
    reader_reset()
    lines = fixture_jsonl.read_text().splitlines()[:3]
    reference_import_records(enumerate(lines, start=1))
    search_documents_sync()
    monkeypatch.setattr(embeddings, "_models", {})
    monkeypatch.setattr(embeddings, "_bulk_models", {})
    real = embeddings.embed
    seen = []

    def embed(texts, **kwargs):
        vectors = real(texts, **kwargs)
        seen.append(torch.get_num_threads())
        return vectors

    monkeypatch.setattr(embeddings, "embed", embed)
    before = torch.get_num_threads()
    search_index_update()
    assert seen and set(seen) == {2}
    assert torch.get_num_threads() == before  # queries go back to their own setting
    reader_reset()


@pytest.mark.django_db
def test_a_second_writer_waits_for_the_first_and_says_so(fixture_corpus, settings, capsys):
    """`make run`'s worker indexes; `make demo`'s `search_index update` meets its lock: it
    says why it waits, then does what is left; after --wait a clear error, no traceback."""
    import subprocess
    import sys

    from django.core.management import CommandError, call_command

    from tests.helpers import ROOT

    holder = (
        "import sys, time; from filelock import FileLock;"
        "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True);"
        "time.sleep(float(sys.argv[2]))"
    )
    lock_path = str(settings.INDEX_DIR / ".lock")
    settings.INDEX_DIR.mkdir(parents=True, exist_ok=True)

    def hold(seconds):
        process = subprocess.Popen(
            [sys.executable, "-c", holder, lock_path, str(seconds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout.readline().strip() == "held"
        return process

    busy = hold(30)
    try:
        with pytest.raises(CommandError, match="another process has been writing"):
            call_command("search_index", "update", "--no-progress", "--wait", "1")
    finally:
        busy.kill()
        busy.wait()
    brief = hold(3)
    call_command("search_index", "update", "--no-progress", "--wait", "120")
    brief.wait()
    captured = capsys.readouterr()
    assert "another process is writing the search index" in captured.err
    assert manifest_read()["count"] > 0


@pytest.mark.django_db
def test_a_build_in_processes_holds_the_same_vectors_as_one_in_a_single_process(
    fixture_corpus, settings, tmp_path, monkeypatch
):
    """`search_index update --processes 2`: real spawned processes, each with the real
    MiniLM, index every vector with its own id, and each vector is the text's fp32
    embedding computed here (to float noise). (The reference is the model itself, not
    this module's memoised embed, which may hold another precision's vectors.)"""
    import faiss
    import numpy as np

    import search.services
    from search.embeddings import embedder_get
    from search.models import IndexedVector
    from search.services import vector_texts

    settings.EMBEDDING_BULK_PRECISION = "fp32"
    monkeypatch.setattr(search.services, "POOL_MIN_ROWS", 10)
    settings.INDEX_DIR = tmp_path / "pooled"
    reader_reset()
    result = search_index_update(processes=2)
    rows = list(IndexedVector.objects.order_by("pk"))
    assert result["added"] == len(rows)
    pooled = _vectors_by_id(faiss, settings)
    assert sorted(pooled) == [r.pk for r in rows]
    expected = embedder_get().encode(vector_texts(rows), normalize_embeddings=True)
    worst = min(float(np.dot(pooled[r.pk], expected[n])) for n, r in enumerate(rows))
    assert worst > 0.9999


def _vectors_by_id(faiss, settings) -> dict:
    from search.store import index_load_checked

    index = index_load_checked(model=settings.EMBEDDING_MODEL).index
    ids = faiss.vector_to_array(index.id_map)
    vectors = index.index.reconstruct_n(0, index.ntotal)
    return dict(zip(ids.tolist(), vectors, strict=True))


@pytest.mark.django_db
def test_searching_processes_map_the_index_file_instead_of_copying_it(fixture_corpus, settings):
    """The reader's index is a read-only mapping of the file (Linux: /proc/self/maps), and
    it answers as the index read whole does."""
    import sys

    from search.store import index_for_search, index_load_checked

    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/self/maps is Linux's")
    settings.SEARCH_INDEX_MMAP = True
    search_index_update()
    reader_reset()
    loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    path = str(settings.INDEX_DIR / loaded.manifest["file"])
    with open("/proc/self/maps") as fh:
        mapped = [line for line in fh if line.rstrip().endswith(path)]
    assert mapped and all(" r--s " in line for line in mapped), mapped
    whole = index_load_checked(model=settings.EMBEDDING_MODEL, mmap=False).index
    query = whole.index.reconstruct_n(0, 3)
    assert (loaded.index.search(query, 5)[1] == whole.search(query, 5)[1]).all()
    hits = search_patents("telephone keyboard", filters=SearchFilters(origin="all"), k=5).hits
    assert hits


@pytest.mark.django_db
def test_the_update_command_knows_how_many_vectors_it_will_embed(fixture_corpus):
    """The progress bar has a total, so it shows the time left (an update's bar had none)."""
    import io

    from django.core.management import call_command

    from search.models import IndexedVector

    total = IndexedVector.objects.count()
    err = io.StringIO()
    call_command("search_index", "update", stderr=err)
    assert f"{total}/{total}" in err.getvalue(), err.getvalue()[-500:]
    patent_published(n=99)
    search_documents_sync()
    err = io.StringIO()
    call_command("search_index", "update", stderr=err)
    added = IndexedVector.objects.count() - total
    assert f"{added}/{added}" in err.getvalue(), err.getvalue()[-500:]
