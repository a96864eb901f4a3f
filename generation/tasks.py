"""Thin Celery tasks: look the row up, call the service, map errors to retries."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from generation.backends import TransientBackendError
from generation.models import GenerationJob
from generation.services import JobRunOutcome, job_fail, job_run

logger = logging.getLogger(__name__)

# Only these are worth another try; anything else fails the job with its message.
TRANSIENT_ERRORS = (TransientBackendError, OperationalError, InterfaceError)


@shared_task(
    bind=True,
    name="generation.run_job",
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
        # Let the retry claim the job straight away.
        GenerationJob.objects.filter(pk=job_id, status=GenerationJob.Status.RUNNING).update(
            lease_expires_at=timezone.now()
        )
        raise self.retry(exc=exc, countdown=min(2 ** (transient_tries + 1), 60)) from exc
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
        return JobRunOutcome.FAILED
    if result == JobRunOutcome.NOT_CLAIMED:
        job.refresh_from_db()
        if job.status == GenerationJob.Status.RUNNING and job.lease_expires_at:
            # Another worker holds it, or a dead one did: look again when its lease ends.
            wait = (job.lease_expires_at - timezone.now()).total_seconds()
            raise self.retry(countdown=max(1, int(wait) + 1))
    return result
