"""Seeds a scratch site for the browser tests: 25 inventions published through the real
service (texts from the fixture patents, so they read like patents), then the index."""

import json
import os
import sys
from pathlib import Path

import django


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    django.setup()
    from patents.records import claims_normalise
    from patents.services import patent_publish
    from search.services import search_index_rebuild

    lines = (Path(__file__).parent / "fixtures" / "patents-40.jsonl").read_text().splitlines()
    for n, line in enumerate(lines[:25]):
        record = json.loads(line)
        patent_publish(
            title=record["title"],
            abstract=record["abstract"],
            claims=claims_normalise(record["claims"]),
            raw_text="",
            provenance={"generator_model": "e2e/seed", "mode": "top-down", "seed": n},
        )
    search_index_rebuild()
    print("seeded", file=sys.stderr)


if __name__ == "__main__":
    main()
