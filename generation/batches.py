"""Writes for a job's batches: claiming one under a lease, renewing it, generating it,
and recording it (for the site's workers and for proved contributions alike)."""

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum

from allthepatents.clock import db_now
from generation.aiming import aim_topic
from generation.backends import BackendUnavailable, ModelLoadError, backend_for
from generation.early_stop import END_OF_DOCUMENT, prefix_decide
from generation.gate import gate_run
from generation.models import GenerationJob, JobBatch, Sample
from generation.parsing import patent_text_parse
from generation.prompts import (
    BOTTOM_UP,
    TOP_DOWN,
    prompt_continues_document,
    prompt_document_part,
    prompt_render,
)
from generation.sampling import SamplingParams
from generation.selectors import job_model, model_public_name
from generation.services import job_finish
from patents.services import patent_publish
from patents.text import control_chars_strip

logger = logging.getLogger(__name__)

Status = GenerationJob.Status
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class BatchClaim:
    """What ``job_claim`` found: the batch this worker now holds, if any, and else when the
    earliest lease held by another worker runs out (None: nothing is held)."""

    start: int | None = None
    end: int | None = None
    indexes: tuple[int, ...] = ()  # of [start, end), those not recorded yet
    expires_at: datetime | None = None
    others_until: datetime | None = None

    def __bool__(self) -> bool:
        return self.start is not None


def job_claim(*, job_id: int, token: str) -> BatchClaim:
    """Takes the first batch of the job that is neither recorded nor held: a new lease row
    (the unique (job, start) constraint decides between two workers), or a compare-and-swap
    on a lease that has run out. A queued job becomes running on the way. Lease times are
    the shared clock's (``db_now``): workers on several machines compare them."""
    now = db_now()
    lease = now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    GenerationJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=now
    )
    job = GenerationJob.objects.filter(pk=job_id, status=Status.RUNNING).first()
    if job is None or job.cancel_requested:
        return BatchClaim()
    done = set(Sample.objects.filter(job_id=job_id).values_list("index", flat=True))
    held = {b.start: b for b in JobBatch.objects.filter(job_id=job_id)}
    size = max(job.batch_size, 1)
    others_until = None
    for start in range(0, job.count, size):
        end = min(start + size, job.count)
        if all(i in done for i in range(start, end)):
            continue
        current = held.get(start)
        if current is None:
            try:
                with transaction.atomic():
                    JobBatch.objects.create(
                        job_id=job_id, start=start, end=end, owner=token, expires_at=lease
                    )
            except IntegrityError:
                continue  # another worker took it a moment ago
        elif current.expires_at < now and current.owner != token:
            taken = JobBatch.objects.filter(pk=current.pk, expires_at__lt=now).update(
                owner=token, expires_at=lease
            )
            if not taken:
                continue
        elif current.owner != token:
            if others_until is None or current.expires_at < others_until:
                others_until = current.expires_at
            continue
        else:  # ours from an earlier pass (a lost race with ourselves cannot happen)
            JobBatch.objects.filter(pk=current.pk).update(expires_at=lease)
        indexes = tuple(i for i in range(start, end) if i not in done)
        return BatchClaim(start=start, end=end, indexes=indexes, expires_at=lease)
    return BatchClaim(others_until=others_until)


def _lease_renew(job_id: int, token: str) -> bool:
    """Extends this worker's batch leases on the job; False when it holds none any more."""
    lease = db_now() + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    renewed = JobBatch.objects.filter(job_id=job_id, owner=token).update(expires_at=lease)
    return bool(renewed)


def job_leases_release(*, job_id: int, worker: str) -> int:
    """Lets the batches that this worker process holds on the job be taken at once (a
    transient error: its retry, or another worker, carries on without waiting)."""
    return JobBatch.objects.filter(job_id=job_id, owner__startswith=f"{worker}:").update(
        expires_at=db_now()
    )


def job_wait_seconds(*, job_id: int) -> float | None:
    """Seconds until the earliest batch lease on the job runs out (None: none is held)."""
    first = JobBatch.objects.filter(job_id=job_id).order_by("expires_at").first()
    if first is None:
        return None
    return max(0.0, (first.expires_at - db_now()).total_seconds())


