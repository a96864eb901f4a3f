"""The dense index at a million patents, run by hand (not in CI).

    .venv/bin/python bench/scale.py --real DATA_DIR_OF_A_BUILT_SITE --patents 1000000
    .venv/bin/python bench/scale.py --real DATA_DIR_OF_A_BUILT_SITE --patents 1000000 --store

Vectors: the real MiniLM vectors of a built site's index (documents and claims of the
shared patents), and synthetic ones up to ``patents`` x 5.6 vectors: each a mixture of two
real vectors (weight 0.6 to 1 on the first) plus Gaussian noise, normalised, so that they
lie where real claim vectors lie. The check is printed: the distribution of each vector's
nearest-neighbour cosine among 69k real vectors against the same among 69k synthetic ones.

Queries: 300 real first-claim vectors, taken out of the base; their patent's document vector
stays in it (the known answer). For each index kind: build time, bytes, a single query's
p50/p95 on one thread, recall@10 against exact search, and whether the known answer is in
the top 10. Prints the CPU.
"""

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VECTORS_PER_PATENT = 5.6


def real_vectors(data_dir: Path):
    """ids, vectors, and {vector id: (patent id, claim number or None)} of a built site."""
    import faiss

    manifest = json.loads((data_dir / "index" / "manifest.json").read_text())
    index = faiss.read_index(str(data_dir / "index" / manifest["file"]))
    ids = faiss.vector_to_array(index.id_map).astype("int64")
    vectors = index.index.reconstruct_n(0, index.ntotal)
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        owners = {
            vid: (pid, claim)
            for vid, pid, claim in db.execute(
                "select id, patent_id, claim_number from search_indexedvector"
            )
        }
    return ids, vectors, owners


def synthetic_fill(out, real, rng, noise: float):
    """Fills ``out`` with mixtures of two rows of ``real`` plus noise, normalised."""
    import numpy as np

    count = len(out)
    step = 200_000
    for at in range(0, count, step):
        n = min(step, count - at)
        a = rng.integers(0, len(real), n)
        b = rng.integers(0, len(real), n)
        w = rng.uniform(0.6, 1.0, (n, 1)).astype("float32")
        x = w * real[a] + (1 - w) * real[b]
        x += rng.normal(0, noise, x.shape).astype("float32")
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[at : at + n] = x


def nn_cosines(vectors, sample: int, rng):
    import faiss
    import numpy as np

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    picks = rng.choice(len(vectors), sample, replace=False)
    scores, _ = index.search(vectors[picks], 2)
    return np.quantile(scores[:, 1], [0.1, 0.5, 0.9]).round(3).tolist()


