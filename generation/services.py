"""Writes for generation: creating, dispatching, running, cancelling and recovering jobs."""

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from generation.backends import (
    BackendUnavailable,
    ModelLoadError,
    SamplingParams,
    backend_for,
)
from generation.gate import gate_run
from generation.models import GenerationJob, Generator, Sample
from generation.parsing import patent_text_parse
from generation.prompts import (
    BOTTOM_UP,
    TOP_DOWN,
    prompt_continues_document,
    prompt_document_part,
    prompt_render,
)
from generation.sampling import JOB_SAMPLING_FIELDS, SAMPLING_DEFAULTS
from patents.services import patent_publish
from patents.text import control_chars_strip

logger = logging.getLogger(__name__)

Status = GenerationJob.Status
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class JobParameterError(ValueError):
    """A job was asked for with parameters that cannot work; the message says which."""


class BrokerUnavailable(RuntimeError):
    pass


def job_params_validate(
    *,
    count: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    max_new_tokens: int,
    mode: str,
) -> None:
    errors = []
    if not 1 <= count <= settings.GENERATION_MAX_COUNT:
        errors.append(f"count must be between 1 and {settings.GENERATION_MAX_COUNT}")
    if temperature <= 0:
        errors.append(
            "temperature must be above 0 (sampling needs it; 0 would be greedy "
            "and make every sample identical)"
        )
    elif temperature > 5:
        errors.append("temperature above 5 gives noise")
    if not 0 < top_p <= 1:
        errors.append("top_p must be in (0, 1]")
    if top_k < 0:
        errors.append("top_k must be 0 (off) or positive")
    if not 0.5 <= repetition_penalty <= 3:
        errors.append("repetition_penalty must be between 0.5 and 3")
    if not 16 <= max_new_tokens <= 4096:
        errors.append("max_new_tokens must be between 16 and 4096")
    if mode not in GenerationJob.Mode.values:
        errors.append(f"mode must be one of {', '.join(GenerationJob.Mode.values)}")
    if errors:
        raise JobParameterError("; ".join(errors))


def generator_resolve(model: str) -> tuple[Generator, str]:
    """A registry row for a name, hub id or local path; a path becomes an override."""
    row = (
        Generator.objects.filter(name=model).first()
        or Generator.objects.filter(model_id=model).first()
    )
    if row:
        return row, ""
    if os.path.isdir(os.path.expanduser(model)):
        default = Generator.objects.filter(is_default=True).first()
        if default is None:
            raise JobParameterError("no default generator in the registry")
        return default, os.path.abspath(os.path.expanduser(model))
    raise JobParameterError(
        f"unknown model {model!r}: use a registry name ("
        + ", ".join(Generator.objects.values_list("name", flat=True))
        + ") or a local model directory"
    )


def job_create(
    *,
    generator: Generator,
    count: int,
    mode: str = GenerationJob.Mode.TOP_DOWN,
    model_override: str = "",
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    topics: list[str] | None = None,
    created_by=None,
    dispatch: bool = True,
) -> GenerationJob:
    """Creates a job with validated parameters and dispatches it after commit."""
    defaults = {
        **{name: getattr(SAMPLING_DEFAULTS, name) for name in JOB_SAMPLING_FIELDS},
        **(generator.default_params or {}),
    }
    params = {
        "temperature": defaults["temperature"] if temperature is None else temperature,
        "top_p": defaults["top_p"] if top_p is None else top_p,
        "top_k": defaults["top_k"] if top_k is None else top_k,
        "repetition_penalty": (
            defaults["repetition_penalty"] if repetition_penalty is None else repetition_penalty
        ),
        "max_new_tokens": defaults["max_new_tokens"] if max_new_tokens is None else max_new_tokens,
    }
    job_params_validate(count=count, mode=mode, **params)
    if not generator.enabled:
        raise JobParameterError(f"generator {generator.name} is disabled")
    job = GenerationJob.objects.create(
        generator=generator,
        model_override=model_override,
        mode=mode,
        count=count,
        seed=seed if seed is not None else int.from_bytes(os.urandom(4), "big"),
        topics=[t.strip() for t in (topics or []) if t and t.strip()],
        created_by=created_by,
        **params,
    )
    if dispatch:
        transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    return job