def sample_seed(*, job_seed: int, index: int) -> int:
    """A per-sample seed derived from the job's, recorded with the sample."""
    return (job_seed * 1_000_003 + index) % (2**63)


def sample_mode(*, job_mode: str, index: int) -> str:
    if job_mode == GenerationJob.Mode.MIXED:
        return TOP_DOWN if index % 2 == 0 else BOTTOM_UP
    return job_mode


def job_counters_refresh(job: GenerationJob) -> None:
    """Counters derive from the Sample rows, so a retried batch can never double-count."""
    samples = Sample.objects.filter(job=job)
    reasons: Counter = Counter()
    for row in samples.filter(verdict=Sample.Verdict.REJECTED).values_list("reasons", flat=True):
        reasons.update(row)
    # One pass over the job's samples, per mode and contributor (None: the site's workers):
    # the job's totals, its modes' and its contributors' are sums of these few groups.
    groups = list(
        samples.values("mode", "contributor_id")
        .annotate(
            generated=Count("id"),
            published=Count("id", filter=Q(verdict=Sample.Verdict.PUBLISHED)),
            rejected=Count("id", filter=Q(verdict=Sample.Verdict.REJECTED)),
            tokens=Sum("tokens"),
        )
        .order_by("mode", "contributor_id")
    )
    per_mode: dict[str, Counter] = {}
    per_contributor: dict[str, dict[str, int]] = {}
    for row in groups:
        per_mode.setdefault(row["mode"], Counter()).update(
            {k: row[k] or 0 for k in ("generated", "published", "rejected", "tokens")}
        )
        if row["contributor_id"] is not None:
            credit = per_contributor.setdefault(
                str(row["contributor_id"]), {"samples": 0, "published": 0}
            )
            credit["samples"] += row["generated"]
            credit["published"] += row["published"]
    stopped = samples.filter(details__has_key="stopped").aggregate(
        n=Count("id"), tokens=Sum("tokens")
    )
    GenerationJob.objects.filter(pk=job.pk).update(
        early_stopped_count=stopped["n"],
        early_stop_tokens_unspent=stopped["n"] * job.max_new_tokens - (stopped["tokens"] or 0),
        done_count=sum(row["generated"] for row in per_mode.values()),
        published_count=sum(row["published"] for row in per_mode.values()),
        rejected_count=sum(row["rejected"] for row in per_mode.values()),
        rejection_counts=dict(reasons),
        mode_counts={
            mode: {"generated": row["generated"], "published": row["published"]}
            for mode, row in per_mode.items()
        },
        contributor_counts=per_contributor,
        tokens_generated=sum(row["tokens"] for row in per_mode.values()),
    )


def sample_record(
    *,
    job: GenerationJob,
    worker: str,
    index: int,
    mode: str,
    seed: int,
    prompt: str,
    output,
    provenance_base: dict,
    contributor=None,
) -> Sample:
    """Parses, judges and records one output as sample ``index`` of ``job`` (publishing it
    when the gate passes): the one path for our workers' samples and contributors'."""
    fmt = job.generator.prompt_format
    # A model can emit any byte: a NUL alone made PostgreSQL refuse the batch and failed
    # the job. The count is kept with the sample, so nothing is removed silently.
    completion, removed = control_chars_strip(output.text)
    document = (
        prompt_document_part(prompt_format=fmt, prompt=prompt) + completion
        if prompt_continues_document(fmt)
        else completion
    )
    stopped = getattr(output, "stopped", "")
    if stopped and stopped != END_OF_DOCUMENT:
        # Ended by the backend once the gate's verdict was certain (generation.early_stop).
        reasons, details = [stopped], {"gate_step": "early_stop"}
    else:
        reasons, details = gate_run(patent_text_parse(document, finished=output.finished))
    if stopped:
        details["stopped"] = {"reason": stopped, "tokens": output.tokens}
    patent = None
    if removed:
        details["control_characters_removed"] = removed
    if not reasons:
        parsed = patent_text_parse(document, finished=output.finished)
        patent = patent_publish(
            title=parsed.title,
            abstract=parsed.abstract,
            claims=parsed.claims_as_dicts(),
            raw_text=document,
            job=job,
            provenance={**provenance_base, "mode": mode, "prompt": prompt, "seed": seed},
        )
    return Sample.objects.create(
        job=job,
        worker=worker,
        contributor=contributor,
        index=index,
        mode=mode,
        seed=seed,
        prompt=prompt,
        raw_text=document,
        tokens=output.tokens,
        finished=output.finished,
        verdict=Sample.Verdict.PUBLISHED if patent else Sample.Verdict.REJECTED,
        reasons=reasons,
        details=details,
        patent=patent,
    )


