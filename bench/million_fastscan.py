"""The million-patent site's IVF lists scanned two ways, side by side: the store's 8-bit
scalar codes (what `index_search` runs) and 4-bit fast-scan product codes over the same
coarse centroids, each re-ranked exactly from the same stored vectors. Recall@10 against
exact search and time per query, with and without the date filter; run by hand after
`bench/million.py vectors`:

    .venv/bin/python bench/million_fastscan.py [--nprobe 96,128,192] [--depth 800,1600]

Recall is printed for the tuning half (the first 150 hidden patents) and the report half
(the next 150) apart: settings are chosen on the first and read on the second.

Fast-scan codes (``IndexIVFPQFastScan``, M sub-vectors of 4 bits, compared 32 vectors at a
time in SIMD registers) are coarser than 8-bit scalar codes but several times cheaper to
scan, so more lists can be scanned and more candidates re-ranked in the same time.
"""

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", type=Path, default=ROOT / "var" / "million" / "site")
    parser.add_argument("--queries", type=int, default=150, help="per half")
    parser.add_argument("--nprobe", default="96,128,192", help="fast-scan lists scanned")
    parser.add_argument("--sq-nprobe", default="96,128", help="the store's lists scanned")
    parser.add_argument("--depth", default="800,1600", help="fast-scan candidates re-ranked")
    parser.add_argument("--m", type=int, default=192, help="4-bit sub-vectors (even)")
    parser.add_argument("--train", type=int, default=200_000)
    args = parser.parse_args()
    import bench.million as million

    million._django(args.site)
    import faiss
    import numpy as np
    from django.conf import settings

    from search.embeddings import embed_queries
    from search.params import SearchFilters
    from search.store import index_for_search
    from search.vector_dates import vector_dates_allowed

    print("cpu:", million.cpu_line(), "simd:", faiss.get_compile_options(), flush=True)
    faiss.omp_set_num_threads(1)
    # Both halves in one run, reported apart: settings are chosen on the tuning half (the
    # first hidden patents) and read on the report half (the next).
    million.QUERY_OFFSET = 0
    asked = million._queries(args.site, args.queries)
    million.QUERY_OFFSET = args.queries
    asked += million._queries(args.site, args.queries)
    halves = {"tuning": slice(0, args.queries), "report": slice(args.queries, 2 * args.queries)}
    queries = np.vstack([embed_queries([claim]) for _, claim in asked]).astype("float32")
    loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    index = loaded.index
    refine = faiss.downcast_index(index.index)
    sq = faiss.downcast_index(refine.base_index)
    flat = faiss.downcast_index(refine.refine_index)
    n, d = int(flat.ntotal), int(flat.d)
    matrix = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    id_of = faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size()).copy()
    last = int(loaded.manifest["last_vector_id"])
    after = dt.date.fromisoformat(million.DATE_FILTER_AFTER)
    bitmap = vector_dates_allowed(SearchFilters(origin="all", after=after), last_id=last)
    allowed_bits = np.unpackbits(bitmap, bitorder="little").astype(bool)
    keep_rows = np.zeros(n, dtype=bool)
    inside = id_of < len(allowed_bits)
    keep_rows[inside] = allowed_bits[id_of[inside]]

    def exact(keep):
        best = np.full((len(queries), 10), -np.inf, dtype="float32")
        best_rows = np.full((len(queries), 10), -1, dtype="int64")
        for start in range(0, n, 500_000):
            part = np.asarray(matrix[start : start + 500_000])
            scores = queries @ part.T
            if keep is not None:
                scores[:, ~keep[start : start + 500_000]] = -np.inf
            rows = np.arange(start, start + len(part))
            both = np.concatenate([best, scores], axis=1)
            both_rows = np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1)
            top = np.argpartition(-both, 10, axis=1)[:, :10]
            best = np.take_along_axis(both, top, axis=1)
            best_rows = np.take_along_axis(both_rows, top, axis=1)
        return best_rows

    started = time.perf_counter()
    coarse = faiss.IndexFlatIP(d)
    centroids = faiss.rev_swig_ptr(
        faiss.downcast_index(sq.quantizer).get_xb(), sq.nlist * d
    ).reshape(sq.nlist, d)
    coarse.add(np.ascontiguousarray(centroids))
    fs = faiss.IndexIVFPQFastScan(coarse, d, sq.nlist, args.m, 4, faiss.METRIC_INNER_PRODUCT)
    fs.own_fields = True
    coarse.this.disown()
    step = max(1, n // args.train)
    fs.train(np.ascontiguousarray(matrix[::step][: args.train]))
    trained = time.perf_counter() - started
    faiss.omp_set_num_threads(2)
    for start in range(0, n, 500_000):
        fs.add(np.ascontiguousarray(matrix[start : start + 500_000]))
    faiss.omp_set_num_threads(1)
    built = time.perf_counter() - started
    print(
        json.dumps(
            {
                "fastscan": f"IVF{sq.nlist},PQ{args.m}x4fs",
                "train_s": round(trained, 1),
                "build_s": round(built, 1),
                "code_bytes": args.m // 2,
            }
        ),
        flush=True,
    )

    def rerank(query, rows, k=10):
        rows = rows[rows >= 0]
        exact_scores = matrix[rows] @ query
        return rows[np.argsort(-exact_scores, kind="stable")[:k]]

    out = {"vectors": n, "queries_per_half": args.queries}
    for label, keep in (("no filter", None), ("after", keep_rows)):
        truth = exact(keep)
        selector = (
            faiss.IDSelectorBitmap(np.packbits(keep, bitorder="little"))
            if keep is not None
            else None
        )
        runs = [("sq8 (the store)", int(p), 800) for p in args.sq_nprobe.split(",")]
        runs += [
            ("fastscan", int(p), int(k))
            for p in args.nprobe.split(",")
            for k in args.depth.split(",")
        ]
        for kind, nprobe, depth in runs:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            if selector is not None:
                params.sel = selector
            target = sq if kind.startswith("sq8") else fs
            found = []
            started = time.perf_counter()
            for q in queries:
                _, rows = target.search(q[None, :], depth, params=params)
                found.append(rerank(q, rows[0]))
            per_query = (time.perf_counter() - started) / len(queries)
            hits = np.array([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
            key = f"{label}: {kind}, nprobe {nprobe}, depth {depth}"
            out[key] = {
                **{
                    f"recall_{name}": round(float(hits[part].mean()), 4)
                    for name, part in halves.items()
                },
                "ms_per_query": round(per_query * 1e3, 1),
            }
            print(json.dumps({key: out[key]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