def job_dispatch(*, job_id: int) -> bool:
    """Sends the job to the generation queue. A dead broker leaves it queued, with a note;
    workers re-dispatch queued jobs when they start, and the admin can start it again."""
    from allthepatents.celery import task_send
    from generation.tasks import job_run_task

    try:
        task_send(job_run_task, args=[job_id])
    except Exception as exc:  # kombu raises many types for a dead broker
        logger.warning("could not dispatch job %s: %s", job_id, exc)
        GenerationJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
            last_error=f"Not dispatched: the task broker is unavailable ({exc}). "
            "It will be dispatched when a worker starts, or start it again."
        )
        return False
    GenerationJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
    return True


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Queued jobs stop at once; running ones between batches."""
    GenerationJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, finished_at=timezone.now(), cancel_requested=True
    )
    GenerationJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def job_rerun(*, job: GenerationJob) -> GenerationJob:
    """A failed or cancelled job goes back to the queue and continues where it stopped."""
    updated = GenerationJob.objects.filter(
        pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED, Status.QUEUED]
    ).update(
        status=Status.QUEUED,
        cancel_requested=False,
        last_error="",
        finished_at=None,
        lease_owner="",
        lease_expires_at=None,
    )
    job.refresh_from_db()
    if updated:
        transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    return job


def job_claim(*, job_id: int, token: str) -> bool:
    """Compare-and-swap: take a queued job, or a running one whose lease has expired."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    # The attempt count rides in the same UPDATE as the claim: no read-modify-write race.
    fields = {
        "status": Status.RUNNING,
        "lease_owner": token,
        "lease_expires_at": lease,
        "attempts": F("attempts") + 1,
    }
    claimed = GenerationJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        started_at=now, **fields
    )
    if not claimed:
        claimed = GenerationJob.objects.filter(
            pk=job_id, status=Status.RUNNING, lease_expires_at__lt=now
        ).update(**fields)
    return bool(claimed)


def _lease_renew(job_id: int, token: str) -> bool:
    lease = timezone.now() + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    return bool(
        GenerationJob.objects.filter(pk=job_id, lease_owner=token, status=Status.RUNNING).update(
            lease_expires_at=lease
        )
    )


def sample_seed(*, job_seed: int, index: int) -> int:
    """A per-sample seed derived from the job's, recorded with the sample."""
    return (job_seed * 1_000_003 + index) % (2**63)


def sample_mode(*, job_mode: str, index: int) -> str:
    if job_mode == GenerationJob.Mode.MIXED:
        return TOP_DOWN if index % 2 == 0 else BOTTOM_UP
    return job_mode


def _job_counters_refresh(job: GenerationJob) -> None:
    """Counters derive from the Sample rows, so a retried batch can never double-count."""
    samples = Sample.objects.filter(job=job)
    reasons: Counter = Counter()
    for row in samples.filter(verdict=Sample.Verdict.REJECTED).values_list("reasons", flat=True):
        reasons.update(row)
    totals = samples.aggregate(tokens=Sum("tokens"))
    GenerationJob.objects.filter(pk=job.pk).update(
        done_count=samples.count(),
        published_count=samples.filter(verdict=Sample.Verdict.PUBLISHED).count(),
        rejected_count=samples.filter(verdict=Sample.Verdict.REJECTED).count(),
        rejection_counts=dict(reasons),
        tokens_generated=totals["tokens"] or 0,
    )


def _sample_record(
    *,
    job: GenerationJob,
    index: int,
    mode: str,
    seed: int,
    prompt: str,
    output,
    provenance_base: dict,
) -> Sample:
    fmt = job.generator.prompt_format
    # A model can emit any byte: a NUL alone made PostgreSQL refuse the batch and failed
    # the job. The count is kept with the sample, so nothing is removed silently.
    completion, removed = control_chars_strip(output.text)
    document = (
        prompt_document_part(prompt_format=fmt, prompt=prompt) + completion
        if prompt_continues_document(fmt)
        else completion
    )
    parsed = patent_text_parse(document, finished=output.finished)
    reasons, details = gate_run(parsed)
    patent = None
    if removed:
        details["control_characters_removed"] = removed
    if not reasons:
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
    """How ``job_run`` ended. The first three are the job's final status; the last two
    mean this worker stopped and another (or a retry) carries on."""

    DONE = GenerationJob.Status.DONE.value
    FAILED = GenerationJob.Status.FAILED.value
    CANCELLED = GenerationJob.Status.CANCELLED.value
    NOT_CLAIMED = "not-claimed"  # another worker holds the lease
    LEASE_LOST = "lease-lost"  # taken over while this batch ran; its results are dropped


