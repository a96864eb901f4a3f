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
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from generation.backends import GenerationOutput, SamplingParams, TransformersBackend
from generation.models import Contribution, Contributor, GenerationJob, JobBatch, Sample
from generation.proof import samples_proof_check
from generation.services import (
    job_claim,
    job_counters_refresh,
    job_finish_if_complete,
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


def contributor_create(*, name: str, signed_up: bool = False) -> tuple[Contributor, str]:
    """A contributor and their API token. The token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    contributor = Contributor.objects.create(
        name=name.strip(),
        token_hash=_token_hash(token),
        token_prefix=token[:10],
        signed_up=signed_up,
    )
    return contributor, token


SIGNUP_NAME_MIN, SIGNUP_NAME_MAX = 3, 60


def contributor_sign_up(*, name: str) -> tuple[Contributor, str]:
    """Public sign-up (``CONTRIBUTOR_SIGNUP``): a contributor under a public name, or a
    ContributionError (400 a bad name, 409 a taken one, 404 sign-up off). The name is shown
    on the credits page, so it is plain printable text of a sane length."""
    if not settings.CONTRIBUTOR_SIGNUP:
        raise ContributionError("public sign-up is off; ask an admin for a token", status=404)
    name = " ".join((name or "").split())
    if not SIGNUP_NAME_MIN <= len(name) <= SIGNUP_NAME_MAX or not name.isprintable():
        raise ContributionError(
            f"a name of {SIGNUP_NAME_MIN} to {SIGNUP_NAME_MAX} printable characters", status=400
        )
    if Contributor.objects.filter(name__iexact=name).exists():
        raise ContributionError("that name is taken", status=409)
    try:
        with transaction.atomic():
            return contributor_create(name=name, signed_up=True)
    except IntegrityError:  # the same name, a moment earlier
        raise ContributionError("that name is taken", status=409) from None


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
        indexes = list(claim.indexes)
        prompts, seeds, modes = job_prompts(job=job, indexes=indexes)
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
            "expires_at": claim.expires_at.isoformat(),
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
    """The job's model as the proof of sampling reads it, kept per process. Its precision
    is ``proof_precision``: bf16 checking cost 0.05 of fp32 generation and moved genuine
    tokens by at most 0.09 logit, well inside the tolerance (bench/proof.py --checker
    bf16)."""
    source = job.model_override or job.generator.source
    precision = proof_precision(settings.GENERATION_QUANTIZE)
    key = (source, job.generator.revision, precision)
    with _checkers_lock:
        if key not in _checkers:
            _checkers.clear()
            _checkers[key] = TransformersBackend(
                source, revision=job.generator.revision, quantize=precision
            )
        return _checkers[key]


def proof_precision(choice: str) -> str:
    """The checker's precision for GENERATION_QUANTIZE ``choice``. The proof is one forward
    pass over whole texts, matrix products that AVX512-BF16 speeds up even without AMX, so
    ``auto`` checks in bf16 wherever the CPU computes it natively, although generation
    there (token by token, bound by memory) runs int8. Otherwise the worker's own."""
    from search.embeddings import cpu_has_native_bf16

    if choice == "auto" and cpu_has_native_bf16():
        return "bf16"
    return choice


def contribution_receive(*, contributor: Contributor, unit_id: str, samples) -> Contribution:
    """Takes a unit's samples (``[{"index", "token_ids", "finished"}]``, one per sample of
    the unit) for a worker to prove and record (``contribution_verify``). Refuses at once
    what needs no model: a unit that is not the contributor's any more, or malformed data."""
    owner = _owner_prefix(contributor) + str(unit_id)
    lease = JobBatch.objects.filter(owner=owner).select_related("job").first()
    if lease is None or lease.expires_at < timezone.now():
        raise ContributionError(
            "this unit is not yours any more (it expired and was re-issued, or was already "
            "submitted or released)",
            status=409,
        )
    if Contribution.objects.filter(unit=owner, status=Contribution.Status.PENDING).exists():
        raise ContributionError("this unit is being checked already", status=409)
    done = set(Sample.objects.filter(job=lease.job).values_list("index", flat=True))
    expected = [i for i in range(lease.start, lease.end) if i not in done]
    if not isinstance(samples, list) or sorted(_index(s) for s in samples) != expected:
        raise ContributionError(f"submit exactly the unit's samples: {expected}", status=400)
    limit = lease.job.max_new_tokens
    clean = []
    for sample in samples:
        ids, finished = sample.get("token_ids"), sample.get("finished")
        if not isinstance(ids, list) or not all(type(t) is int for t in ids) or len(ids) > limit:
            raise ContributionError(
                f"sample {_index(sample)}: token_ids must be at most {limit} integers", status=400
            )
        if not isinstance(finished, bool):
            raise ContributionError(
                f"sample {_index(sample)}: finished must be true or false", status=400
            )
        clean.append({"index": _index(sample), "token_ids": ids, "finished": finished})
    contribution = Contribution.objects.create(
        contributor=contributor, job=lease.job, unit=owner, samples=clean
    )
    # A fresh lease for the check: the worker may take a while to get to it.
    JobBatch.objects.filter(pk=lease.pk, owner=owner).update(
        expires_at=timezone.now() + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    )
    from allthepatents.celery import task_send
    from generation.tasks import contribution_verify_task

    try:
        task_send(contribution_verify_task, args=[contribution.pk])
    except Exception as exc:  # kombu raises many types for a dead broker
        _contribution_finish(contribution, refused=f"the site's task broker is down: {exc}")
        raise ContributionError(
            "the site cannot check submissions now; submit again later", status=503
        ) from exc
    return contribution


def _contribution_finish(contribution: Contribution, *, refused: str = "", result=None) -> None:
    contribution.status = Contribution.Status.REFUSED if refused else Contribution.Status.ACCEPTED
    contribution.error = refused
    contribution.result = result or {}
    contribution.finished_at = timezone.now()
    contribution.save(update_fields=["status", "error", "result", "finished_at"])


def contribution_verify(*, contribution_id: int) -> Contribution | None:
    """The worker's half: proves every sample under the job's model (fp32) and, if all
    pass, records them through the usual parser and gate, the unit's lease deleted in the
    same transaction. All or nothing. Returns quietly if the row is gone."""
    contribution = (
        Contribution.objects.select_related("job__generator", "contributor")
        .filter(pk=contribution_id, status=Contribution.Status.PENDING)
        .first()
    )
    if contribution is None:
        return None
    job, contributor = contribution.job, contribution.contributor
    samples = sorted(contribution.samples, key=lambda s: s["index"])
    indexes = [s["index"] for s in samples]
    prompts, seeds, modes = job_prompts(job=job, indexes=indexes)
    checker = _checker(job)
    params = SamplingParams(**job.sampling_params())
    proofs = samples_proof_check(
        backend=checker,
        prompts=prompts,
        samples=[(s["token_ids"], s["finished"]) for s in samples],
        params=params,
    )
    outputs = []
    for sample, proof in zip(samples, proofs, strict=True):
        if not proof.ok:
            _contribution_finish(
                contribution,
                refused=f"sample {sample['index']} fails the proof of sampling: token "
                f"{proof.first_violation} could not have been drawn from "
                f"{job.generator.model_id} with these settings",
            )
            return contribution
        ids = sample["token_ids"]
        text = checker.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        outputs.append(
            GenerationOutput(text, len(ids) + int(sample["finished"]), sample["finished"], ids)
        )
    provenance_base = {
        "generator_model": job.generator.model_id,
        "generator_revision": job.generator.revision,
        "sampling_params": job.sampling_params(),
        "contributor": contributor.name,
    }
    with transaction.atomic():
        # The lease goes in the same transaction: it must still be this unit's (not run out
        # and re-issued meanwhile), and a second submission then finds nothing.
        taken = JobBatch.objects.filter(owner=contribution.unit).delete()[0]
        if not taken:
            transaction.set_rollback(True)
            refused = "the unit's lease ran out before it was checked, and it was re-issued"
        else:
            refused = ""
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
                    indexes, modes, seeds, prompts, outputs, strict=True
                )
            ]
            job_counters_refresh(job)
    if refused:
        _contribution_finish(contribution, refused=refused)
        return contribution
    job_finish_if_complete(job=job)
    _contribution_finish(
        contribution,
        result={
            "recorded": len(recorded),
            "published": [s.patent.public_id for s in recorded if s.patent_id],
            "rejected": {str(s.index): s.reasons for s in recorded if not s.patent_id},
        },
    )
    return contribution


def contribution_status(*, contributor: Contributor, contribution_id: int) -> dict:
    row = Contribution.objects.filter(pk=contribution_id, contributor=contributor).first()
    if row is None:
        raise ContributionError("no such submission of yours", status=404)
    return {"contribution": row.pk, "status": row.status, "error": row.error, **row.result}


def _index(sample) -> int:
    try:
        return int(sample["index"])
    except (TypeError, KeyError, ValueError):
        raise ContributionError("each sample needs an integer index", status=400) from None
