"""A site of a million patents, measured end to end; run by hand (not in CI).

    .venv/bin/python bench/million.py corpus --patents 1000000      # var/million/corpus.jsonl.gz
    .venv/bin/python bench/million.py import                        # the real import_patents
    .venv/bin/python bench/million.py vectors                        # the site's index, see below
    .venv/bin/python bench/million.py dates                          # hidden patents dated, date table
    .venv/bin/python bench/million.py keyword                        # pasted claims, FTS / tsvector
    SEARCH_KEYWORD_ENGINE=tantivy .venv/bin/python bench/million.py fulltext   # Tantivy, built
    SEARCH_KEYWORD_ENGINE=tantivy .venv/bin/python bench/million.py keyword    # ... and queried
    .venv/bin/python bench/million.py merge                          # a full delta merged
    .venv/bin/python bench/million.py api                            # /api/search through gunicorn
    .venv/bin/python bench/million.py publish                        # one invention published
    .venv/bin/python bench/million.py profile                        # where a filtered query goes

Every step works on ``--site`` (default var/million/site, a DATA_DIR; ``DATABASE_URL`` picks
PostgreSQL instead of that directory's SQLite file) and prints the CPU.

The corpus: records built from the shared patents' real text, so that term statistics look
real. Each takes a real title, two to four real abstract sentences and the claims of a real
patent (so claims stay numbered and dependent as real ones are), a unique number
(``XS0000001``...), a publication date spread over 1976-2026 (more recent years weigh more,
as grants do) and the CPC codes of a real patent. Hidden among them: ``--hidden`` real
patents (dated, with abstract and claims), whose text no synthetic record borrows, so that
their first claims are queries with one known answer.

The vectors: embedding a million patents on two cores would take about a day, so the index
gets the real vectors of the hidden patents (embedded here, with the site's embedder) and,
for every other vector row, a mixture of two real vectors plus noise, normalised (the
method and its check are in ``bench/scale.py``), written through the site's own store
(``search.store.index_new``, ``index_save``): the same IVF kind, file and manifest a built
site has.
"""

import argparse
import datetime as dt
import gzip
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "patents.jsonl.gz"
QUERY_OFFSET = 0
# About a tenth of the corpus is published on or after this date (the ramp in corpus_write).
DATE_FILTER_AFTER = "2023-11-01"
SENTENCE = re.compile(r"(?<=[.;])\s+(?=[A-Z])")


def cpu_line() -> str:
    from allthepatents.cpu import cpu_flags, cpu_model_name

    kinds = sorted({"avx2", "avx512f", "avx512_bf16", "amx_bf16"} & cpu_flags())
    return f"{cpu_model_name()} ({', '.join(kinds)}; {os.cpu_count()} cores)"


def _shared_records():
    with gzip.open(SHARED, "rt") as f:
        for line in f:
            yield json.loads(line)


def corpus_write(*, patents: int, hidden: int, out: Path, seed: int) -> dict:
    rng = random.Random(seed)
    records = list(_shared_records())
    full = [
        r
        for r in records
        if r.get("abstract")
        and r.get("claims")
        and re.match(r"\d{4}-\d\d-\d\d", r.get("date") or "")
    ]
    rng.shuffle(full)
    held = full[:hidden]
    held_ids = {r["id"] for r in held}
    donors = [r for r in records if r["id"] not in held_ids]
    titles = [r["title"] for r in donors if r.get("title")]
    sentences = [s for r in donors if r.get("abstract") for s in SENTENCE.split(r["abstract"])]
    claim_sets = [r["claims"] for r in donors if r.get("claims")]
    cpcs = [r["cpc"] for r in donors if r.get("cpc")]
    first = 1976 * 12
    months = (2026 - 1976 + 1) * 12
    out.parent.mkdir(parents=True, exist_ok=True)
    slots = set(rng.sample(range(patents), hidden))
    held_iter = iter(held)
    started = time.time()
    with gzip.open(out, "wt", compresslevel=1) as f:
        for n in range(patents):
            if n in slots:
                f.write(json.dumps(next(held_iter)) + "\n")
                continue
            # Grants per year grew about fourfold since 1976: a linear ramp of weight.
            month = first + int(months * (rng.random() ** 0.6))
            date = f"{month // 12}-{month % 12 + 1:02d}-{rng.randint(1, 28):02d}"
            abstract = " ".join(rng.sample(sentences, rng.randint(2, 4)))
            record = {
                "id": f"XS{n:07d}",
                "title": rng.choice(titles),
                "abstract": abstract,
                "claims": rng.choice(claim_sets),
                "date": date,
                "cpc": rng.choice(cpcs),
                "ipc": [],
                "citations": [],
                "claims_complete": True,
                "source": "bench/million.py",
            }
            f.write(json.dumps(record) + "\n")
    (out.parent / "hidden.json").write_text(json.dumps(held))
    return {
        "patents": patents,
        "hidden": len(held),
        "donor_claim_sets": len(claim_sets),
        "abstract_sentences": len(sentences),
        "seconds": round(time.time() - started, 1),
        "bytes": out.stat().st_size,
    }


