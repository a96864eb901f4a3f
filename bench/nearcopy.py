"""Measurements behind the near-copy thresholds, and the check's cost (by hand).

    .venv/bin/python bench/nearcopy.py --patents 2000

Prints the Jaccard (5-word shingles of abstract + claims) between distinct real patents
(the worst pair among LSH candidates), the Jaccard of lightly edited copies, and the time of
near_copy_find against everything in the database of DATA_DIR.
"""

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--patents", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument(
        "--embedding",
        action="store_true",
        help="also measure MiniLM cosines (needs DATA_DIR's index built)",
    )
    args = parser.parse_args()
    import django

    django.setup()
    from patents.models import MinHashBand, Patent
    from patents.nearcopy import jaccard, near_copy_find, shingles

    records = []
    with gzip.open(ROOT.parent / "shared" / "data" / "patents.jsonl.gz", "rt") as fh:
        for line in fh:
            r = json.loads(line)
            if r["claims"] and r["abstract"]:
                records.append(r)
            if len(records) >= args.patents:
                break
    sets = [shingles(r["abstract"] + " " + " ".join(r["claims"])) for r in records]
    rng = random.Random(0)
    pairs = [
        jaccard(sets[rng.randrange(len(sets))], sets[rng.randrange(len(sets))])
        for _ in range(20000)
    ]
    pairs.sort()
    print(
        json.dumps(
            {
                "random_pairs": len(pairs),
                "p99": pairs[int(0.99 * len(pairs))],
                "p999": pairs[int(0.999 * len(pairs))],
                "max": pairs[-1],
            }
        )
    )
    for every in (5, 10, 20):
        scores = []
        for r, s in zip(records[:300], sets[:300], strict=False):
            words = (r["abstract"] + " " + " ".join(r["claims"])).split()
            for i in range(0, len(words), every):
                words[i] = rng.choice(["said", "the", "unit", "member"])
            scores.append(jaccard(s, shingles(" ".join(words))))
        print(
            json.dumps(
                {
                    "edit_every_n_words": every,
                    "min": round(min(scores), 3),
                    "median": round(statistics.median(scores), 3),
                }
            )
        )
    if args.embedding:
        embedding_measure(records, rng)
    n_ref = Patent.objects.count()
    if n_ref:
        timings = []
        for r in records[: args.checks]:
            # Realistic input: text not in the database (a 10%-edited copy).
            words = (r["abstract"] + " " + " ".join(r["claims"])).split()
            for i in range(0, len(words), 10):
                words[i] = "member"
            t = time.perf_counter()
            near_copy_find(abstract=" ".join(words), claims=[])
            timings.append((time.perf_counter() - t) * 1000)
        timings.sort()
        print(
            json.dumps(
                {
                    "database_patents": n_ref,
                    "bands": MinHashBand.objects.count(),
                    "check_p50_ms": round(timings[len(timings) // 2], 1),
                    "check_p95_ms": round(timings[int(0.95 * len(timings))], 1),
                }
            )
        )


def embedding_measure(records, rng, samples=1000):
    """Nearest-neighbour cosine between distinct indexed patents' title+abstract vectors,
    and the cosine of reworded copies (every 5th word replaced) to their originals."""
    import numpy as np
    from django.conf import settings

    from search.embeddings import embed
    from search.models import IndexedVector
    from search.store import index_for_search

    loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    docs = list(IndexedVector.objects.filter(claim_number=None).values_list("pk", "patent_id"))
    doc_ids = {pk for pk, _ in docs}
    nearest = []
    for pk, _ in rng.sample(docs, min(samples, len(docs))):
        vector = loaded.index.reconstruct(pk)
        scores, ids = loaded.index.search(np.asarray([vector]), 60)
        others = [
            sc
            for i, sc in zip(ids[0], scores[0], strict=True)
            if int(i) in doc_ids and int(i) != pk
        ]
        if others:
            nearest.append(float(others[0]))
    nearest.sort()
    print(
        json.dumps(
            {
                "nn_cosine_distinct_patents": len(nearest),
                "p50": round(nearest[len(nearest) // 2], 3),
                "p99": round(nearest[int(0.99 * len(nearest))], 3),
                "p999": round(nearest[int(0.999 * len(nearest))], 3),
                "max": round(nearest[-1], 3),
            }
        )
    )
    for every in (3, 5):
        originals, edited = [], []
        for r in records[:300]:
            text = f"{r['title']}. {r['abstract']}"
            words = text.split()
            for i in range(0, len(words), every):
                words[i] = rng.choice(["said", "the", "unit", "member"])
            originals.append(text)
            edited.append(" ".join(words))
        a, b = embed(originals), embed(edited)
        cos = sorted(float(x) for x in (a * b).sum(axis=1))
        print(
            json.dumps(
                {
                    "reworded_every_n_words": every,
                    "min": round(cos[0], 3),
                    "p05": round(cos[int(0.05 * len(cos))], 3),
                    "median": round(cos[len(cos) // 2], 3),
                }
            )
        )


if __name__ == "__main__":
    main()
