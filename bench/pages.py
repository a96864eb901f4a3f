"""The public pages of a site holding millions of rows, timed; run by hand (not in CI).

    createdb -h 127.0.0.1 -U postgres pages
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/pages .venv/bin/python bench/pages.py fill
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/pages .venv/bin/python bench/pages.py measure

Without ``DATABASE_URL`` both work on ``--site``'s SQLite file (a DATA_DIR).

``fill`` writes ``--generated`` inventions published over two years (each with two claims,
a publish entry in the ledger and its sample), ``--rejected`` rejected samples per published
one (the gate passes about one sample in four), spread over ``--jobs`` jobs (every other
one's samples from ``--contributors`` volunteers), and ``--references`` reference patents
dated from 1976 on as the importer dates them, each with one to six CPC codes; then each
job's counters, as its workers keep them, and 90 days of examiners' searches in 40 CPC
areas (what /coverage/ lists). The rows are bulk inserted, not published one by one through
``patent_publish``: a million publications through the ledger's chain take hours, and what
the pages cost depends on how many rows there are and how they are indexed, not on their
text or on the chain's hashes being right (``ledger verify`` would reject this site's
chain; nothing here asks it).

``measure`` asks every public page through Django's test client (the site's middleware,
views and templates, without a socket) once with nothing kept (what the first visitor in
PUBLIC_FIGURES_SECONDS waits for), then ``--repeat`` times more, and prints those times:
what an examiner, a feed reader or a crawler waits for; then the admin's lists, as staff.
"""

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REASONS = [
    ["repetition"],
    ["claims: numbering"],
    ["truncated"],
    ["near-copy of a reference patent"],
    ["abstract: too short"],
    ["claims: dependency on a later claim"],
]
MODELS = ["alea-institute/kl3m-002-170m-patent", "alea-institute/kl3m-002-170m"]


