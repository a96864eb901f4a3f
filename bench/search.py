"""Search benchmarks, run by hand (not in CI).

    .venv/bin/python bench/search.py faiss --sizes 100000,1000000
    .venv/bin/python bench/search.py embed
    .venv/bin/python bench/search.py index --data-dir var/bench --patents 1000
    .venv/bin/python bench/search.py api --url http://127.0.0.1:8000 --clients 1,8 --seconds 20

faiss: build time, memory, single-query p50/p95 and recall@10 against exact search, for the
index types the store uses (flat below SEARCH_HNSW_THRESHOLD, HNSW above), on random unit
vectors (worst case) and on "real-like" vectors (real MiniLM embeddings from an existing
index, resampled with small noise) when --real-index points at one.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def vectors_random(n, d, rng):
    import numpy as np

    x = rng.standard_normal((n, d), dtype="float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def vectors_real_like(n, base, rng, noise=0.05):
    import numpy as np

    picks = base[rng.integers(0, len(base), n)]
    x = picks + noise * rng.standard_normal(picks.shape, dtype="float32") / np.sqrt(base.shape[1])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype("float32")


def bench_faiss(args):
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    d = 384
    base = None
    if args.real_index:
        index = faiss.read_index(args.real_index)
        base = (
            index.index.reconstruct_n(0, index.ntotal)
            if hasattr(index, "index")
            else index.reconstruct_n(0, index.ntotal)
        )
        print(f"real vectors: {len(base)}")
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        kinds = [] if args.skip_random else [("random", vectors_random(n, d, rng))]
        if base is not None:
            kinds.append(("real-like", vectors_real_like(n, base, rng)))
        for data_name, xb in kinds:
            queries = xb[rng.integers(0, n, args.queries)] + 0.02 * rng.standard_normal(
                (args.queries, d), dtype="float32"
            )
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            flat = faiss.IndexFlatIP(d)
            flat.add(xb)
            _, truth = flat.search(queries, 10)
            candidates = [("flat", None)]
            if n >= 50_000:
                candidates += [("hnsw", int(ef)) for ef in str(args.ef_search).split(",")]
            built = None
            for kind, ef in candidates:
                before = rss_mb()
                started = time.perf_counter()
                if kind == "flat":
                    index = flat
                    build = 0.0
                elif built is None:
                    index = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                    index.hnsw.efConstruction = args.ef_construction
                    index.add(xb)
                    build = time.perf_counter() - started
                    memory = rss_mb() - before
                    built = index  # one build, searched at each efSearch
                if kind != "flat":
                    index.hnsw.efSearch = ef
                else:
                    memory = xb.nbytes / 2**20
                faiss.omp_set_num_threads(1)  # a web process answers one query on one thread
                lat = []
                hits = 0
                for i in range(args.queries):
                    t = time.perf_counter()
                    _, ids = index.search(queries[i : i + 1], 10)
                    lat.append((time.perf_counter() - t) * 1000)
                    hits += len(set(ids[0]) & set(truth[i]))
                faiss.omp_set_num_threads(args.threads)
                row = {
                    "n": n,
                    "data": data_name,
                    "index": kind if kind == "flat" else f"hnsw ef={ef}",
                    "build_s": round(build, 1),
                    "memory_mb": round(memory),
                    "p50_ms": round(pct(lat, 0.5), 3),
                    "p95_ms": round(pct(lat, 0.95), 3),
                    "recall@10": round(hits / (10 * args.queries), 4),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
            del flat
    return results


def bench_embed(args):
    import django

    django.setup()
    from search.embeddings import embed

    embed(["warm up"])
    queries = [
        "a bicycle saddle clamp",
        "1. A method of controlling a vehicle comprising "
        "receiving sensor data, determining a trajectory and actuating a brake." * 3,
    ]
    for q in queries:
        lat = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            embed([q])
            lat.append((time.perf_counter() - t) * 1000)
        print(
            json.dumps(
                {
                    "query_chars": len(q),
                    "p50_ms": round(pct(lat, 0.5), 2),
                    "p95_ms": round(pct(lat, 0.95), 2),
                }
            )
        )


def bench_index(args):
    os.environ["DATA_DIR"] = str(Path(args.data_dir).resolve())
    import django

    django.setup()
    from django.core.management import call_command

    from patents.models import Patent
    from search.services import search_index_rebuild

    call_command("migrate", verbosity=0)
    if Patent.objects.count() < args.patents:
        import gzip

        from patents.importing import reference_import_records

        lines = []
        with gzip.open(ROOT.parent / "shared" / "data" / "patents.jsonl.gz", "rt") as fh:
            for i, line in enumerate(fh):
                if i >= args.patents:
                    break
                lines.append((i + 1, line))
        reference_import_records(lines)
    n_patents = Patent.objects.count()
    from search.models import IndexedVector

    started = time.perf_counter()
    result = search_index_rebuild()
    took = time.perf_counter() - started
    print(
        json.dumps(
            {
                "patents": n_patents,
                "vectors": IndexedVector.objects.count(),
                "seconds": round(took, 1),
                "patents_per_s": round(n_patents / took, 2),
                "vectors_per_s": round(result["count"] / took, 1),
            }
        )
    )


def bench_encode(args):
    """Encoder paths side by side on real texts (documents and claims of the shared file),
    in one run: precision x threads x batch ordering, with each path's cosine agreement
    against fp32. Prints the CPU and the path `search.embeddings` would choose."""
    import gzip

    import django

    django.setup()
    import numpy as np
    import torch

    from allthepatents.cpu import cpu_flags, cpu_model_name
    from search.embeddings import embedder_get, embedding_bulk_precision

    texts = []
    with gzip.open(ROOT.parent / "shared" / "data" / "patents.jsonl.gz", "rt") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("title") or r.get("abstract"):
                texts.append(f"{r.get('title', '')}. {r.get('abstract', '')}".strip(". "))
            texts.extend(c for c in r.get("claims") or [] if isinstance(c, str))
            if len(texts) >= args.texts:
                break
    texts = texts[: args.texts]
    flags = cpu_flags()
    print(
        json.dumps(
            {
                "cpu": cpu_model_name(),
                "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
                "chosen_bulk_precision": embedding_bulk_precision(),
                "texts": len(texts),
                "chars": sum(map(len, texts)),
            }
        )
    )
    base = embedder_get()
    reference = None
    for precision in args.precisions.split(","):
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            model = base if precision == "fp32" else _model_in(base, precision)
            model.encode(texts[:8], batch_size=8)
            started = time.perf_counter()
            vectors = model.encode(
                texts, batch_size=args.batch, normalize_embeddings=True, convert_to_numpy=False
            )
            took = time.perf_counter() - started
            vectors = torch.stack(vectors).float().numpy()
            if reference is None:
                reference = vectors
            agree = np.sum(vectors * reference, axis=1)
            print(
                json.dumps(
                    {
                        "precision": precision,
                        "threads": threads,
                        "batch": args.batch,
                        "seconds": round(took, 1),
                        "texts_per_s": round(len(texts) / took, 1),
                        "cosine_vs_fp32_min": round(float(agree.min()), 5),
                        "cosine_vs_fp32_p01": round(float(np.quantile(agree, 0.01)), 5),
                    }
                )
            )


def _model_in(base, precision):
    import copy

    import torch

    if precision.startswith("int8"):
        from search.embeddings import INT8_KEEP_FP32, embedder_int8

        return embedder_int8(base, keep_fp32=INT8_KEEP_FP32 if precision == "int8" else "")
    return copy.deepcopy(base).to({"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


QUERIES = [
    "A telephone with a keyboard and a display that stores numbers",
    "1. A method comprising receiving a signal, filtering the signal and storing the result.",
    "bicycle brake",
    "semiconductor wafer polishing slurry",
    "golf club head with weights",
    "An apparatus for cleaning teeth with a rotating brush head driven by a motor",
]


def _claim_queries(path: str, count: int) -> list[str]:
    """First claims with several elements (a ';'), from a JSON Lines file (plain or .gz)."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            claims = json.loads(line).get("claims") or []
            if claims and ";" in claims[0] and len(claims[0]) < 1500:
                out.append(claims[0])
            if len(out) >= count:
                break
    return out