def job_batch_run(
    *,
    job: GenerationJob,
    backend,
    indexes: list[int],
    params: SamplingParams,
    provenance_base: dict,
    token: str,
) -> bool:
    """Generates, judges and records the samples ``indexes`` of ``job``, with the job's
    counters, in one transaction. False when the lease was lost meanwhile (nothing is
    recorded: the new owner redoes the batch)."""
    cpu_started = time.process_time()
    prompts, seeds, modes = [], [], []
    for index in indexes:
        mode = sample_mode(job_mode=job.mode, index=index)
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
    outputs = backend.generate(
        prompts, seeds, params, heartbeat=job_lease_keeper(job_id=job.pk, token=token)
    )
    took = time.process_time() - cpu_started
    with transaction.atomic():
        if not _lease_renew(job.pk, token):
            return False
        for index, mode, seed, prompt, output in zip(
            indexes, modes, seeds, prompts, outputs, strict=True
        ):
            try:
                with transaction.atomic():
                    _sample_record(
                        job=job,
                        index=index,
                        mode=mode,
                        seed=seed,
                        prompt=prompt,
                        output=output,
                        provenance_base=provenance_base,
                    )
            except IntegrityError:
                # Another worker recorded this index first: keep theirs.
                logger.info("job %s sample %s already recorded", job.pk, index)
        _job_counters_refresh(job)
        GenerationJob.objects.filter(pk=job.pk).update(worker_seconds=F("worker_seconds") + took)
    return True


def job_run(
    *, job_id: int, progress: Callable[[GenerationJob], None] | None = None
) -> JobRunOutcome:
    """Runs a job to the end (the worker's entry point).

    Work goes in batches (``job_batch_run``); each batch's samples, publications and the
    job's counters commit in one transaction, so a killed worker loses at most the batch in
    flight, and a restarted run skips sample indexes already recorded.
    """
    token = f"{WORKER_ID}:{uuid.uuid4().hex[:8]}"
    if not job_claim(job_id=job_id, token=token):
        return JobRunOutcome.NOT_CLAIMED
    job = GenerationJob.objects.select_related("generator").get(pk=job_id)
    try:
        backend = backend_for(job.generator, model_override=job.model_override)
    except (ModelLoadError, BackendUnavailable) as exc:
        _job_finish(job_id, Status.FAILED, error=str(exc))
        return JobRunOutcome.FAILED
    provenance_base = {
        "generator_model": job.model_override or job.generator.model_id,
        "generator_revision": getattr(backend, "revision_loaded", "") or job.generator.revision,
        "sampling_params": job.sampling_params(),
    }
    params = SamplingParams(**job.sampling_params())
    batch_size = settings.GENERATION_BATCH_SIZE
    while True:
        job.refresh_from_db()
        if job.cancel_requested:
            _job_finish(job_id, Status.CANCELLED)
            return JobRunOutcome.CANCELLED
        done = set(Sample.objects.filter(job=job).values_list("index", flat=True))
        todo = [i for i in range(job.count) if i not in done][:batch_size]
        if not todo:
            _job_finish(job_id, Status.DONE)
            return JobRunOutcome.DONE
        started = time.monotonic()
        if not job_batch_run(
            job=job,
            backend=backend,
            indexes=todo,
            params=params,
            provenance_base=provenance_base,
            token=token,
        ):
            return JobRunOutcome.LEASE_LOST
        logger.info("job %s: %d samples in %.1fs", job_id, len(todo), time.monotonic() - started)
        if progress:
            job.refresh_from_db()
            progress(job)


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


def _job_finish(job_id: int, status: str, *, error: str = "") -> None:
    fields = {
        "status": status,
        "finished_at": timezone.now(),
        "lease_owner": "",
        "lease_expires_at": None,
    }
    if error:
        fields["last_error"] = error
    GenerationJob.objects.filter(pk=job_id).update(**fields)


def job_fail(*, job_id: int, error: str) -> None:
    GenerationJob.objects.filter(pk=job_id, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.FAILED,
        finished_at=timezone.now(),
        last_error=error[:5000],
        lease_owner="",
        lease_expires_at=None,
    )


def jobs_recover() -> list[int]:
    """Re-dispatches every queued or running job when a worker starts. A dead broker may
    have lost queued ones; a running one may belong to a worker that was just killed, whose
    lease has not run out yet and whose message Redis keeps unacked for an hour. The task
    claims it once the lease expires (it retries until then), so a live owner is undisturbed.
    """
    stale = GenerationJob.objects.filter(status__in=[Status.QUEUED, Status.RUNNING])
    ids = list(stale.values_list("pk", flat=True))
    for job_id in ids:
        job_dispatch(job_id=job_id)
    return ids
