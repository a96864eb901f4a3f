"""Dense recall@10 of the million-patent site's index against exact search, with and
without a date filter inside the search; run by hand after `bench/million.py vectors`:

    .venv/bin/python bench/million_recall.py [--site var/million/site] [--queries 150]

The queries are the hidden patents' first claims (the report half, as `million.py api`),
embedded with the site's embedder. Exact: every stored full-precision vector scored (the
filter's bitmap applied to the same ids); the index: `LoadedIndex.search` as the site calls
it (SEARCH_IVF_NPROBE lists; ``--depth`` candidates, 800 as `dense_search` asks for a
first page, re-ranked exactly, of which the best 10 are compared).
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
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--offset", type=int, default=150, help="0: the tuning half")
    parser.add_argument("--nprobe", default="", help="lists scanned, e.g. 64,96,128")
    parser.add_argument(
        "--depth", type=int, default=800, help="candidates asked for (the site asks 800)"
    )
    args = parser.parse_args()
    import bench.million as million

    million.QUERY_OFFSET = args.offset

    million._django(args.site)
    import numpy as np
    from django.conf import settings

    from search.embeddings import embed_queries
    from search.params import SearchFilters
    from search.store import index_for_search, stored_vectors
    from search.vector_dates import vector_dates_allowed

    print("cpu:", million.cpu_line(), flush=True)
    asked = million._queries(args.site, args.queries)
    queries = np.vstack([embed_queries([claim]) for _, claim in asked])
    loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    last = int(loaded.manifest["last_vector_id"])
    after = dt.date.fromisoformat(million.DATE_FILTER_AFTER)
    bitmap = vector_dates_allowed(SearchFilters(origin="all", after=after), last_id=last)
    allowed_bits = np.unpackbits(bitmap, bitorder="little").astype(bool)

    def exact(keep):
        best = np.full((len(queries), 10), -np.inf, dtype="float32")
        best_ids = np.full((len(queries), 10), -1, dtype="int64")
        for segment in loaded.segments:
            ids, matrix = stored_vectors(segment)
            for start in range(0, len(ids), 500_000):
                part = np.asarray(matrix[start : start + 500_000])
                scores = queries @ part.T
                if keep is not None:
                    scores[:, ~keep[ids[start : start + 500_000]]] = -np.inf
                both = np.concatenate([best, scores], axis=1)
                both_ids = np.concatenate(
                    [best_ids, np.broadcast_to(ids[start : start + 500_000], scores.shape)], axis=1
                )
                top = np.argsort(-both, axis=1)[:, :10]
                best = np.take_along_axis(both, top, axis=1)
                best_ids = np.take_along_axis(both_ids, top, axis=1)
        return best_ids

    out = {"vectors": loaded.ntotal, "queries": len(asked), "offset": args.offset}
    probes = [int(n) for n in args.nprobe.split(",")] if args.nprobe else [None]
    for label, keep, allowed in (("no filter", None, None), ("after", allowed_bits, bitmap)):
        truth = exact(keep)
        for nprobe in probes:
            if nprobe:
                settings.SEARCH_IVF_NPROBE = nprobe
            started = time.perf_counter()
            found = np.vstack(
                [loaded.search(q[None, :], args.depth, allowed=allowed)[1][:, :10] for q in queries]
            )
            per_query = (time.perf_counter() - started) / len(queries)
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
            key = f"{label}, nprobe {settings.SEARCH_IVF_NPROBE}"
            out[key] = {
                "recall_at_10": round(float(recall), 4),
                "ms_per_query": round(per_query * 1e3, 1),
            }
            print(json.dumps({key: out[key]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
