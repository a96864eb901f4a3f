"""How much of the exact top k an HNSW index over the site's own vectors returns, for real
queries (#12: the reason SEARCH_HNSW_THRESHOLD is 300,000).

Reads the index of ``DATA_DIR`` (any kind: the vectors are reconstructed), builds HNSW
indexes over the same vectors, and compares their top k with an exact search, for the first
claims of a split of the shared patents embedded as the site embeds queries:

    DATA_DIR=var/siteeval EMBEDDING_MODEL=var/models/embedder \\
        .venv/bin/python bench/hnsw_recall.py --ef-construction 80,200 --ef-search 384,1024
"""

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/patents.jsonl.gz"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--ef-construction", default="80")
    parser.add_argument("--ef-search", default="384")
    args = parser.parse_args()
    import django

    django.setup()
    import faiss
    import numpy as np
    from django.conf import settings

    from search.embeddings import embed_queries
    from search.evaluation import eval_cases_load
    from search.store import index_dir, manifest_read

    with gzip.open(args.data, "rt", encoding="utf-8") as fh:
        cases = eval_cases_load(fh, split=args.split)
    queries = embed_queries([c.query for c in cases], name=settings.EMBEDDING_MODEL)
    stored = faiss.read_index(str(index_dir() / manifest_read()["file"]))
    vectors = faiss.downcast_index(stored.index).reconstruct_n(0, stored.ntotal)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    faiss.omp_set_num_threads(1)
    _, truth = exact.search(queries, args.k)
    print(f"{len(cases)} queries ({args.split}), {stored.ntotal} vectors, top {args.k}")
    for ef_construction in (int(x) for x in args.ef_construction.split(",")):
        hnsw = faiss.IndexHNSWFlat(vectors.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = ef_construction
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        started = time.perf_counter()
        hnsw.add(vectors)
        built = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        for ef_search in (int(x) for x in args.ef_search.split(",")):
            hnsw.hnsw.efSearch = ef_search
            started = time.perf_counter()
            _, found = hnsw.search(queries, args.k)
            ms = 1000 * (time.perf_counter() - started) / len(queries)
            recall = float(
                np.mean([len(set(found[i]) & set(truth[i])) / args.k for i in range(len(cases))])
            )
            print(
                json.dumps(
                    {
                        "m": args.m,
                        "ef_construction": ef_construction,
                        "build_s": round(built, 1),
                        "ef_search": ef_search,
                        "recall_of_exact_top_k": round(recall, 4),
                        "ms_per_query_batched": round(ms, 2),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
