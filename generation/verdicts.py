"""Examiners' verdicts on generated inventions: writes and reads, and the figures /stats/
shows from them (shares with 95 % Wilson intervals, CPU-seconds per relevant invention)."""

import math
from collections.abc import Iterator

from django.db import transaction
from django.db.models import Count, Q

from generation.models import ExaminerVerdict
from patents.models import Patent

REVIEWERS_GROUP = "Reviewers"
NOTE_MAX_CHARS = 2000


class VerdictError(ValueError):
    """A verdict that cannot be recorded; the message says why."""


def user_is_reviewer(user) -> bool:
    return bool(
        user
        and user.is_authenticated
        and user.is_active
        and user.groups.filter(name=REVIEWERS_GROUP).exists()
    )


def verdict_set(*, patent: Patent, reviewer, verdict: str, note: str = "") -> ExaminerVerdict:
    """Records (or changes) ``reviewer``'s verdict on a published generated invention."""
    if not user_is_reviewer(reviewer):
        raise VerdictError("only members of the Reviewers group can give verdicts")
    if verdict not in ExaminerVerdict.Kind.values:
        raise VerdictError(f"a verdict is one of {', '.join(ExaminerVerdict.Kind.values)}")
    if patent.origin != Patent.Origin.GENERATED or patent.status != Patent.Status.PUBLISHED:
        raise VerdictError("verdicts are for published generated inventions")
    note = (note or "").strip()
    if len(note) > NOTE_MAX_CHARS:
        raise VerdictError(f"a note has at most {NOTE_MAX_CHARS} characters")
    with transaction.atomic():
        row, _ = ExaminerVerdict.objects.update_or_create(
            patent=patent, reviewer=reviewer, defaults={"verdict": verdict, "note": note}
        )
    return row


def verdict_of(*, patent: Patent, reviewer) -> ExaminerVerdict | None:
    if not getattr(reviewer, "is_authenticated", False):
        return None
    return ExaminerVerdict.objects.filter(patent=patent, reviewer=reviewer).first()


def verdicts_of_reviewer(*, reviewer, limit: int = 500) -> list[ExaminerVerdict]:
    return list(ExaminerVerdict.objects.filter(reviewer=reviewer).select_related("patent")[:limit])


def _verdict_row(v: ExaminerVerdict) -> dict:
    return {
        "public_id": v.patent.public_id,
        "generator_model": v.patent.generator_model,
        "mode": v.patent.mode,
        "verdict": v.verdict,
        "note": v.note,
        "updated_at": v.updated_at.isoformat(),
    }


def verdicts_export() -> Iterator[dict]:
    """Every verdict in the order given, without who gave it (reviewers are counted, not
    named); read a chunk at a time, so that a CSV of all of them streams."""
    rows = ExaminerVerdict.objects.select_related("patent").order_by("id")
    for v in rows.iterator(chunk_size=2000):
        yield _verdict_row(v)


def verdicts_export_page(*, after: int = 0, limit: int) -> tuple[list[dict], int | None]:
    """Up to ``limit`` verdicts given after the one numbered ``after`` (0: from the first),
    and the number to ask after for the next page (None: these were the last). A changed
    verdict keeps its place; its ``updated_at`` says it changed."""
    rows = list(
        ExaminerVerdict.objects.select_related("patent")
        .filter(id__gt=after)
        .order_by("id")[: limit + 1]
    )
    following = rows[limit - 1].id if len(rows) > limit else None
    return [_verdict_row(v) for v in rows[:limit]], following


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a share: honest at small n and at 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def stats_verdicts(*, cost_by_model: list[dict]) -> list[dict]:
    """Per generator model and mode: inventions judged, each kind's share with its 95 %
    interval, and CPU-seconds per invention judged relevant (CPU-seconds per published
    invention, from ``cost_by_model``, divided by the share judged relevant). An invention
    with verdicts from several reviewers counts once per verdict."""
    kinds = ExaminerVerdict.Kind
    rows = (
        ExaminerVerdict.objects.values("patent__generator_model", "patent__mode")
        .annotate(
            n=Count("id"),
            inventions=Count("patent", distinct=True),
            **{k.value: Count("id", filter=Q(verdict=k.value)) for k in kinds},
        )
        .order_by("patent__generator_model", "patent__mode")
    )
    seconds = {(c["model"], c["mode"]): c.get("seconds_per_invention") for c in cost_by_model}
    out = []
    for r in rows:
        n = r["n"]
        shares = {}
        for k in kinds:
            low, high = wilson_interval(r[k.value], n)
            shares[k.value] = {
                "label": k.label,
                "count": r[k.value],
                "share": r[k.value] / n if n else 0.0,
                "low": low,
                "high": high,
            }
        per_published = seconds.get((r["patent__generator_model"], r["patent__mode"]))
        relevant = shares[kinds.RELEVANT.value]["share"]
        out.append(
            {
                "model": r["patent__generator_model"],
                "mode": r["patent__mode"],
                "verdicts": n,
                "inventions": r["inventions"],
                "shares": shares,
                "seconds_per_relevant": (
                    round(per_published / relevant, 1) if per_published and relevant else None
                ),
            }
        )
    return out
