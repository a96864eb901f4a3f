"""Contributors generate on their own machines (#18): they lease a batch of a job open to
them over HTTP, generate it with the same backend code as our workers, and submit the
token ids they sampled. Nothing they send is trusted: every sample must pass the proof of
sampling (generation/proof.py) under the job's model and settings, then the same parser,
gate and near-copy checks as our own samples.

A work unit is a JobBatch lease whose owner is ``contributor:<id>:<nonce>``: the nonce is
the unit's id. The contributor renews it while generating (``work_unit_renew``); a lease
that runs out is re-issued like our workers' (a late submission then finds its unit gone
and is refused, and nothing of the re-issued one is lost). A submitted unit is held for
its check (``CONTRIBUTOR_CHECK_HOLD_SECONDS``); a refused one goes straight back to the
pool, and the refusal is a strike against the token. A unit is recorded once (its lease is
deleted in the same transaction, and (job, index) is unique).
"""

import hashlib
import json
import logging
import secrets
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from allthepatents.clock import db_now
from generation.backends import GenerationOutput, TransformersBackend
from generation.batches import batch_record, job_claim, job_finish_if_complete, job_prompts
from generation.models import Contribution, Contributor, GenerationJob, JobBatch, Sample
from generation.names import name_is_reserved, name_skeleton
from generation.proof import samples_proof_check
from generation.sampling import SamplingParams
from generation.selectors import job_model, model_public_name
from generation.vocabulary import TASK_VERIFY_CONTRIBUTION

logger = logging.getLogger(__name__)
Status = GenerationJob.Status
TOKEN_PREFIX = "atp_"  # noqa: S105 (a prefix that marks tokens, not a secret)