def _django(site: Path):
    os.environ.setdefault("DATA_DIR", str(site))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # No broker: nothing here enqueues, and the rate limit would refuse a bench's repeats.
    os.environ.setdefault("REDIS_URL", "")
    os.environ.setdefault("SEARCH_RATE_LIMIT", "0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    site.mkdir(parents=True, exist_ok=True)
    import django

    django.setup()


# CPC subclasses: a section letter, a class of two digits, a subclass letter.
AREAS = [f"{s}{n:02d}{c}" for s in "ABCDEFGH" for n in range(1, 99, 4) for c in "BFKLMN"]


def cpu_line() -> str:
    from allthepatents.cpu import cpu_flags, cpu_model_name

    kinds = sorted({"avx2", "avx512f", "avx512_bf16", "amx_bf16"} & cpu_flags())
    return f"{cpu_model_name()} ({', '.join(kinds)}; {os.cpu_count()} cores)"


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def fill(
    *, generated: int, rejected: int, references: int, jobs: int, contributors_count: int, seed: int
) -> dict:
    from django.core.management import call_command
    from django.db import connection, transaction

    from generation.models import Contributor, GenerationJob, Generator, Sample
    from patents.ledger import ledger_days_rebuild
    from patents.models import Claim, LedgerEntry, Patent
    from patents.services import patent_tallies_rebuild
    from patents.text import cpc_codes_text
    from search.models import SearchTally

    call_command("migrate", "--noinput", verbosity=0)
    rng = random.Random(seed)
    started = time.time()
    end = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    span = dt.timedelta(days=730).total_seconds()
    generator, _ = Generator.objects.get_or_create(
        name="kl3m-002-170m-patent",
        defaults={"model_id": MODELS[0], "backend": "transformers", "prompt_format": "kl3m"},
    )
    job_rows = GenerationJob.objects.bulk_create(
        GenerationJob(
            generator=generator,
            model_override="" if n % 2 == 0 else MODELS[1],
            mode=["top-down", "bottom-up", "mixed"][n % 3],
            count=max(1, generated // jobs),
            status="done",
            started_at=end - dt.timedelta(seconds=span * (1 - n / jobs)),
            finished_at=end - dt.timedelta(seconds=span * (1 - n / jobs)) + dt.timedelta(hours=1),
            worker_seconds=3.0 * (1 + rejected) * (generated // jobs),
        )
        for n in range(jobs)
    )
    contributors = Contributor.objects.bulk_create(
        Contributor(
            name=f"volunteer-{n}",
            name_skeleton=f"volunteer-{n}",
            token_hash=_hex(rng),
            token_prefix=f"v{n}",
        )
        for n in range(contributors_count)
    )
    batch = 5000

    def write_generated(first: int, count: int):
        # Published in time order, as a site publishes them: ids and times rise together.
        when = [
            end - dt.timedelta(seconds=span * (1 - (first + i) / generated)) for i in range(count)
        ]
        patents = Patent.objects.bulk_create(
            Patent(
                public_id=f"g{first + i:09d}",
                origin=Patent.Origin.GENERATED,
                title=f"Self-cleaning gutter guard, variant {first + i}",
                abstract="A gutter guard whose mesh is shaken clean by the water it sheds.",
                content_hash=_hex(rng),
                published_at=when[i],
                generator_model=MODELS[(first + i) % 2],
                mode=["top-down", "bottom-up"][(first + i) % 2],
                job=job_rows[(first + i) * jobs // generated],
            )
            for i in range(count)
        )
        Claim.objects.bulk_create(
            claim
            for p in patents
            for claim in (
                Claim(patent=p, number=1, text="A gutter guard comprising a mesh and a weir."),
                Claim(
                    patent=p,
                    number=2,
                    text="The guard of claim 1, wherein the mesh is steel.",
                    depends_on=1,
                ),
            )
        )
        LedgerEntry.objects.bulk_create(
            LedgerEntry(
                kind=LedgerEntry.Kind.PUBLISH,
                patent=p,
                public_id=p.public_id,
                content_hash=p.content_hash,
                recorded_at=p.published_at,
                prev_hash=_hex(rng),
                entry_hash=_hex(rng),
            )
            for p in patents
        )
        samples = []
        for i, p in enumerate(patents):
            job = job_rows[(first + i) * jobs // generated]
            base = (first + i) * (1 + rejected)
            # Every other job's samples came from contributors' machines.
            by = contributors[base % len(contributors)] if contributors and job.pk % 2 else None
            samples.append(
                Sample(
                    job=job,
                    index=base,
                    mode=p.mode,
                    seed=base,
                    prompt="",
                    raw_text="",
                    tokens=400,
                    contributor=by,
                    finished=True,
                    verdict=Sample.Verdict.PUBLISHED,
                    patent=p,
                )
            )
            for r in range(rejected):
                samples.append(
                    Sample(
                        job=job,
                        index=base + 1 + r,
                        mode=p.mode,
                        seed=base + 1 + r,
                        prompt="",
                        raw_text="",
                        tokens=400,
                        contributor=by,
                        verdict=Sample.Verdict.REJECTED,
                        reasons=rng.choice(REASONS),
                    )
                )
        Sample.objects.bulk_create(samples)

    def write_references(first: int, count: int):
        # As the importer writes them: published_at is the patent's own date (midnight
        # UTC), the import's time where it has none (one in fifty here).
        days = [
            None
            if (first + i) % 50 == 0
            else dt.date(1976, 1, 6) + dt.timedelta(days=rng.randrange(18_500))
            for i in range(count)
        ]
        Patent.objects.bulk_create(
            Patent(
                public_id=f"r{first + i:09d}",
                origin=Patent.Origin.REFERENCE,
                title=f"Gutter guard {first + i}",
                abstract="A real patent's abstract stands here.",
                content_hash=_hex(rng),
                published_at=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) if day else end,
                source_id=f"US{first + i:08d}",
                source_date=day,
                # One to six codes in about 600 subclasses, as a grant has them.
                cpc_codes=cpc_codes_text(
                    f"{rng.choice(AREAS)}{rng.randint(1, 99)}/{rng.randint(0, 99):02d}"
                    for _ in range(rng.randint(1, 6))
                ),
            )
            for i, day in enumerate(days)
        )

    for name, total, write in (
        ("generated", generated, write_generated),
        ("references", references, write_references),
    ):
        for first in range(0, total, batch):
            with transaction.atomic():
                write(first, min(batch, total - first))
            done = min(first + batch, total)
            print(f"  {name}: {done:,} / {total:,} ({time.time() - started:.0f} s)", flush=True)
    counters_refresh(job_rows)
    # Examiners' searches over the last 90 days in 40 areas (what /coverage/ lists).
    today = dt.date.today()
    SearchTally.objects.bulk_create(
        SearchTally(day=today - dt.timedelta(days=d), cpc=area, searches=1 + rng.randrange(20))
        for area in AREAS[:: len(AREAS) // 40][:40]
        for d in range(0, 90, 3)
    )
    ledger_days_rebuild()  # the days the appends keep, for entries written in bulk
    patent_tallies_rebuild()  # the counts the writes keep, likewise
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {
        "seconds": round(time.time() - started, 1),
        "patents": Patent.objects.count(),
        "samples": Sample.objects.count(),
        "ledger_entries": LedgerEntry.objects.count(),
        "database": connection.vendor,
    }


def counters_refresh(jobs) -> None:
    """The jobs' counters from their samples, as a worker keeps them after each batch."""
    from generation.batches import job_counters_refresh

    started = time.time()
    for n, job in enumerate(jobs, 1):
        job_counters_refresh(job)
        if n % 200 == 0 or n == len(jobs):
            print(
                f"  job counters: {n:,} / {len(jobs):,} ({time.time() - started:.0f} s)", flush=True
            )


def pages() -> list[tuple[str, str]]:
    from patents.models import Patent

    generated = Patent.objects.filter(origin=Patent.Origin.GENERATED)
    newest = generated.order_by("-published_at", "-id").values_list("public_id", flat=True)[:1]
    one = newest[0] if newest else "none"
    day = generated.order_by("published_at").values_list("published_at", flat=True)[:1]
    on = day[0].date().isoformat() if day else "2026-01-01"
    from patents.views import PER_PAGE

    last_page = max(1, -(-generated.count() // PER_PAGE))
    from patents.selectors import ledger_id_span

    first, last = ledger_id_span()
    return [
        ("home", "/"),
        ("browse: inventions, page 1", "/patents/"),
        ("browse: inventions, halfway", f"/patents/?page={last_page // 2}"),
        ("browse: inventions, three quarters", f"/patents/?page={last_page * 3 // 4}"),
        ("browse: inventions, the oldest page", f"/patents/?page={last_page}"),
        ("browse: inventions of one day", f"/patents/?date={on}"),
        ("browse: one model's inventions", f"/patents/?generator={MODELS[1]}"),
        ("browse: references, page 1", "/patents/?origin=reference"),
        ("a random invention", "/patents/random/"),
        ("an invention", f"/p/{one}/"),
        ("an invention as JSON", f"/p/{one}.json"),
        ("ledger", "/ledger/"),
        ("ledger heads (JSON)", "/ledger/heads.json"),
        ("ledger API: 1,000 entries from the genesis", "/api/ledger"),
        ("ledger API: 1,000 entries halfway", f"/api/ledger?after={(first + last) // 2}"),
        ("ledger API: the newest 100", f"/api/ledger?after={max(last - 100, 0)}"),
        ("feed", "/feed.atom"),
        ("sitemap", "/sitemap.xml"),
        ("statistics", "/stats/"),
        ("downloads", "/downloads/"),
        ("contributors", "/contributors/"),
        ("health", "/healthz"),
    ]


def staff_pages() -> list[tuple[str, str]]:
    return [
        ("admin: patents", "/admin/patents/patent/"),
        ("admin: one model's patents", f"/admin/patents/patent/?generator_model={MODELS[1]}"),
        ("admin: samples", "/admin/generation/sample/"),
        ("admin: rejected samples", "/admin/generation/sample/?verdict=rejected"),
        ("admin: ledger", "/admin/patents/ledgerentry/"),
        ("admin: jobs", "/admin/generation/generationjob/"),
        ("coverage (40 areas)", "/coverage/"),
    ]


def measure(*, repeat: int) -> dict:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from allthepatents.kept import kept_clear
    from patents.models import Patent

    call_command("collectstatic", "--noinput", verbosity=0)  # as the site's start does
    client = Client()
    staff = Client()
    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    staff.force_login(admin)
    out = {
        "database": connection.vendor,
        "patents": Patent.objects.count(),
        "pages": {},
    }
    asked = [(name, url, client) for name, url in pages()]
    asked += [(name, url, staff) for name, url in staff_pages()]
    for name, url, client in asked:
        seconds, statuses = [], set()
        kept_clear()  # the first request computes what the page keeps (allthepatents/kept.py)
        for _ in range(1 + repeat):
            started = time.perf_counter()
            response = client.get(url)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
            seconds.append(time.perf_counter() - started)
            statuses.add(response.status_code)
        out["pages"][name] = {
            "url": url,
            "status": sorted(statuses),
            "first_ms": round(1000 * seconds[0], 1),
            "then_median_ms": round(1000 * statistics.median(seconds[1:]), 1),
            "then_slowest_ms": round(1000 * max(seconds[1:]), 1),
        }
        print(f"  {name:34} {out['pages'][name]}", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["fill", "measure"])
    parser.add_argument("--site", type=Path, default=ROOT / "var" / "pages" / "site")
    parser.add_argument("--generated", type=int, default=1_000_000)
    parser.add_argument("--rejected", type=int, default=3, help="rejected samples per invention")
    parser.add_argument("--references", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--contributors", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    _django(args.site)
    print("cpu:", cpu_line(), flush=True)
    if args.step == "fill":
        result = fill(
            generated=args.generated,
            rejected=args.rejected,
            references=args.references,
            jobs=args.jobs,
            contributors_count=args.contributors,
            seed=args.seed,
        )
    else:
        result = measure(repeat=args.repeat)
    print(json.dumps(result, indent=2, default=str), flush=True)


if __name__ == "__main__":
    main()