def bench_feed(url: str, queries: list[str]) -> dict:
    """What one poll of a search's alert feed costs: the first (a cache miss, one search)
    and a second poll of the same feed (a cache hit)."""

    def get(q):
        t = time.perf_counter()
        feed = f"{url}/search/feed.atom?" + urllib.parse.urlencode({"q": q[:1500]})
        with urllib.request.urlopen(feed, timeout=60) as resp:  # noqa: S310 (localhost)
            resp.read()
        return (time.perf_counter() - t) * 1000

    miss = [get(q) for q in queries]
    hit = [get(q) for q in queries]
    row = {
        "feed_polls": len(queries),
        "miss_p50_ms": round(pct(miss, 0.5), 1),
        "miss_p95_ms": round(pct(miss, 0.95), 1),
        "hit_p50_ms": round(pct(hit, 0.5), 1),
        "hit_p95_ms": round(pct(hit, 0.95), 1),
    }
    print(json.dumps(row), flush=True)
    return row


def bench_api(args, *, extra: dict | None = None, queries: list[str] | None = None):
    queries = queries or QUERIES
    extra = extra or {}
    results = []
    for clients in [int(c) for c in args.clients.split(",")]:
        lat, errors, count = [], 0, 0
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds

        def worker(seed, deadline=deadline, lock=lock, lat=lat):
            nonlocal errors, count
            i = seed
            while time.monotonic() < deadline and count < args.max_requests:
                q = queries[i % len(queries)]
                i += 1
                url = f"{args.url}/api/search?" + urllib.parse.urlencode(
                    {"q": q, "origin": "all", "k": 10, **extra}
                )
                t = time.perf_counter()
                try:
                    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (localhost)
                        resp.read()
                        ok = resp.status == 200
                except Exception:
                    ok = False
                took = (time.perf_counter() - t) * 1000
                with lock:
                    count += 1
                    lat.append(took)
                    errors += not ok

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        row = {
            "params": "&".join(f"{k}={v}" for k, v in extra.items()) or "plain",
            "clients": clients,
            "requests": count,
            "errors": errors,
            "throughput_rps": round(count / wall, 1),
            "p50_ms": round(pct(lat, 0.5), 1),
            "p95_ms": round(pct(lat, 0.95), 1),
            "p99_ms": round(pct(lat, 0.99), 1),
            "mean_ms": round(statistics.fmean(lat), 1),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def bench_site_eval(args) -> None:
    """The #12 protocol through the site itself. Each query is a patent's first claim; the
    answer is that patent, imported with its title and abstract only (its own claims would
    find themselves), among distractors that keep their claims.

        bench/search.py site-eval --prepare var/siteeval.jsonl
        DATA_DIR=var/siteeval EMBEDDING_MODEL=DIR manage.py import_patents var/siteeval.jsonl
        DATA_DIR=var/siteeval EMBEDDING_MODEL=DIR manage.py search_index update
        (serve it: gunicorn, SEARCH_RATE_LIMIT=0)  then  bench/search.py site-eval --url URL
    """
    import gzip

    import django

    django.setup()
    from search.embedder_training import patent_split
    from search.evaluation import eval_cases_load

    def lines():
        with gzip.open(args.data, "rt", encoding="utf-8") as fh:
            yield from fh

    cases = eval_cases_load(lines(), split=args.split)
    targets = {c.source_id for c in cases}
    if args.prepare:
        written = distractors = 0
        with open(args.prepare, "w", encoding="utf-8") as out:
            for line in lines():
                record = json.loads(line)
                pid = str(record.get("id", "")).strip()
                if pid in targets:
                    record = {**record, "claims": []}
                elif distractors < args.distractor_count and patent_split(pid) != args.split:
                    distractors += 1
                else:
                    continue
                out.write(json.dumps(record) + "\n")
                written += 1
        print(f"{written} records ({len(targets)} targets, {distractors} distractors)")
        return
    ranks = []
    started = time.perf_counter()
    for case in cases:
        request = urllib.request.Request(
            f"{args.url}/api/search",
            data=json.dumps({"q": case.query, "origin": "reference", "k": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 (local)
            results = json.loads(resp.read())["results"]
        numbers = [(r.get("reference") or {}).get("number") for r in results]
        ranks.append(numbers.index(case.source_id) + 1 if case.source_id in numbers else None)
    n = len(ranks) or 1
    print(
        json.dumps(
            {
                "queries": len(ranks),
                "split": args.split,
                "recall@1": round(sum(r == 1 for r in ranks) / n, 4),
                "recall@10": round(sum(r is not None for r in ranks) / n, 4),
                "mrr@10": round(sum(1 / r for r in ranks if r) / n, 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("faiss")
    f.add_argument("--sizes", default="100000,1000000")
    f.add_argument("--queries", type=int, default=200)
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--hnsw-m", type=int, default=32)
    f.add_argument("--ef-construction", type=int, default=80)
    f.add_argument("--ef-search", default="128,256", help="comma list, one row each")
    f.add_argument("--real-index", help="a .faiss file with real embeddings")
    f.add_argument("--skip-random", action="store_true", help="only the real-like vectors")
    e = sub.add_parser("embed")
    e.add_argument("--repeat", type=int, default=100)
    i = sub.add_parser("index")
    i.add_argument("--data-dir", default="var/bench")
    i.add_argument("--patents", type=int, default=1000)
    c = sub.add_parser("encode")
    c.add_argument("--texts", type=int, default=1000)
    c.add_argument("--precisions", default="fp32,bf16")
    c.add_argument("--threads", default="1,2")
    c.add_argument("--batch", type=int, default=64)
    a = sub.add_parser("api")
    a.add_argument("--url", default="http://127.0.0.1:8000")
    a.add_argument("--clients", default="1,8,32")
    a.add_argument("--seconds", type=float, default=20)
    a.add_argument("--max-requests", type=int, default=100_000)
    w = sub.add_parser(
        "workbench",
        help="one client, pasted multi-element claims: plain, elements=1, combinations=1",
    )
    w.add_argument("--url", default="http://127.0.0.1:8000")
    w.add_argument("--claims", required=True, help="JSON Lines file whose first claims are queries")
    w.add_argument("--count", type=int, default=200)
    w.add_argument("--seconds", type=float, default=30)
    w.add_argument("--max-requests", type=int, default=100_000)
    s = sub.add_parser(
        "site-eval",
        help="recall through the running site: --prepare writes the corpus to import, then "
        "queries /api/search with each first claim of the split",
    )
    s.add_argument("--url", default="http://127.0.0.1:8000")
    s.add_argument("--data", default=str(ROOT.parent / "shared/data/patents.jsonl.gz"))
    s.add_argument("--split", default="test")
    s.add_argument("--distractor-count", type=int, default=10_000)
    s.add_argument("--prepare", help="write the JSON Lines to import here, and stop")
    args = parser.parse_args()
    if args.cmd == "site-eval":
        bench_site_eval(args)
        return
    if args.cmd == "workbench":
        host = urllib.parse.urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            parser.error("runs against this machine only (127.0.0.1 / localhost)")
        args.clients = "1"
        queries = _claim_queries(args.claims, args.count)
        print(f"{len(queries)} claims from {args.claims}", flush=True)
        for extra in ({}, {"elements": 1}, {"combinations": 1}):
            bench_api(args, extra=extra, queries=queries)
        bench_feed(args.url, queries[:50])
        return
    commands = {
        "faiss": bench_faiss,
        "embed": bench_embed,
        "index": bench_index,
        "encode": bench_encode,
        "api": bench_api,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
