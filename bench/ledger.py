"""Cost of `ledger verify` on a synthetic ledger (by hand, not in CI).

    .venv/bin/python bench/ledger.py --entries 100000 [--data-dir var/bench-ledger]

Builds N generated inventions (two claims each) and their publication entries in a scratch
SQLite database (bulk inserts, the same hashing as the site), then times `ledger_verify`,
the standalone verifier on a dump of it, and prints entries per second, the dump's time and
its files' sizes, and the verifier's time and peak memory.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--data-dir", default="var/bench-ledger")
    args = parser.parse_args()
    data = Path(args.data_dir).resolve()
    shutil.rmtree(data, ignore_errors=True)
    os.environ.update(
        DATA_DIR=str(data), DATABASE_URL="", DJANGO_SETTINGS_MODULE="allthepatents.settings"
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from patents.dumps import dump_export
    from patents.ledger import GENESIS_HASH, ledger_days_rebuild, ledger_entry_hash, ledger_verify
    from patents.models import Claim, LedgerEntry, Patent
    from patents.services import patent_tallies_rebuild
    from patents.text import content_hash

    started = time.perf_counter()
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    prev = GENESIS_HASH
    batch = 5000
    for start in range(0, args.entries, batch):
        patents, claims, entries = [], [], []
        for i in range(start, min(start + batch, args.entries)):
            cl = [
                {"number": 1, "text": f"A widget {i} comprising a motor.", "depends_on": None},
                {
                    "number": 2,
                    "text": "The widget of claim 1, wherein the motor hums.",
                    "depends_on": 1,
                },
            ]
            title, abstract = f"Widget {i}", f"A widget numbered {i} with a motor."
            when = base + dt.timedelta(seconds=i)
            patents.append(
                Patent(
                    public_id=f"b{i:09d}",
                    origin="generated",
                    title=title,
                    abstract=abstract,
                    content_hash=content_hash(title=title, abstract=abstract, claims=cl),
                    published_at=when,
                )
            )
        Patent.objects.bulk_create(patents)
        ids = dict(
            Patent.objects.filter(public_id__in=[p.public_id for p in patents]).values_list(
                "public_id", "pk"
            )
        )
        for p in patents:
            pk = ids[p.public_id]
            claims += [
                Claim(
                    patent_id=pk,
                    number=1,
                    text=f"A widget {p.public_id[1:].lstrip('0') or 0} comprising a motor.",
                ),
                Claim(
                    patent_id=pk,
                    number=2,
                    text="The widget of claim 1, wherein the motor hums.",
                    depends_on=1,
                ),
            ]
            entry_hash = ledger_entry_hash(
                prev_hash=prev,
                public_id=p.public_id,
                content_hash=p.content_hash,
                kind="publish",
                recorded_at=p.published_at,
            )
            entries.append(
                LedgerEntry(
                    kind="publish",
                    patent_id=pk,
                    public_id=p.public_id,
                    content_hash=p.content_hash,
                    recorded_at=p.published_at,
                    prev_hash=prev,
                    entry_hash=entry_hash,
                )
            )
            prev = entry_hash
        Claim.objects.bulk_create(claims)
        LedgerEntry.objects.bulk_create(entries)
    ledger_days_rebuild()  # what the appends keep, for entries written in bulk
    patent_tallies_rebuild()  # what the writes keep, likewise
    built = time.perf_counter() - started
    started = time.perf_counter()
    checked, problem = ledger_verify()
    took = time.perf_counter() - started
    result = {
        "entries": checked,
        "problem": str(problem) if problem else None,
        "build_seconds": round(built, 1),
        "verify_seconds": round(took, 1),
        "verify_seconds_per_100k": round(took * 100_000 / max(checked, 1), 1),
        "entries_per_second": round(checked / took),
    }
    out = data / "dumps"
    started = time.perf_counter()
    manifest = dump_export(out_dir=out)
    result["dump_seconds"] = round(time.perf_counter() - started, 1)
    result["dump_bytes"] = (out / manifest["file"]).stat().st_size
    result["dump_ledger_bytes"] = (out / manifest["ledger_file"]).stat().st_size
    started = time.perf_counter()
    # The verifier's own peak memory, from /usr/bin/time: a child forked from this process
    # (grown to hundreds of MB) would count this process's pages in its own peak.
    timer = ["/usr/bin/time", "-f", "peak-kb %M"] if Path("/usr/bin/time").exists() else []
    run = subprocess.run(
        [*timer, sys.executable, "-I", "-S", "verify_dump.py", f"{manifest['file']}.manifest.json"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    result["standalone_verify_seconds"] = round(time.perf_counter() - started, 1)
    peak = [line for line in run.stderr.splitlines() if line.startswith("peak-kb ")]
    result["standalone_verify_peak_mb"] = round(int(peak[-1].split()[1]) / 1024) if peak else None
    result["standalone_ok"] = run.returncode == 0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