class JobRunOutcome(StrEnum):
    """How ``job_run`` ended for this worker. The first three are the job's final status;
    NOT_CLAIMED means the rest is in other workers' hands (the task looks again when their
    leases would run out, in case one died)."""

    DONE = GenerationJob.Status.DONE.value
    FAILED = GenerationJob.Status.FAILED.value
    CANCELLED = GenerationJob.Status.CANCELLED.value
    NOT_CLAIMED = "not-claimed"  # nothing free: other workers hold what is left


_FINAL_OUTCOMES = {
    Status.DONE: JobRunOutcome.DONE,
    Status.FAILED: JobRunOutcome.FAILED,
    Status.CANCELLED: JobRunOutcome.CANCELLED,
}


def job_prompts(*, job: GenerationJob, indexes: list[int]):
    """(prompts, seeds, modes) of the samples ``indexes``: all a sample depends on."""
    prompts, seeds, modes = [], [], []
    for index in indexes:
        mode = sample_mode(job_mode=job.mode, index=index)
        if job.aim.get("seeds"):
            topic = aim_topic(job.aim, index=index, mode=mode)
        else:
            topic = job.topics[index % len(job.topics)] if job.topics else ""
        prompts.append(
            prompt_render(
                prompt_format=job.generator.prompt_format,
                mode=mode,
                topic=topic,
                language=job.generator.language,
            )
        )
        seeds.append(sample_seed(job_seed=job.seed, index=index))
        modes.append(mode)
    return prompts, seeds, modes


def prefix_decider(*, prompt_format: str, prompts: list[str]):
    """``decide(row, completion)`` for a backend: what the document so far already decides
    (``generation.early_stop``); None when GENERATION_EARLY_STOP is off."""
    if not settings.GENERATION_EARLY_STOP:
        return None
    heads = [
        prompt_document_part(prompt_format=prompt_format, prompt=prompt)
        if prompt_continues_document(prompt_format)
        else ""
        for prompt in prompts
    ]

    def decide(row: int, completion: str):
        return prefix_decide(heads[row] + completion)

    return decide


def batch_record(
    *, job: GenerationJob, rows, worker: str, provenance_base: dict, contributor=None
) -> list:
    """Records a generated batch, ``rows`` of (index, mode, seed, prompt, output), and
    refreshes the job's counters: the one way a batch is written, for the site's workers and
    for proved contributions alike. The caller holds the transaction and has checked its
    lease. An index another worker recorded first is kept as theirs."""
    recorded = []
    for index, mode, seed, prompt, output in rows:
        try:
            with transaction.atomic():
                recorded.append(
                    sample_record(
                        job=job,
                        worker=worker,
                        contributor=contributor,
                        index=index,
                        mode=mode,
                        seed=seed,
                        prompt=prompt,
                        output=output,
                        provenance_base=provenance_base,
                    )
                )
        except IntegrityError:
            logger.info("job %s sample %s already recorded", job.pk, index)
    job_counters_refresh(job)
    return recorded


def job_batch_run(
    *,
    job: GenerationJob,
    backend,
    indexes: list[int],
    params: SamplingParams,
    provenance_base: dict,
    token: str,
    release: int | None = None,
) -> bool:
    """Generates, judges and records the samples ``indexes`` of ``job``, with the job's
    counters, in one transaction, and drops the lease of the batch starting at ``release``.
    False when the lease was lost meanwhile (nothing is recorded: the new owner redoes the
    batch)."""
    cpu_started = time.process_time()
    prompts, seeds, modes = job_prompts(job=job, indexes=indexes)
    outputs = backend.generate(
        prompts,
        seeds,
        params,
        heartbeat=job_lease_keeper(job_id=job.pk, token=token),
        decide=prefix_decider(prompt_format=job.generator.prompt_format, prompts=prompts),
    )
    took = time.process_time() - cpu_started
    with transaction.atomic():
        if not _lease_renew(job.pk, token):
            return False
        batch_record(
            job=job,
            rows=zip(indexes, modes, seeds, prompts, outputs, strict=True),
            worker=WORKER_ID,
            provenance_base=provenance_base,
        )
        GenerationJob.objects.filter(pk=job.pk).update(worker_seconds=F("worker_seconds") + took)
        if release is not None:
            JobBatch.objects.filter(job_id=job.pk, owner=token, start=release).delete()
    return True


