"""Contributors generate on their own machines (#18): they lease a batch of a job open to
them over HTTP, generate it with the same backend code as our workers, and submit the
token ids they sampled. Nothing they send is trusted: every sample must pass the proof of
sampling (generation/proof.py) under the job's model and settings, then the same parser,
gate and near-copy checks as our own samples.

A work unit is a JobBatch lease whose owner is ``contributor:<id>:<nonce>``: the nonce is
the unit's id. Leases expire and are re-issued like our workers' (a late submission then
finds its unit gone and is refused, and nothing of the re-issued one is lost); a unit is
recorded once (its lease is deleted in the same transaction, and (job, index) is unique).
"""

import hashlib
import secrets
import threading
import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.backends import GenerationOutput, SamplingParams, TransformersBackend
from generation.models import Contributor, GenerationJob, JobBatch, Sample
from generation.proof import sample_proof_check
from generation.services import (
    job_all_recorded,
    job_claim,
    job_counters_refresh,
    job_finish,
    job_prompts,
    sample_record,
)

Status = GenerationJob.Status
TOKEN_PREFIX = "atp_"  # noqa: S105 (a prefix that marks tokens, not a secret)


class ContributionError(Exception):
    """A refusal with the HTTP status that says what kind."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def contributor_create(*, name: str) -> tuple[Contributor, str]:
    """A contributor and their API token. The token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    contributor = Contributor.objects.create(
        name=name.strip(), token_hash=_token_hash(token), token_prefix=token[:10]
    )
    return contributor, token


def contributor_revoke(*, contributor: Contributor) -> Contributor:
    Contributor.objects.filter(pk=contributor.pk).update(active=False, revoked_at=timezone.now())
    contributor.refresh_from_db()
    return contributor


def contributor_authenticate(*, token: str) -> Contributor | None:
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    return Contributor.objects.filter(token_hash=_token_hash(token), active=True).first()


def _owner_prefix(contributor: Contributor) -> str:
    return f"contributor:{contributor.pk}:"


def work_unit_lease(*, contributor: Contributor) -> dict | None:
    """The next batch of a job open to contributors, leased to this contributor; None
    when there is none. Refused past CONTRIBUTOR_MAX_LEASES units held at once."""
    held = JobBatch.objects.filter(
        owner__startswith=_owner_prefix(contributor), expires_at__gt=timezone.now()
    ).count()
    if held >= settings.CONTRIBUTOR_MAX_LEASES:
        raise ContributionError(
            f"{held} units are leased to you already; submit or release one first", status=429
        )
    jobs = GenerationJob.objects.filter(
        open_to_contributors=True, status__in=[Status.QUEUED, Status.RUNNING]
    ).select_related("generator")
    for job in jobs.order_by("created_at"):
        unit_id = uuid.uuid4().hex
        claim = job_claim(job_id=job.pk, token=_owner_prefix(contributor) + unit_id)
        if not claim:
            continue
        done = set(Sample.objects.filter(job=job).values_list("index", flat=True))
        indexes = [i for i in range(claim.start, claim.end) if i not in done]
        prompts, seeds, modes = job_prompts(job=job, indexes=indexes)
        lease = JobBatch.objects.get(job=job, start=claim.start)
        return {
            "unit": unit_id,
            "job": job.pk,
            "model": job.generator.model_id,
            "revision": job.generator.revision,
            "prompt_format": job.generator.prompt_format,
            "sampling": {**job.sampling_params()},
            "samples": [
                {"index": i, "prompt": p, "seed": s, "mode": m}
                for i, p, s, m in zip(indexes, prompts, seeds, modes, strict=True)
            ],
            "expires_at": lease.expires_at.isoformat(),
        }
    return None


def work_unit_release(*, contributor: Contributor, unit_id: str) -> bool:
    """Gives a unit back at once (a contributor stopping cleanly)."""
    return bool(
        JobBatch.objects.filter(owner=_owner_prefix(contributor) + str(unit_id)).delete()[0]
    )