def _env(site: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("DATA_DIR", str(site))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _django(site: Path):
    os.environ.update(_env(site))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    import django

    django.setup()


def import_run(*, site: Path, corpus: Path, batch_size: int) -> dict:
    site.mkdir(parents=True, exist_ok=True)
    python = str(ROOT / ".venv" / "bin" / "python")
    env = _env(site)
    # No broker during the import: the publish hook's enqueue fails fast and is logged.
    env.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
    subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True)
    started = time.time()
    subprocess.run(
        [
            python,
            "manage.py",
            "import_patents",
            str(corpus),
            "--batch-size",
            str(batch_size),
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    took = time.time() - started
    _django(site)
    from patents.models import Claim, Patent
    from search.models import IndexedVector

    counts = {
        "patents": Patent.objects.count(),
        "claims": Claim.objects.count(),
        "vector_rows": IndexedVector.objects.count(),
    }
    return {"import_seconds": round(took, 1), **counts, "db_bytes": _db_bytes(site)}


def _db_bytes(site: Path) -> int | None:
    path = site / "db.sqlite3"
    return path.stat().st_size if path.exists() else None


def _real_base(site: Path, *, count: int):
    """Real vectors to mix the synthetic ones from: ``count`` texts of the shared patents
    that lend the corpus its text (never a hidden one), documents and claims in the corpus's
    proportion, embedded with the site's bulk path in one process per core; cached."""
    import numpy as np

    from search.embeddings import EmbeddingPool

    path = _corpus_dir(site) / f"base-{count}.npy"
    if path.exists():
        return np.load(path)
    hidden = {r["id"] for r in json.loads((_corpus_dir(site) / "hidden.json").read_text())}
    texts = []
    for r in _shared_records():
        if r["id"] in hidden:
            continue
        if r.get("title") or r.get("abstract"):
            texts.append(f"{r.get('title', '')}. {r.get('abstract', '')}".strip(". "))
        texts.extend(c for c in r.get("claims") or [] if c.strip())
    rng = random.Random(11)
    texts = rng.sample(texts, min(count, len(texts)))
    started = time.time()
    with EmbeddingPool(os.cpu_count() or 1) as pool:
        parts = [pool.embed_async(texts[at : at + 1024])() for at in range(0, len(texts), 1024)]
    vectors = np.concatenate(parts)
    print(f"base: {len(texts)} real vectors embedded in {time.time() - started:.0f} s", flush=True)
    np.save(path, vectors)
    return vectors


def vectors_build(*, site: Path, noise: float, seed: int, base_count: int) -> dict:
    """The site's index: real vectors for the hidden patents, synthetic ones for the rest."""
    _django(site)
    import numpy as np
    from django.conf import settings

    from bench.scale import nn_cosines, synthetic_fill
    from patents.models import Patent
    from search.embeddings import embed, embedding_dimension
    from search.models import IndexedVector
    from search.services import search_documents_sync, vector_texts
    from search.store import index_kind_for, index_new, index_save

    search_documents_sync()
    base = _real_base(site, count=base_count)
    hidden = json.loads((_corpus_dir(site) / "hidden.json").read_text())
    hidden_pks = list(
        Patent.objects.filter(source_id__in=[r["id"] for r in hidden]).values_list("pk", flat=True)
    )
    real_rows = list(IndexedVector.objects.filter(patent_id__in=hidden_pks).order_by("pk"))
    started = time.time()
    real = embed(vector_texts(real_rows), bulk=True)
    embed_s = time.time() - started
    ids = np.array(IndexedVector.objects.order_by("pk").values_list("pk", flat=True), dtype="int64")
    dimension = embedding_dimension()
    vectors = np.lib.format.open_memmap(
        _corpus_dir(site) / "vectors.npy", mode="w+", dtype="float32", shape=(len(ids), dimension)
    )
    rng = np.random.default_rng(seed)
    synthetic_fill(vectors, base, rng, noise)
    # The check that synthetic vectors lie where real ones do: nearest-neighbour cosines
    # within equal-sized sets of each.
    check = min(20_000, len(base))
    looks = {
        "real_nn_cosine_p10_p50_p90": nn_cosines(base[:check], 2000, rng),
        "synthetic_nn_cosine_p10_p50_p90": nn_cosines(np.asarray(vectors[:check]), 2000, rng),
    }
    position = {int(v): i for i, v in enumerate(ids)}
    for row, vector in zip(real_rows, real, strict=True):
        vectors[position[row.pk]] = vector
    vectors.flush()
    del position
    started = time.time()
    kind = index_kind_for(len(ids))
    index = index_new(dimension, kind=kind, training=vectors if kind == "ivf" else None)
    # One call from the mapped file: the full-precision copy is allocated once at its size
    # (added in chunks, its buffer doubled as it grew, and 8.5 million vectors needed the
    # old and the new buffer at once: more than 24 GB).
    index.add_with_ids(vectors, ids)
    manifest = index_save(
        index,
        manifest={
            "embedding_model": settings.EMBEDDING_MODEL,
            "dimension": dimension,
            "index_type": kind,
            "last_vector_id": int(ids.max()),
            **({"ivf_trained_on": len(ids)} if kind == "ivf" else {}),
        },
    )
    build_s = time.time() - started
    dated = hidden_dated(site=site)  # and the table a build through search_index_update writes
    return {
        **dated,
        "vectors": len(ids),
        "real_vectors": len(real_rows),
        "real_embed_seconds": round(embed_s, 1),
        "index_kind": kind,
        "index_build_seconds": round(build_s, 1),
        "index_bytes": manifest.get("file_size"),
        **looks,
    }


def _corpus_dir(site: Path) -> Path:
    return site.parent


def _queries(site: Path, count: int) -> list[tuple[str, str]]:
    """(source id, first claim) of the hidden patents: ``count`` of them from QUERY_OFFSET
    (settings are tuned on the first 150 and reported on the other 150)."""
    hidden = json.loads((_corpus_dir(site) / "hidden.json").read_text())
    out = []
    for r in hidden[QUERY_OFFSET : QUERY_OFFSET + count]:
        claim = r["claims"][0]
        out.append((r["id"], re.sub(r"^\s*1\s*\.\s*", "", claim)))
    return out


def _quantiles(seconds: list[float]) -> dict:
    import numpy as np

    ms = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.quantile(ms, 0.5)), 1),
        "p95_ms": round(float(np.quantile(ms, 0.95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "n": len(ms),
    }


def keyword_measure(*, site: Path, queries: int) -> dict:
    _django(site)
    from django.conf import settings
    from django.db import connection

    from patents.models import Patent
    from search.keyword import keyword_search
    from search.text import query_terms

    results = {"vendor": connection.vendor, "engine": settings.SEARCH_KEYWORD_ENGINE}
    asked = _queries(site, queries)
    by_source = dict(
        Patent.objects.filter(source_id__in=[s for s, _ in asked]).values_list("source_id", "pk")
    )
    seconds, found, terms = [], 0, []
    for source_id, claim in asked:
        terms.append(len(query_terms(claim)))
        started = time.perf_counter()
        hits = keyword_search(claim, limit=200)
        seconds.append(time.perf_counter() - started)
        found += any(pk == by_source.get(source_id) for pk, _ in hits[:10])
    results["pasted_claim"] = _quantiles(seconds)
    results["terms_median"] = sorted(terms)[len(terms) // 2]
    results["known_answer_in_top10"] = round(found / len(asked), 3)
    return results


def merge_measure(*, site: Path, count: int, seed: int) -> dict:
    """A delta of ``count`` vectors (new ids, mixtures of two of the index's own vectors
    plus noise, as `vectors` makes them) merged into the site's main file as the indexing worker does when the delta
    is full (``index_merge_streamed``), in a scratch directory of hard links beside the
    site's index (the site's own files are left as they are). Reports the time and the
    process's peak anonymous memory (the mapped main file's pages are the page cache's)."""
    _django(site)
    import shutil
    import threading

    import faiss
    import numpy as np
    from django.conf import settings

    from search.store import index_dir, index_merge_streamed, index_new, manifest_read

    source = index_dir()
    current = manifest_read()
    scratch = source.parent / "merge-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    os.link(source / current["file"], scratch / current["file"])
    shutil.copy(source / "manifest.json", scratch / "manifest.json")
    settings.INDEX_DIR = scratch
    rng = np.random.default_rng(seed)
    from search.store import stored_vectors

    mapped = faiss.read_index(
        str(scratch / current["file"]), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    )
    vectors = stored_vectors(mapped)[1]
    picks = np.sort(rng.integers(0, len(vectors), size=(count, 2)), axis=0)
    delta_rows = vectors[picks[:, 0]] + vectors[picks[:, 1]]
    delta_rows += rng.normal(0, 0.02, delta_rows.shape).astype("float32")
    delta_rows /= np.linalg.norm(delta_rows, axis=1, keepdims=True)
    del vectors, mapped
    delta = index_new(int(current["dimension"]))
    first = int(current["last_vector_id"]) + 1
    delta.add_with_ids(delta_rows.astype("float32"), np.arange(first, first + count))
    peak = {"anon_kb": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak["anon_kb"] = max(peak["anon_kb"], int(line.split()[1]))
            done.wait(0.2)

    # The worker has read the main file's checksum once before (it remembers the files it
    # verified): timed apart.
    from search.store import _checked_file, _checksum_check

    started = time.time()
    _checksum_check(current, _checked_file(current, "index")[0], "index")
    checksum_s = time.time() - started
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.time()
    merged = index_merge_streamed(delta, manifest={**current, "last_vector_id": first + count - 1})
    took = time.time() - started
    done.set()
    watcher.join()
    check = faiss.read_index(
        str(scratch / merged["file"]), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    )
    result = {
        "delta_vectors": count,
        "main_vectors": int(current["count"]),
        "merged_vectors": int(check.ntotal),
        "merge_seconds": round(took, 1),
        "checksum_seconds_before": round(checksum_s, 1),
        "peak_anonymous_mb": peak["anon_kb"] // 1024,
        "merged_bytes": merged["file_size"],
    }
    del check
    shutil.rmtree(scratch)
    return result


def fulltext_build(*, site: Path) -> dict:
    """The Tantivy keyword engine built from the site's database, as `search_index keyword
    --rebuild` does (SEARCH_KEYWORD_ENGINE=tantivy)."""
    _django(site)
    import resource

    from django.conf import settings

    from search.fulltext import engine_dir, keyword_index_sync

    if settings.SEARCH_KEYWORD_ENGINE != "tantivy":
        raise SystemExit("set SEARCH_KEYWORD_ENGINE=tantivy")
    result = keyword_index_sync(rebuild=True)
    files = [f for f in engine_dir().rglob("*") if f.is_file()]
    return {
        **result,
        "engine_bytes": sum(f.stat().st_size for f in files),
        "segments": len({f.stem for f in files if f.suffix == ".idx"}),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def hidden_dated(*, site: Path) -> dict:
    """Gives the hidden patents that carry only a filing date (most of the shared file's) a
    publication date 18 months after it, when applications are published, so that a date
    filter can keep them; then writes the table of vector dates."""
    _django(site)
    from patents.models import Patent
    from search.services import search_index_dates_write

    hidden = [r["id"] for r in json.loads((_corpus_dir(site) / "hidden.json").read_text())]
    undated = Patent.objects.filter(
        source_id__in=hidden, source_date__isnull=True, filing_date__isnull=False
    )
    count = 0
    for patent in undated:
        day = patent.filing_date + dt.timedelta(days=548)
        count += Patent.objects.filter(pk=patent.pk).update(
            source_date=day,
            published_at=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC),
        )
    started = time.time()
    search_index_dates_write()
    still = Patent.objects.filter(source_id__in=hidden, source_date__isnull=True).count()
    return {
        "hidden_dated": count,
        "hidden_undated": still,
        "vector_dates_seconds": round(time.time() - started, 1),
    }


def api_measure(*, site: Path, queries: int, port: int, workers: int) -> dict:
    """The site as users reach it: gunicorn (the production config), one client, pasted
    first claims, without and with a date filter that keeps about a tenth of the corpus."""
    import urllib.request

    env = _env(site)
    env["WEB_CONCURRENCY"] = str(workers)
    env["PORT"] = str(port)
    env["SEARCH_RATE_LIMIT"] = "0"  # one client asking hundreds of times a minute
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    python = ROOT / ".venv" / "bin"
    server = subprocess.Popen(
        [
            str(python / "gunicorn"),
            "-c",
            "allthepatents/gunicorn_conf.py",
            "allthepatents.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the site did not become ready") from None
                time.sleep(2)
        asked = _queries(site, queries)
        out = {"workers": workers, "rss_mb_after_start": _rss(server.pid)}

        def run(extra) -> dict:
            seconds, found = [], 0
            for n, (source_id, claim) in enumerate(asked):
                # Reference patents and generated inventions alike (the site's default is
                # generated inventions only, and this corpus holds none).
                body = json.dumps({"q": claim, "origin": "all", **extra(n)}).encode()
                request = urllib.request.Request(
                    base + "/api/search",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=60) as r:  # noqa: S310
                    data = json.loads(r.read())
                seconds.append(time.perf_counter() - started)
                ids = [(res.get("reference") or {}).get("number") for res in data["results"]]
                found += source_id in ids[:10]
            return {**_quantiles(seconds), "known_answer_in_top10": round(found / len(asked), 3)}

        def date_filter(n: int) -> dict:
            # A different date each query (the site caches a filter's vector count for a
            # minute): about a tenth of the corpus each time.
            start = dt.date.fromisoformat(DATE_FILTER_AFTER) + dt.timedelta(days=n % 60 - 30)
            return {"after": start.isoformat()}

        answer_dates = {
            r["id"]: dt.date.fromisoformat(r["date"][:10])
            for r in json.loads((_corpus_dir(site) / "hidden.json").read_text())
        }

        def window_around_answer(n: int) -> dict:
            # Five years around the known answer's date: the filter keeps the answer, so
            # this measures what a filter does to finding it.
            day = answer_dates[asked[n][0]]
            return {
                "after": (day - dt.timedelta(days=913)).isoformat(),
                "before": (day + dt.timedelta(days=913)).isoformat(),
            }

        out["cold_no_filter"] = run(lambda n: {})  # the index's pages come from disk
        out["no_filter"] = run(lambda n: {})
        out["date_filter_10pct"] = run(date_filter)
        out["date_window_around_answer"] = run(window_around_answer)
        out["rss_mb_after_queries"] = _rss(server.pid)
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


PROFILED = {
    "embedding": "search/embeddings.py:embed_queries",
    "dense search": "search/selectors.py:dense_search",
    "FAISS (LoadedIndex.search)": "search/store.py:search",
    "vector map (vector_owners)": "search/selectors.py:vector_owners",
    "keyword search": "search/keyword.py:keyword_search",
    "candidate check by rows (patents_passing)": "search/selectors.py:patents_passing",
    "dates bitmap by row": "search/vector_dates.py:rows",
    "dates share count": "search/vector_dates.py:_kept_count",
    "the page's rows": "search/selectors.py:search_patents",
}


def profile_measure(*, site: Path, queries: int) -> dict:
    """A cProfile of ``search_patents`` in this process (no web server) for the api step's
    date-filtered queries, after one warm pass: milliseconds a query in each named part
    (cumulative, so parts nest: FAISS is inside dense search)."""
    import cProfile
    import pstats

    _django(site)
    from search.params import SearchFilters
    from search.selectors import search_patents

    asked = _queries(site, queries)

    def filters(n: int) -> SearchFilters:
        start = dt.date.fromisoformat(DATE_FILTER_AFTER) + dt.timedelta(days=n % 60 - 30)
        return SearchFilters(origin="all", after=start)

    for n, (_, claim) in enumerate(asked[:10]):
        search_patents(claim, filters=filters(n + 1000), k=10)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for n, (_, claim) in enumerate(asked):
        search_patents(claim, filters=filters(n), k=10)
    profiler.disable()
    took = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    out = {"queries": len(asked), "ms_a_query": round(1000 * took / len(asked), 1)}
    for label, where in PROFILED.items():
        path, name = where.split(":")
        total = sum(
            cumulative
            for (file, _, func), (_, _, _, cumulative, _) in stats.items()
            if func == name and file.endswith(path)
        )
        out[label] = round(1000 * total / len(asked), 1)
    return out


def _rss(pid: int) -> dict:
    """Memory of the gunicorn master's children, in MB: resident, private (pages no other
    process maps, which counts index pages in the page cache that only this worker has
    read), and anonymous (the process's own memory, which the kernel cannot drop and
    re-read from a file: what grows with the corpus if anything does)."""
    out = {}
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        rss = private = anon = 0
        for line in Path(f"/proc/{child}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            kb = int(rest.split()[0]) if rest.strip() else 0
            if key == "Rss":
                rss = kb
            elif key in ("Private_Clean", "Private_Dirty"):
                private += kb
            elif key == "Anonymous":
                anon = kb
        out[child] = {"rss": rss // 1024, "private": private // 1024, "anonymous": anon // 1024}
    return out


def publish_measure(*, site: Path) -> dict:
    """Inventions published through the site's service, each followed by the worker's
    update in this one process (as a long-running worker does): what publishing costs on
    this index (the main file should stay as it is, and be verified once, not every time)."""
    _django(site)
    from patents.services import patent_publish
    from search.services import search_index_update
    from search.store import manifest_read

    before = manifest_read()
    updates = []
    for n in range(3):
        patent_publish(
            title=f"Tidal turbine blade with a sacrificial anode, variant {n}",
            abstract="A blade that sheds barnacles by a sacrificial zinc anode at its root.",
            claims=[
                {
                    "number": 1,
                    "text": "A tidal turbine blade comprising a root, a sacrificial "
                    f"zinc anode at the root and a conductive path to the blade's tip {n}.",
                },
                {"number": 2, "text": "The blade of claim 1, wherein the anode is replaceable."},
            ],
            provenance={"generator_model": "bench", "mode": "top-down", "seed": n},
        )
        started = time.time()
        result = search_index_update()
        updates.append({"seconds": round(time.time() - started, 2), "added": result["added"]})
    after = manifest_read()
    return {
        "updates": updates,
        "main_file_unchanged": after["file"] == before["file"],
        "delta_vectors": (after.get("delta") or {}).get("count"),
        "delta_bytes": (after.get("delta") or {}).get("file_size"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "step",
        choices=[
            "corpus",
            "import",
            "vectors",
            "dates",
            "fulltext",
            "merge",
            "keyword",
            "api",
            "publish",
            "profile",
        ],
    )
    parser.add_argument("--site", type=Path, default=ROOT / "var" / "million" / "site")
    parser.add_argument("--patents", type=int, default=1_000_000)
    parser.add_argument("--hidden", type=int, default=300)
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--delta", type=int, default=50_000, help="merge: vectors in the delta")
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--base", type=int, default=30_000, help="real vectors to mix from")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--offset", type=int, default=150, help="first hidden patent queried (0: the tuning half)"
    )
    args = parser.parse_args()
    global QUERY_OFFSET
    QUERY_OFFSET = args.offset
    corpus = _corpus_dir(args.site) / "corpus.jsonl.gz"
    print("cpu:", cpu_line(), flush=True)
    if args.step == "corpus":
        result = corpus_write(patents=args.patents, hidden=args.hidden, out=corpus, seed=args.seed)
    elif args.step == "import":
        result = import_run(site=args.site, corpus=corpus, batch_size=args.batch_size)
    elif args.step == "vectors":
        result = vectors_build(
            site=args.site, noise=args.noise, seed=args.seed, base_count=args.base
        )
    elif args.step == "dates":
        result = hidden_dated(site=args.site)
    elif args.step == "fulltext":
        result = fulltext_build(site=args.site)
    elif args.step == "merge":
        result = merge_measure(site=args.site, count=args.delta, seed=args.seed)
    elif args.step == "keyword":
        result = keyword_measure(site=args.site, queries=args.queries)
    elif args.step == "publish":
        result = publish_measure(site=args.site)
    elif args.step == "profile":
        result = profile_measure(site=args.site, queries=args.queries)
    else:
        result = api_measure(
            site=args.site, queries=args.queries, port=args.port, workers=args.workers
        )
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