def job_run(
    *, job_id: int, progress: Callable[[GenerationJob], None] | None = None
) -> JobRunOutcome:
    """Works on a job until nothing is left for this worker (the worker's entry point).

    The job is cut into batches of ``job.batch_size`` sample indexes; this worker takes one
    at a time (``job_claim``), so several workers share a job. Each batch's samples,
    publications and the job's counters commit in one transaction: a killed worker loses at
    most the batch in flight, whose lease runs out for another to take. The worker that
    finds every index recorded marks the job done.
    """
    token = f"{WORKER_ID}:{uuid.uuid4().hex[:8]}"
    job = GenerationJob.objects.select_related("generator").filter(pk=job_id).first()
    if job is None:
        return JobRunOutcome.NOT_CLAIMED
    if not job.is_active:
        return _FINAL_OUTCOMES.get(job.status, JobRunOutcome.NOT_CLAIMED)
    # Loaded before any batch is taken: a load longer than the lease would lose it.
    try:
        backend = backend_for(job.generator, model_override=job.model_override)
    except (ModelLoadError, BackendUnavailable) as exc:
        job_finish(job_id, Status.FAILED, error=str(exc))
        return JobRunOutcome.FAILED
    provenance_base = {
        "generator_model": model_public_name(job_model(job=job).name),
        "generator_revision": getattr(backend, "revision_loaded", "") or job.generator.revision,
        "sampling_params": job.sampling_params(),
    }
    params = SamplingParams(**job.sampling_params())
    joined = False
    while True:
        job.refresh_from_db()
        if job.cancel_requested:
            job_finish(job_id, Status.CANCELLED)
            return JobRunOutcome.CANCELLED
        claim = job_claim(job_id=job_id, token=token)
        if not claim:
            job.refresh_from_db()
            if job.status != Status.RUNNING:
                return _FINAL_OUTCOMES.get(job.status, JobRunOutcome.NOT_CLAIMED)
            if claim.others_until is None and job_finish_if_complete(job=job):
                return JobRunOutcome.DONE
            return JobRunOutcome.NOT_CLAIMED  # the rest is held by other workers
        if not joined:
            GenerationJob.objects.filter(pk=job_id).update(attempts=F("attempts") + 1)
            joined = True
        started = time.monotonic()
        recorded = job_batch_run(
            job=job,
            backend=backend,
            indexes=list(claim.indexes),
            params=params,
            provenance_base=provenance_base,
            token=token,
            release=claim.start,
        )
        if not recorded:
            # Taken over while this batch ran (a stall longer than the lease): the new
            # holder redoes it; this worker goes on with whatever else is free.
            logger.warning("job %s: lost the lease on batch %s", job_id, claim.start)
            continue
        logger.info(
            "job %s: samples %d-%d in %.1fs",
            job_id,
            claim.start,
            claim.end - 1,
            time.monotonic() - started,
        )
        if progress:
            job.refresh_from_db()
            progress(job)


def job_finish_if_complete(*, job: GenerationJob) -> bool:
    """Marks the job done when every index is recorded and no batch is held (our workers'
    or contributors'); the counters first, since the last batches may have committed side
    by side. True when it is done."""
    if JobBatch.objects.filter(job=job).exists():
        return False
    if Sample.objects.filter(job=job).count() < job.count:
        return False
    job_counters_refresh(job)
    job_finish(job.pk, Status.DONE)
    return True


def job_lease_keeper(*, job_id: int, token: str):
    """A heartbeat for the backend: renews the lease at most every third of its length, so
    a batch longer than the lease (long samples, fp32, a slow box) is not taken over."""
    every = settings.GENERATION_LEASE_SECONDS / 3
    last = time.monotonic()

    def beat() -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            last = time.monotonic()
            _lease_renew(job_id, token)

    return beat
