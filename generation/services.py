"""Writes for generation jobs: validating, creating, dispatching, cancelling, re-running,
finishing and recovering them. Running their batches is generation/batches.py."""

import logging
import os

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.models import GenerationJob, Generator, JobBatch
from generation.sampling import JOB_SAMPLING_FIELDS, SAMPLING_DEFAULTS
from generation.vocabulary import TASK_RUN_JOB

logger = logging.getLogger(__name__)

Status = GenerationJob.Status


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


def generator_sampling_defaults(generator: Generator) -> dict:
    """The sampling parameters a job of ``generator`` gets where none are given: the
    project's defaults, overridden by the generator's card (``default_params``)."""
    return {
        **{name: getattr(SAMPLING_DEFAULTS, name) for name in JOB_SAMPLING_FIELDS},
        **{k: v for k, v in (generator.default_params or {}).items() if k in JOB_SAMPLING_FIELDS},
    }


def job_sampling_resolve(*, generator: Generator, **given) -> dict:
    """The one place where defaults apply: each of JOB_SAMPLING_FIELDS given (not None)
    stands, the rest are the generator's defaults."""
    defaults = generator_sampling_defaults(generator)
    return {
        name: defaults[name] if given.get(name) is None else given[name]
        for name in JOB_SAMPLING_FIELDS
    }


def job_form(*, generator: Generator) -> str:
    """The skeleton a new job's sampler follows: the kl3m document's, for generators that
    write one (GENERATION_DECODE_FORM), else none."""
    from generation.form import FORM_LATEST

    if settings.GENERATION_DECODE_FORM and generator.prompt_format == "kl3m":
        return FORM_LATEST
    return ""


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
    open_to_contributors: bool = False,
    dispatch: bool = True,
    aim: dict | None = None,
) -> GenerationJob:
    """Creates a job with validated parameters and dispatches it after commit. A sampling
    parameter left None takes the generator's default; a seed left None, a random one."""
    params = job_sampling_resolve(
        generator=generator,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        max_new_tokens=max_new_tokens,
    )
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
        batch_size=settings.GENERATION_BATCH_SIZE,
        open_to_contributors=open_to_contributors,
        form=job_form(generator=generator),
        aim=aim or {},
        **params,
    )
    if dispatch:
        transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    return job


def job_dispatch(*, job_id: int) -> bool:
    """Sends the job to the generation queue (GENERATION_JOB_FANOUT messages, so that as
    many workers can share it). A dead broker leaves it queued, with a note; workers
    re-dispatch queued jobs when they start, and the admin can start it again."""
    from allthepatents.celery import task_send

    job = GenerationJob.objects.filter(pk=job_id).only("count", "batch_size").first()
    if job is None:
        return False
    # One message per worker that may share the job (at most one per batch): each free
    # worker takes one and joins in; one that finds nothing left returns at once.
    batches = -(-job.count // max(job.batch_size, 1))
    try:
        for _ in range(max(1, min(settings.GENERATION_JOB_FANOUT, batches))):
            task_send(TASK_RUN_JOB, args=[job_id])
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
    )
    if updated:
        # Leases of the stopped run: a worker still finishing one loses it and its batch is
        # redone, rather than the new run waiting for it to run out.
        JobBatch.objects.filter(job_id=job.pk).delete()
    job.refresh_from_db()
    if updated:
        transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    return job


def job_finish(job_id: int, status: str, *, error: str = "") -> None:
    """Final status, once: only a job still queued or running changes (two workers that
    both see the end write it once)."""
    fields = {
        "status": status,
        "finished_at": timezone.now(),
    }
    if error:
        fields["last_error"] = error
    GenerationJob.objects.filter(pk=job_id, status__in=[Status.QUEUED, Status.RUNNING]).update(
        **fields
    )
    JobBatch.objects.filter(job_id=job_id).delete()


def job_fail(*, job_id: int, error: str) -> None:
    GenerationJob.objects.filter(pk=job_id, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.FAILED,
        finished_at=timezone.now(),
        last_error=error[:5000],
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


def backtest_record(*, model: str, report: dict):
    """Keeps a backtest's figures for /stats/."""
    import datetime as dt

    from generation.models import BacktestRun

    return BacktestRun.objects.create(
        model=model,
        cutoff=dt.date.fromisoformat(report["cutoff"]),
        generated=report["generated"],
        passed_gate=report["passed_gate"],
        later_patents=report["later_patents"],
        hits=report["hits"],
        anticipated=report["anticipated"],
        threshold=report["threshold"],
        cpu_seconds=report["generation_cpu_seconds"],
        report=report,
    )