def timed_queries(index, queries, k: int):
    import numpy as np

    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        _, ids = index.search(q[None, :], k)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return np.array(found), np.quantile(times, [0.5, 0.95]) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", type=Path, required=True, help="DATA_DIR of a built site")
    parser.add_argument("--patents", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", default="8,16,32")
    parser.add_argument("--rerank", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "scale")
    parser.add_argument(
        "--store",
        action="store_true",
        help="instead of hand-built indexes, the site's own: search.store's IVF (index_new, "
        "index_search) saved, then mapped and queried in a fresh process",
    )
    args = parser.parse_args()

    import faiss
    import numpy as np

    from allthepatents.cpu import cpu_flags, cpu_model_name

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(json.dumps({"cpu": cpu_model_name(), "flags": flags, "faiss": faiss.__version__}))

    ids, real, owners = real_vectors(args.real)
    by_patent: dict[int, dict] = {}
    for row, vid in enumerate(ids.tolist()):
        pid, claim = owners[vid]
        by_patent.setdefault(pid, {})[claim] = row
    candidates = [p for p, rows in by_patent.items() if None in rows and 1 in rows]
    chosen = rng.choice(len(candidates), args.queries, replace=False)
    query_rows = [by_patent[candidates[c]][1] for c in chosen]
    answer_rows = [by_patent[candidates[c]][None] for c in chosen]
    keep = np.ones(len(real), dtype=bool)
    keep[query_rows] = False
    base_real = real[keep]
    # Row numbers of the known answers in the base (real rows first, in order).
    answers = np.cumsum(keep)[answer_rows] - 1
    queries = np.ascontiguousarray(real[query_rows])

    total = int(args.patents * VECTORS_PER_PATENT)
    started = time.perf_counter()
    base = np.empty((total, base_real.shape[1]), dtype="float32")
    base[: len(base_real)] = base_real
    synthetic_fill(base[len(base_real) :], base_real, rng, args.noise)
    made = time.perf_counter() - started
    sample = min(len(base_real), 69_000)
    check = {
        "real_nn_cosine_q10_q50_q90": nn_cosines(base_real[:sample], 2000, rng),
        "synthetic_nn_cosine_q10_q50_q90": nn_cosines(base[-sample:], 2000, rng),
    }
    print(json.dumps({"vectors": len(base), "made_s": round(made, 1), **check}))

    args.out.mkdir(parents=True, exist_ok=True)
    if args.store:
        store_measure(base, queries, answers, args.out)
        return
    d = base.shape[1]
    # Exact: the reference, and what a file mapped read-only serves.
    flat = faiss.IndexFlatIP(d)
    started = time.perf_counter()
    flat.add(base)
    flat_path = args.out / "flat.faiss"
    faiss.write_index(flat, str(flat_path))
    flat_build = time.perf_counter() - started
    started = time.perf_counter()
    _, truth = flat.search(queries, 10)
    truth_s = time.perf_counter() - started
    del flat
    mapped = faiss.read_index(str(flat_path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    faiss.omp_set_num_threads(1)
    got, (p50, p95) = timed_queries(mapped, queries[:20], 10)
    print(
        json.dumps(
            {
                "kind": "flat (mmap)",
                "build_s": round(flat_build, 1),
                "bytes": flat_path.stat().st_size,
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "recall_at_10": 1.0,
                "answer_in_top10": float(
                    np.mean([a in t for a, t in zip(answers, truth, strict=True)])
                ),
                "exact_search_300_queries_2_threads_s": round(truth_s, 1),
            }
        )
    )

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, d, args.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    started = time.perf_counter()
    train = base[rng.choice(len(base), min(len(base), 64 * args.nlist), replace=False)]
    ivf.train(train)
    trained = time.perf_counter() - started
    for at in range(0, len(base), 500_000):
        ivf.add(base[at : at + 500_000])
    ivf_build = time.perf_counter() - started
    ivf_path = args.out / "ivf.faiss"
    faiss.write_index(ivf, str(ivf_path))
    faiss.omp_set_num_threads(1)
    for nprobe in [int(n) for n in args.nprobe.split(",")]:
        ivf.nprobe = nprobe
        times, recalls, hits = [], [], []
        for q, t, a in zip(queries, truth, answers, strict=True):
            started = time.perf_counter()
            _, cand = ivf.search(q[None, :], args.rerank)
            cand = cand[0][cand[0] >= 0]
            # Re-rank the candidates exactly from the mapped vectors.
            exact = mapped.reconstruct_batch(cand) @ q
            top = cand[np.argsort(-exact)[:10]]
            times.append(time.perf_counter() - started)
            recalls.append(len(set(top.tolist()) & set(t.tolist())) / 10)
            hits.append(a in top)
        print(
            json.dumps(
                {
                    "kind": f"IVF{args.nlist},SQ8 + exact re-rank of {args.rerank}",
                    "nprobe": nprobe,
                    "train_s": round(trained, 1),
                    "build_s": round(ivf_build, 1),
                    "bytes": ivf_path.stat().st_size,
                    "p50_ms": round(float(np.quantile(times, 0.5)) * 1000, 1),
                    "p95_ms": round(float(np.quantile(times, 0.95)) * 1000, 1),
                    "recall_at_10": round(float(np.mean(recalls)), 4),
                    "answer_in_top10": round(float(np.mean(hits)), 4),
                }
            )
        )


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    import django

    django.setup()


def store_measure(base, queries, answers, out: Path):
    """The site's IVF kind, built by ``search.store.index_new`` as ``search_index update``
    builds it, saved, then mapped read-only and searched through ``index_search`` in a
    fresh process: its private memory is what a web worker pays per index."""
    import multiprocessing

    import faiss
    import numpy as np

    _django()
    from search.store import index_new

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    _, truth = exact.search(queries, 10)
    del exact
    started = time.perf_counter()
    index = index_new(base.shape[1], kind="ivf", training=base)
    ids = np.arange(len(base), dtype="int64")
    for at in range(0, len(base), 500_000):
        index.add_with_ids(base[at : at + 500_000], ids[at : at + 500_000])
    build = time.perf_counter() - started
    path = out / "store-ivf.faiss"
    faiss.write_index(index, str(path))
    del index
    np.save(out / "queries.npy", queries)
    np.save(out / "truth.npy", truth)
    np.save(out / "answers.npy", np.asarray(answers))
    print(
        json.dumps({"kind": "store ivf", "build_s": round(build, 1), "bytes": path.stat().st_size})
    )
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_store_search, args=(str(path), str(out)))
    child.start()
    child.join()


def _memory() -> dict:
    status = Path("/proc/self/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1]) // 1024
        for line in status
        if line.startswith(("RssAnon", "RssFile"))
    }


def _store_search(path: str, out: str):
    import faiss
    import numpy as np

    _django()
    from django.conf import settings

    from search.store import index_search

    before = _memory()
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    faiss.omp_set_num_threads(1)
    queries = np.load(Path(out) / "queries.npy")
    truth = np.load(Path(out) / "truth.npy")
    answers = np.load(Path(out) / "answers.npy")
    passes = []
    # The first pass reads the file in from disk as it goes (cold, right after a build that
    # pushed the page cache out); the second finds the pages it needs resident (a warm
    # server).
    for _ in ("cold", "warm"):
        times, recalls, hits = [], [], []
        for q, t, a in zip(queries, truth, answers, strict=True):
            started = time.perf_counter()
            _, found = index_search(index, q[None, :], 10)
            times.append(time.perf_counter() - started)
            recalls.append(len(set(found[0].tolist()) & set(t.tolist())) / 10)
            hits.append(a in found[0])
        passes.append(
            [
                round(float(np.quantile(times, 0.5)) * 1000, 1),
                round(float(np.quantile(times, 0.95)) * 1000, 1),
            ]
        )
    after = _memory()
    print(
        json.dumps(
            {
                "kind": "store ivf (mmap, fresh process)",
                "nprobe": settings.SEARCH_IVF_NPROBE,
                "rerank": settings.SEARCH_IVF_RERANK,
                "cold_p50_p95_ms": passes[0],
                "warm_p50_p95_ms": passes[1],
                "recall_at_10": round(float(np.mean(recalls)), 4),
                "answer_in_top10": round(float(np.mean(hits)), 4),
                "private_mb_before_after": [before["RssAnon"], after["RssAnon"]],
                "mapped_mb_touched": after["RssFile"] - before["RssFile"],
            }
        )
    )


if __name__ == "__main__":
    main()
