"""Reads for generation: the figures behind /stats/."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Case, Count, F, Sum, Value, When
from django.db.models.functions import TruncDate

from generation.models import GenerationJob, Sample


@dataclass(frozen=True)
class JobModel:
    """The model a job runs, as everyone who deals with it names it."""

    name: str  # what provenance records and a work unit names: the override, else the hub id
    source: str  # what a worker or checker loads: the override, else the local copy or hub id
    revision: str


def job_model(*, job: GenerationJob) -> JobModel:
    """The one answer to "which model does this job run": site workers, contributors' work
    units, the proof's checker and provenance all read it here, so that a job with a model
    override proves and publishes under the model that really generated it."""
    generator = job.generator
    if job.model_override:
        return JobModel(job.model_override, job.model_override, generator.revision)
    return JobModel(generator.model_id, generator.source, generator.revision)


def model_public_name(name: str) -> str:
    """How provenance and the public pages name a model: a hub id as it is; a local folder
    by its path inside the project (``models/demo-generator``), or else by its own name.
    Never the server's absolute path: it names the machine's users and layout, and no
    reader can look it up."""
    if not name.startswith(("/", "~")):
        return name  # a hub id, or a path given relative to the project
    path = Path(name).expanduser()
    try:
        return path.resolve().relative_to(settings.BASE_DIR.resolve()).as_posix()
    except ValueError:
        return path.name


def _jobs_with_model_used():
    """Jobs with the model each actually ran (its override, else its generator's model)."""
    model_used = Case(
        When(model_override="", then=F("generator__model_id")), default=F("model_override")
    )
    return GenerationJob.objects.annotate(model_used=model_used)


def _job_counters_summed(rows, fields: tuple[str, str]) -> dict[tuple, list[int]]:
    """Counters the jobs keep as JSON ({key: {field: n}}, job_counters_refresh), summed over
    the jobs: a site of millions of samples has thousands of jobs. ``rows`` yields (group,
    counters); the totals are per (group, key), the fields in the order given."""
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for group, counters in rows.iterator(chunk_size=2000):
        for key, counts in counters.items():
            total = totals[(group, key)]
            total[0] += counts.get(fields[0], 0)
            total[1] += counts.get(fields[1], 0)
    return totals


def stats_hit_rates() -> list[dict]:
    """Per model actually used and sample mode: samples generated, published, and the hit
    rate, from the jobs' counters."""
    totals = _job_counters_summed(
        _jobs_with_model_used().exclude(mode_counts={}).values_list("model_used", "mode_counts"),
        ("generated", "published"),
    )
    return [
        {
            "generator": model_public_name(model_used),
            "mode": mode,
            "generated": generated,
            "published": published,
            "rate": published / generated if generated else 0.0,
        }
        for (model_used, mode), (generated, published) in sorted(totals.items())
        if generated
    ]


def stats_rejection_reasons() -> list[tuple[str, int]]:
    """Every gate reason and how many samples it rejected, most common first, from the
    jobs' counters."""
    counts: Counter = Counter()
    rows = GenerationJob.objects.exclude(rejection_counts={}).values_list(
        "rejection_counts", flat=True
    )
    for reasons in rows.iterator(chunk_size=2000):
        counts.update(reasons)
    return counts.most_common()


def stats_daily_efficiency() -> list[dict]:
    """Per day of job activity: tokens per worker-second and worker-seconds per invention."""
    rows = (
        GenerationJob.objects.exclude(started_at=None)
        .annotate(day=TruncDate("started_at"))
        .values("day")
        .annotate(
            tokens=Sum("tokens_generated"),
            seconds=Sum("worker_seconds"),
            published=Sum("published_count"),
        )
        .order_by("day")
    )
    out = defaultdict(dict)
    for r in rows:
        seconds = r["seconds"] or 0.0
        out[r["day"]] = {
            "day": r["day"],
            "tokens_per_second": (r["tokens"] or 0) / seconds if seconds else 0.0,
            "cpu_seconds_per_invention": seconds / r["published"] if r["published"] else None,
            "published": r["published"] or 0,
        }
    return list(out.values())


def job_cost(job) -> dict:
    """What a job spent: worker CPU-seconds and tokens, per second, per sample, per
    published invention (None where a denominator is zero)."""
    seconds, tokens = job.worker_seconds or 0.0, job.tokens_generated or 0

    def per(value, count):
        return round(value / count, 2) if count else None

    return {
        "cpu_seconds": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_second": per(tokens, seconds),
        "seconds_per_sample": per(seconds, job.done_count),
        "seconds_per_invention": per(seconds, job.published_count),
        "early_stopped": job.early_stopped_count,
        "tokens_unspent": job.early_stop_tokens_unspent,
    }


def job_workers(job) -> list[dict]:
    """Who worked on a job: per worker, the samples it recorded and the batches it holds
    now (a job is shared batch by batch, #15)."""
    from generation.models import JobBatch

    rows = {
        r["worker"]: {"worker": r["worker"], "samples": r["n"], "holding": []}
        for r in Sample.objects.filter(job=job).values("worker").annotate(n=Count("id"))
    }
    for batch in JobBatch.objects.filter(job=job).order_by("start"):
        worker = batch.owner.rsplit(":", 1)[0]  # the lease token is host:pid:nonce
        row = rows.setdefault(worker, {"worker": worker, "samples": 0, "holding": []})
        row["holding"].append(f"{batch.start}-{batch.end - 1}")
    return sorted(rows.values(), key=lambda r: (-r["samples"], r["worker"]))


def stats_cost_by_model() -> list[dict]:
    """Cost per model used and mode, over all jobs: tokens per CPU-second, CPU-seconds per
    sample and per published invention, beside the hit rate."""
    rows = (
        _jobs_with_model_used()
        .exclude(started_at=None)
        .values("model_used", "mode")
        .annotate(
            seconds=Sum("worker_seconds"),
            tokens=Sum("tokens_generated"),
            samples=Sum("done_count"),
            published=Sum("published_count"),
            early_stopped=Sum("early_stopped_count"),
            unspent=Sum("early_stop_tokens_unspent"),
        )
        .order_by("model_used", "mode")
    )
    out = []
    for r in rows:
        seconds = r["seconds"] or 0.0
        out.append(
            {
                "model": model_public_name(r["model_used"]),
                "mode": r["mode"],
                "tokens_per_second": round(r["tokens"] / seconds, 1) if seconds else None,
                "seconds_per_sample": round(seconds / r["samples"], 2) if r["samples"] else None,
                "seconds_per_invention": (
                    round(seconds / r["published"], 2) if r["published"] else None
                ),
                "hit_rate": round(r["published"] / r["samples"], 3) if r["samples"] else None,
                "samples": r["samples"] or 0,
                "early_stopped": r["early_stopped"] or 0,
                "tokens_unspent": r["unspent"] or 0,
                "tokens_per_invention": (
                    round((r["tokens"] or 0) / r["published"]) if r["published"] else None
                ),
            }
        )
    return out


def contributors_credits() -> list[dict]:
    """The public credits: per contributor (revoked ones too: their work stands), samples
    recorded, inventions published, since when; most published first. Summed over the jobs'
    counters (job_counters_refresh keeps them from the samples), as /stats/ is."""
    from generation.models import Contributor

    totals = _job_counters_summed(
        GenerationJob.objects.exclude(contributor_counts={}).values_list(
            Value(""), "contributor_counts"
        ),
        ("samples", "published"),
    )
    out = []
    for c in Contributor.objects.only("name", "created_at"):
        samples, published = totals.get(("", str(c.pk)), (0, 0))
        out.append(
            {"name": c.name, "samples": samples, "published": published, "created_at": c.created_at}
        )
    return sorted(out, key=lambda c: (-c["published"], -c["samples"], c["name"]))


def stats_backtests(limit: int = 20) -> list[dict]:
    """The latest backtests (generation/backtest.py) with their figures and cost per hit:
    generation CPU-seconds per generated invention that anticipated a later patent."""
    from generation.models import BacktestRun

    out = []
    for run in BacktestRun.objects.all()[:limit]:
        r = run.report
        out.append(
            {
                "model": model_public_name(run.model),
                "cutoff": run.cutoff,
                "generated": run.generated,
                "passed_gate": run.passed_gate,
                "later_patents": run.later_patents,
                "hits": run.hits,
                "anticipated": run.anticipated,
                "hits_per_1000": r.get("hits_per_1000"),
                "hits_interval": r.get("hits_per_1000_interval"),
                "share": r.get("share_anticipated"),
                "share_interval": r.get("share_anticipated_interval"),
                "threshold": run.threshold,
                "random_pairs": (r.get("calibration") or {}).get("random_pairs"),
                "own_above": (r.get("calibration") or {}).get("own_above_threshold"),
                "seconds_per_hit": round(run.cpu_seconds / run.hits, 1) if run.hits else None,
                "created_at": run.created_at,
            }
        )
    return out


def coverage_areas(*, days: int = 90, limit: int = 40) -> list[dict]:
    """Where examiners search (``SearchTally``: searches per CPC subclass over ``days``)
    beside what the site holds there: reference patents, and inventions published by jobs
    aimed at the area (generation/aiming.py). Most searched first; ``gap`` is searches per
    aimed invention (plus one), the order in which to aim jobs."""
    import datetime as dt

    from django.db.models import Sum

    from patents.selectors import reference_areas_kept
    from search.models import SearchTally

    since = dt.date.today() - dt.timedelta(days=days)
    rows = (
        SearchTally.objects.filter(day__gte=since)
        .values("cpc")
        .annotate(searches=Sum("searches"))
        .order_by("-searches", "cpc")[:limit]
    )
    aimed: dict[str, int] = {}
    for job in GenerationJob.objects.filter(aim__kind="cpc").only("aim", "published_count"):
        area = str(job.aim.get("value") or "")[:4].upper()
        aimed[area] = aimed.get(area, 0) + job.published_count
    rows = list(rows)
    references = reference_areas_kept([row["cpc"] for row in rows])
    out = []
    for row in rows:
        generated = aimed.get(row["cpc"], 0)
        out.append(
            {
                "cpc": row["cpc"],
                "searches": row["searches"],
                "references": references[row["cpc"]],
                "generated": generated,
                "gap": round(row["searches"] / (generated + 1), 2),
            }
        )
    return out