_checkers: dict[tuple, TransformersBackend] = {}
_checkers_lock = threading.Lock()


def _checker(job: GenerationJob) -> TransformersBackend:
    """The job's model in fp32, as the proof of sampling reads it (kept per process)."""
    source = job.model_override or job.generator.source
    key = (source, job.generator.revision)
    with _checkers_lock:
        if key not in _checkers:
            _checkers.clear()
            _checkers[key] = TransformersBackend(
                source, revision=job.generator.revision, quantize="none"
            )
        return _checkers[key]


def work_unit_submit(*, contributor: Contributor, unit_id: str, samples: list) -> dict:
    """Checks and records a unit's samples: ``[{"index", "token_ids", "finished"}]``, one per
    sample of the unit. All or nothing: one sample that fails the proof refuses the unit."""
    owner = _owner_prefix(contributor) + str(unit_id)
    lease = JobBatch.objects.filter(owner=owner).select_related("job__generator").first()
    if lease is None or lease.expires_at < timezone.now():
        raise ContributionError(
            "this unit is not yours any more (it expired and was re-issued, or was already "
            "submitted or released)",
            status=409,
        )
    job = lease.job
    done = set(Sample.objects.filter(job=job).values_list("index", flat=True))
    expected = [i for i in range(lease.start, lease.end) if i not in done]
    if not isinstance(samples, list) or sorted(_index(s) for s in samples) != expected:
        raise ContributionError(f"submit exactly the unit's samples: {expected}", status=400)
    prompts, seeds, modes = job_prompts(job=job, indexes=expected)
    by_index = {_index(s): s for s in samples}
    checker = _checker(job)
    params = SamplingParams(**job.sampling_params())
    outputs = []
    for index, prompt in zip(expected, prompts, strict=True):
        sample = by_index[index]
        ids, finished = sample.get("token_ids"), sample.get("finished")
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            raise ContributionError(f"sample {index}: token_ids must be integers", status=400)
        if not isinstance(finished, bool) or len(ids) > params.max_new_tokens:
            raise ContributionError(f"sample {index}: bad finished flag or length", status=400)
        proof = sample_proof_check(
            backend=checker, prompt=prompt, token_ids=ids, finished=finished, params=params
        )
        if not proof.ok:
            raise ContributionError(
                f"sample {index} fails the proof of sampling: token {proof.first_violation} "
                f"could not have been drawn from {job.generator.model_id} with these settings",
                status=422,
            )
        text = checker.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        outputs.append(GenerationOutput(text, len(ids) + int(finished), finished, ids))
    provenance_base = {
        "generator_model": job.generator.model_id,
        "generator_revision": job.generator.revision,
        "sampling_params": job.sampling_params(),
        "contributor": contributor.name,
    }
    with transaction.atomic():
        # The lease goes in the same transaction: a second submission finds nothing.
        if not JobBatch.objects.filter(pk=lease.pk, owner=owner).delete()[0]:
            raise ContributionError("this unit was submitted already", status=409)
        recorded = [
            sample_record(
                job=job,
                worker=f"contributor:{contributor.name}",
                contributor=contributor,
                index=index,
                mode=mode,
                seed=seed,
                prompt=prompt,
                output=output,
                provenance_base=provenance_base,
            )
            for index, mode, seed, prompt, output in zip(
                expected, modes, seeds, prompts, outputs, strict=True
            )
        ]
        job_counters_refresh(job)
    if job_all_recorded(job=job) and not JobBatch.objects.filter(job=job).exists():
        job_finish(job.pk, Status.DONE)
    return {
        "recorded": len(recorded),
        "published": [s.patent.public_id for s in recorded if s.patent_id],
        "rejected": {str(s.index): s.reasons for s in recorded if not s.patent_id},
    }


def _index(sample) -> int:
    try:
        return int(sample["index"])
    except (TypeError, KeyError, ValueError):
        raise ContributionError("each sample needs an integer index", status=400) from None
