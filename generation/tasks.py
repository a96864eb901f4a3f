"""Thin Celery tasks: look the row up, call the service, map errors to retries."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from generation.backends import TransientBackendError
from generation.batches import (
    WORKER_ID,
    JobRunOutcome,
    job_leases_release,
    job_run,
    job_wait_seconds,
)
from generation.models import GenerationJob
from generation.services import job_fail
from generation.vocabulary import TASK_RUN_JOB, TASK_VERIFY_CONTRIBUTION

logger = logging.getLogger(__name__)

# Only these are worth another try; anything else fails the job with its message.
TRANSIENT_ERRORS = (TransientBackendError, OperationalError, InterfaceError)


@shared_task(
    bind=True,
    name=TASK_RUN_JOB,
    acks_late=True,
    max_retries=None,
    soft_time_limit=settings.GENERATION_SOFT_TIME_LIMIT,
    time_limit=settings.GENERATION_HARD_TIME_LIMIT,
)
def job_run_task(self, job_id: int):
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is None or not job.is_active:
        return None
    try:
        result = job_run(job_id=job_id)
    except SoftTimeLimitExceeded:
        job_fail(job_id=job_id, error="stopped by the soft time limit; re-run to continue")
        return JobRunOutcome.FAILED
    except TRANSIENT_ERRORS as exc:
        transient_tries = self.request.retries
        if transient_tries >= 5:
            job_fail(job_id=job_id, error=f"gave up after {transient_tries} retries: {exc}")
            return JobRunOutcome.FAILED
        # Let the retry (or another worker) take this worker's batches straight away.
        job_leases_release(job_id=job_id, worker=WORKER_ID)
        raise self.retry(exc=exc, countdown=min(2 ** (transient_tries + 1), 60)) from exc
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
        return JobRunOutcome.FAILED
    if result == JobRunOutcome.NOT_CLAIMED:
        job.refresh_from_db()
        wait = job_wait_seconds(job_id=job_id)
        if job.status == GenerationJob.Status.RUNNING and wait is not None:
            # Other workers hold the rest, or a dead one did: look again when the first
            # of their leases would run out.
            raise self.retry(countdown=max(1, int(wait) + 1))
    return result


@shared_task(
    bind=True,
    name=TASK_VERIFY_CONTRIBUTION,
    acks_late=True,
    max_retries=5,
    soft_time_limit=settings.GENERATION_SOFT_TIME_LIMIT,
    time_limit=settings.GENERATION_HARD_TIME_LIMIT,
)
def contribution_verify_task(self, contribution_id: int):
    """A contributor's unit: the proof of sampling, then the usual gate (a worker's job:
    it needs the model)."""
    from generation.contributions import contribution_verify

    try:
        contribution = contribution_verify(contribution_id=contribution_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=min(2 ** (self.request.retries + 1), 60)) from exc
    return contribution.status if contribution else None