class ContributionError(Exception):
    """A refusal, and its kind: invalid, not_found, conflict, too_many or unavailable. The
    views choose the HTTP status for each (generation/views.py)."""

    KINDS = ("invalid", "not_found", "conflict", "too_many", "unavailable")

    def __init__(self, message: str, *, kind: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown refusal kind {kind!r}")
        super().__init__(message)
        self.kind = kind


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def contributor_create(*, name: str, signed_up: bool = False) -> tuple[Contributor, str]:
    """A contributor and their API token. The token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    name = name.strip()
    contributor = Contributor.objects.create(
        name=name,
        name_skeleton=name_skeleton(name) or f"#{secrets.token_hex(8)}",
        token_hash=_token_hash(token),
        token_prefix=token[:10],
        signed_up=signed_up,
    )
    return contributor, token


SIGNUP_NAME_MIN, SIGNUP_NAME_MAX = 3, 60


def contributor_sign_up(*, name: str) -> tuple[Contributor, str]:
    """Public sign-up (``CONTRIBUTOR_SIGNUP``): a contributor under a public name, or a
    ContributionError (400 a bad name, 409 a taken one, 404 sign-up off). The name is shown
    on the credits page, so it is plain printable text of a sane length, neither reserved
    nor a look-alike of a name already taken (``generation.names``)."""
    if not settings.CONTRIBUTOR_SIGNUP:
        raise ContributionError("public sign-up is off; ask an admin for a token", kind="not_found")
    name = " ".join((name or "").split())
    if not SIGNUP_NAME_MIN <= len(name) <= SIGNUP_NAME_MAX or not name.isprintable():
        raise ContributionError(
            f"a name of {SIGNUP_NAME_MIN} to {SIGNUP_NAME_MAX} printable characters", kind="invalid"
        )
    if name_is_reserved(name):
        raise ContributionError("that name is reserved; choose another", kind="invalid")
    if Contributor.objects.filter(name_skeleton=name_skeleton(name)).exists():
        raise ContributionError(
            "that name is taken (or looks like one that is, to a reader)", kind="conflict"
        )
    try:
        with transaction.atomic():
            return contributor_create(name=name, signed_up=True)
    except IntegrityError:  # the same name, a moment earlier
        raise ContributionError("that name is taken", kind="conflict") from None


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
    when there is none. Refused past CONTRIBUTOR_MAX_LEASES units held at once, however
    many requests arrive together: the count and the claim run in one transaction that
    first writes the contributor's row, which PostgreSQL locks and SQLite serialises."""
    with transaction.atomic():
        Contributor.objects.filter(pk=contributor.pk).update(last_lease_at=timezone.now())
        held = JobBatch.objects.filter(
            owner__startswith=_owner_prefix(contributor), expires_at__gt=db_now()
        ).count()
        if held >= settings.CONTRIBUTOR_MAX_LEASES:
            raise ContributionError(
                f"{held} units are leased to you already; submit or release one first",
                kind="too_many",
            )
        jobs = GenerationJob.objects.filter(
            open_to_contributors=True, status__in=[Status.QUEUED, Status.RUNNING]
        ).select_related("generator")
        for job in jobs.order_by("created_at"):
            unit_id = uuid.uuid4().hex
            claim = job_claim(job_id=job.pk, token=_owner_prefix(contributor) + unit_id)
            if claim:
                return _work_unit(job=job, unit_id=unit_id, claim=claim)
    return None


def _work_unit(*, job: GenerationJob, unit_id: str, claim) -> dict:
    indexes = list(claim.indexes)
    prompts, seeds, modes = job_prompts(job=job, indexes=indexes)
    model = job_model(job=job)
    return {
        "unit": unit_id,
        "job": job.pk,
        "model": model.name,
        "revision": model.revision,
        "prompt_format": job.generator.prompt_format,
        "sampling": {**job.sampling_params()},
        # The arithmetic the site proves in: sample in it (contributor_precision).
        "precision": proof_precision(settings.GENERATION_QUANTIZE),
        "samples": [
            {"index": i, "prompt": p, "seed": s, "mode": m}
            for i, p, s, m in zip(indexes, prompts, seeds, modes, strict=True)
        ],
        "expires_at": claim.expires_at.isoformat(),
        # Renew (/api/contribute/renew) well within this while generating.
        "lease_seconds": settings.GENERATION_LEASE_SECONDS,
    }


def work_unit_renew(*, contributor: Contributor, unit_id: str) -> str:
    """Extends a unit's lease while the contributor generates it (as our workers renew
    theirs); the new expiry, or a ContributionError saying why not."""
    owner = _owner_prefix(contributor) + str(unit_id)
    if Contribution.objects.filter(unit=owner, status=Contribution.Status.PENDING).exists():
        raise ContributionError("this unit is submitted and waits for its check", kind="conflict")
    now = db_now()
    expires = now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    renewed = JobBatch.objects.filter(owner=owner, expires_at__gt=now).update(expires_at=expires)
    if not renewed:
        raise ContributionError(_UNIT_GONE, kind="conflict")
    return expires.isoformat()


_UNIT_GONE = (
    "this unit is not yours any more (its lease ran out and it may have been re-issued, "
    "or it was already submitted, refused or released)"
)


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
    model = job_model(job=job)
    precision = proof_precision(settings.GENERATION_QUANTIZE)
    key = (model.source, model.revision, precision)
    with _checkers_lock:
        if key not in _checkers:
            _checkers.clear()
            _checkers[key] = TransformersBackend(
                model.source, revision=model.revision, quantize=precision
            )
        return _checkers[key]


def proof_precision(choice: str) -> str:
    """The checker's precision for GENERATION_QUANTIZE ``choice``. With ``auto``: bf16
    where the CPU has AMX (its bf16 products run the proof's long matrices at about
    1.1 T op/s a core); elsewhere int8 with a scale per row (``int8-rows``), also on CPUs
    with AVX512-BF16 but no AMX, where it proved 16 samples of 256 tokens in 5.2-6.0 s
    against bf16's 7.2-7.7 s (bench/README.md). An explicit int8 is per-row int8 too (a
    scale per tensor of thousands of positions blurs the rest); ``int8-bf16`` (a worker's
    int8 weights beside a bf16 cache), ``bf16-kv16`` and ``bf16-kv8`` are checked in bf16,
    ``int8-kv16`` and ``int8-kv8`` in per-row int8; bf16 and none stand."""
    from allthepatents.cpu import cpu_flags

    if choice == "auto":
        return "bf16" if "amx_bf16" in cpu_flags() else "int8-rows"
    return {
        "int8": "int8-rows",
        "int8-kv16": "int8-rows",
        "int8-kv8": "int8-rows",
        "int8-bf16": "bf16",
        "bf16-kv16": "bf16",
        "bf16-kv8": "bf16",
    }.get(choice, choice)


def contributor_precision(wanted: str, *, device: str = "cpu") -> str:
    """The precision a contributor samples a unit in: the one the site checks in (the
    unit's ``precision``), so that both sides do the same arithmetic and a genuine sample
    agrees with the draw almost everywhere. bf16 where this CPU lacks it natively (hours
    of emulation) becomes int8 with a scale per row, which the bf16 checker accepted as
    well (bench/proof_binding.py). Never fbgemm's dynamic int8: its scale per tensor ties
    a row's arithmetic to the rest of its batch (largest excess 0.25 against the per-row
    checker, where per-row samples reach 0.025)."""
    from allthepatents.cpu import cpu_has_native_bf16

    if device != "cpu":
        return "none"  # half precision on a GPU, whatever is asked
    if wanted == "bf16" and not cpu_has_native_bf16():
        return "int8-rows"
    return wanted if wanted in ("none", "bf16", "int8-rows") else "none"


def contribution_receive(*, contributor: Contributor, unit_id: str, samples) -> Contribution:
    """Takes a unit's samples (``[{"index", "token_ids", "finished"}]``, one per sample of
    the unit) for a worker to prove and record (``contribution_verify``). Refuses at once
    what needs no model: a unit that is not the contributor's any more, malformed data
    (the lease is not renewed), and samples that are not whole (a strike, and the unit goes
    back to the pool). A unit taken holds its lease until its check."""
    owner = _owner_prefix(contributor) + str(unit_id)
    lease = JobBatch.objects.filter(owner=owner).select_related("job").first()
    now = db_now()
    if lease is None or lease.expires_at < now:
        raise ContributionError(_UNIT_GONE, kind="conflict")
    if Contribution.objects.filter(unit=owner, status=Contribution.Status.PENDING).exists():
        raise ContributionError("this unit is being checked already", kind="conflict")
    done = set(Sample.objects.filter(job=lease.job).values_list("index", flat=True))
    expected = [i for i in range(lease.start, lease.end) if i not in done]
    if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
        raise ContributionError(f"submit a list of the unit's samples: {expected}", kind="invalid")
    if sorted(_index(s) for s in samples) != expected:
        raise ContributionError(f"submit exactly the unit's samples: {expected}", kind="invalid")
    limit = lease.job.max_new_tokens
    clean = []
    for sample in samples:
        ids, finished = sample.get("token_ids"), sample.get("finished")
        if not isinstance(ids, list) or not all(type(t) is int for t in ids) or len(ids) > limit:
            raise ContributionError(
                f"sample {_index(sample)}: token_ids must be at most {limit} integers",
                kind="invalid",
            )
        if not isinstance(finished, bool):
            raise ContributionError(
                f"sample {_index(sample)}: finished must be true or false", kind="invalid"
            )
        clean.append({"index": _index(sample), "token_ids": ids, "finished": finished})
    short = [s["index"] for s in clean if not s["finished"] and len(s["token_ids"]) < limit]
    if short:
        reason = (
            f"samples {short} were cut short: a sample ends with the end token "
            f"(finished: true) or is exactly the unit's budget of {limit} tokens"
        )
        _unit_refuse(contributor=contributor, owner=owner, reason=reason)
        raise ContributionError(reason + "; the unit went back to the pool", kind="invalid")
    contribution = Contribution.objects.create(
        contributor=contributor, job=lease.job, unit=owner, samples=clean
    )
    # Held for the check: it may wait behind the site's own work for a while.
    JobBatch.objects.filter(pk=lease.pk, owner=owner).update(
        expires_at=now + timedelta(seconds=settings.CONTRIBUTOR_CHECK_HOLD_SECONDS)
    )
    from allthepatents.celery import task_send

    try:
        task_send(TASK_VERIFY_CONTRIBUTION, args=[contribution.pk])
    except Exception as exc:  # kombu raises many types for a dead broker
        # Not the contributor's doing: no strike, and the unit stays theirs to submit again.
        Contribution.objects.filter(pk=contribution.pk).delete()
        JobBatch.objects.filter(pk=lease.pk, owner=owner).update(expires_at=lease.expires_at)
        raise ContributionError(
            "the site cannot check submissions now (its task broker is down); submit again later",
            kind="unavailable",
        ) from exc
    return contribution


def contributions_requeue() -> list[int]:
    """Sends every pending check to the workers again (a worker starting: one killed in the
    middle of a check left its submission pending). A check that runs twice records once."""
    from allthepatents.celery import task_send

    pending = list(
        Contribution.objects.filter(status=Contribution.Status.PENDING).values_list("pk", flat=True)
    )
    for pk in pending:
        task_send(TASK_VERIFY_CONTRIBUTION, args=[pk])
    return pending


def _unit_refuse(*, contributor: Contributor, owner: str, reason: str) -> None:
    """A refused unit goes back to the pool at once, and counts as a strike against the
    token: CONTRIBUTOR_MAX_STRIKES in a row suspend it."""
    JobBatch.objects.filter(owner=owner).delete()
    contributor_strike(contributor=contributor, reason=reason)


def contributor_strike(*, contributor: Contributor, reason: str) -> Contributor:
    Contributor.objects.filter(pk=contributor.pk).update(strikes=F("strikes") + 1)
    suspended = Contributor.objects.filter(
        pk=contributor.pk, active=True, strikes__gte=settings.CONTRIBUTOR_MAX_STRIKES
    ).update(
        active=False,
        revoked_at=timezone.now(),
        suspended_reason=f"suspended after {settings.CONTRIBUTOR_MAX_STRIKES} refused units "
        f"in a row; the last: {reason}"[:300],
    )
    if suspended:
        logger.warning("contributor %s suspended: %s", contributor.pk, reason)
    contributor.refresh_from_db()
    return contributor


def _contribution_finish(contribution: Contribution, *, refused: str = "", result=None) -> bool:
    """Sets the outcome once (a check that ran twice finds it set). A refused unit keeps
    only a summary of what was sent: whole samples of junk are not worth storing."""
    fields = {
        "status": Contribution.Status.REFUSED if refused else Contribution.Status.ACCEPTED,
        "error": refused,
        "result": result or {},
        "finished_at": timezone.now(),
    }
    if refused:
        fields["samples"] = [_sample_summary(s) for s in contribution.samples]
    return bool(
        Contribution.objects.filter(pk=contribution.pk, status=Contribution.Status.PENDING).update(
            **fields
        )
    )


def _sample_summary(sample: dict) -> dict:
    ids = sample.get("token_ids") or []
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
    return {
        "index": sample.get("index"),
        "tokens": len(ids),
        "finished": sample.get("finished"),
        "sha256": digest,
    }


def contribution_verify(*, contribution_id: int) -> Contribution | None:
    """The worker's half: proves every sample under the job's model and, if all pass,
    records them through the usual parser and gate, the unit's lease deleted and the
    outcome set in the same transaction. All or nothing. Returns quietly if the row is gone
    or already decided (a check sent twice)."""
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
    model = job_model(job=job)
    params = SamplingParams(**job.sampling_params())
    proofs = samples_proof_check(
        backend=checker,
        prompts=prompts,
        seeds=seeds,
        samples=[(s["token_ids"], s["finished"]) for s in samples],
        params=params,
    )
    outputs = []
    for sample, proof in zip(samples, proofs, strict=True):
        if not proof.ok:
            reason = (
                f"sample {sample['index']} fails the proof of sampling: {proof.reason} "
                f"(model {model.name}, the unit's seed and sampling settings)"
            )
            if _contribution_finish(contribution, refused=reason):
                _unit_refuse(contributor=contributor, owner=contribution.unit, reason=reason)
            contribution.refresh_from_db()
            return contribution
        ids = sample["token_ids"]
        text = checker.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        outputs.append(
            GenerationOutput(text, len(ids) + int(sample["finished"]), sample["finished"], ids)
        )
    if not Contributor.objects.filter(pk=contributor.pk, active=True).exists():
        # Revoked or suspended after it submitted: nothing recorded, the unit back in the
        # pool, no strike (not a refusal of its samples).
        if _contribution_finish(
            contribution, refused="the token was revoked or suspended before this unit was checked"
        ):
            JobBatch.objects.filter(owner=contribution.unit).delete()
        contribution.refresh_from_db()
        return contribution
    provenance_base = {
        "generator_model": model_public_name(model.name),
        "generator_revision": checker.revision_loaded or model.revision,
        "sampling_params": job.sampling_params(),
        "contributor": contributor.name,
    }
    refused = ""
    with transaction.atomic():
        # The lease goes in the same transaction: it must still be this unit's (not run out
        # and re-issued meanwhile), and a second submission then finds nothing.
        taken = JobBatch.objects.filter(owner=contribution.unit).delete()[0]
        if not taken:
            refused = "the unit's lease ran out before it was checked, and it was re-issued"
        else:
            recorded = batch_record(
                job=job,
                rows=zip(indexes, modes, seeds, prompts, outputs, strict=True),
                worker=f"contributor:{contributor.name}",
                contributor=contributor,
                provenance_base=provenance_base,
            )
            result = {
                "recorded": len(recorded),
                "published": [s.patent.public_id for s in recorded if s.patent_id],
                "rejected": {str(s.index): s.reasons for s in recorded if not s.patent_id},
            }
            if not _contribution_finish(contribution, result=result):
                transaction.set_rollback(True)  # decided meanwhile by a second check
            else:
                Contributor.objects.filter(pk=contributor.pk).update(strikes=0)
    if refused:
        _contribution_finish(contribution, refused=refused)
    else:
        job_finish_if_complete(job=job)
    contribution.refresh_from_db()
    return contribution


def contribution_status(*, contributor: Contributor, contribution_id: int) -> dict:
    row = Contribution.objects.filter(pk=contribution_id, contributor=contributor).first()
    if row is None:
        raise ContributionError("no such submission of yours", kind="not_found")
    return {"contribution": row.pk, "status": row.status, "error": row.error, **row.result}


def _index(sample) -> int:
    index = sample.get("index") if isinstance(sample, dict) else None
    if type(index) is not int:  # not "0", 1.7 or true
        raise ContributionError("each sample needs an integer index", kind="invalid")
    return index
