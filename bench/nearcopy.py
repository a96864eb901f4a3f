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
    n_ref = Patent.objects.count()
    if n_ref:
        timings = []
        for r in records[: args.checks]:
            t = time.perf_counter()
            near_copy_find(abstract=r["abstract"], claims=r["claims"])
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


if __name__ == "__main__":
    main()
