"""Reads for patents."""

import datetime as dt  # noqa: F401  (used in annotations)
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Prefetch, QuerySet
from django.utils import timezone

from patents.models import Claim, Patent


def patents_visible() -> QuerySet[Patent]:
    return Patent.objects.filter(status=Patent.Status.PUBLISHED)


def patents_latest(*, origin: str = Patent.Origin.GENERATED, limit: int = 10) -> list[Patent]:
    return list(patents_visible().filter(origin=origin).order_by("-published_at", "-id")[:limit])


# How an invention's nearest neighbours are found: the search app registers its index
# (search/apps.py), so the patents floor shows them without importing search.
_neighbours_finder: Callable[..., list[Patent]] | None = None


def patent_neighbours_finder_register(fn: Callable[..., list[Patent]]) -> None:
    global _neighbours_finder
    _neighbours_finder = fn


def patent_neighbours(patent: Patent, *, k: int, origin: str) -> list[Patent]:
    """The ``k`` nearest published patents of ``origin``; empty without a finder."""
    if _neighbours_finder is None:
        return []
    return _neighbours_finder(patent, k=k, origin=origin)


def patent_get(*, public_id: str, with_claims: bool = True) -> Patent | None:
    found = Patent.objects.filter(public_id=public_id)
    if with_claims:
        found = found.prefetch_related(
            Prefetch("claims", queryset=Claim.objects.order_by("number"))
        )
    return found.first()


@dataclass(frozen=True)
class ClaimsPage:
    """One page of a patent's claims, and which page each claim number is on (for the
    links of dependent claims to claims on other pages)."""

    claims: list[Claim]
    page: int
    pages: int
    total: int
    page_of: dict[int, int]


def patent_claims_page(*, patent: Patent, page: int = 1) -> ClaimsPage:
    """Claims ``PATENT_CLAIMS_PER_PAGE`` at a time: a record of a thousand long claims is
    not one 40 MB page. A page past the end is the last page."""
    per_page = settings.PATENT_CLAIMS_PER_PAGE
    numbers = list(patent.claims.order_by("number").values_list("number", flat=True))
    pages = max(1, -(-len(numbers) // per_page))
    page = min(max(page, 1), pages)
    page_of = {number: i // per_page + 1 for i, number in enumerate(numbers)}
    start = (page - 1) * per_page
    claims = list(patent.claims.order_by("number")[start : start + per_page])
    return ClaimsPage(claims=claims, page=page, pages=pages, total=len(numbers), page_of=page_of)


def patent_counts() -> dict:
    visible = patents_visible()
    return {
        "generated": visible.filter(origin=Patent.Origin.GENERATED).count(),
        "reference": visible.filter(origin=Patent.Origin.REFERENCE).count(),
    }


def patents_browse(
    *,
    origin: str = Patent.Origin.GENERATED,
    generator: str = "",
    mode: str = "",
    on: dt.date | None = None,
):
    """Newest first. References by their own publication date (undated ones last, and never
    matched by a date)."""
    qs = patents_visible().filter(origin=origin)
    if generator:
        qs = qs.filter(generator_model=generator)
    if mode:
        qs = qs.filter(mode=mode)
    if origin == Patent.Origin.REFERENCE:
        if on:
            qs = qs.filter(source_date=on)
        return qs.order_by(F("source_date").desc(nulls_last=True), "-id")
    if on:
        qs = qs.filter(published_at__date=on)
    return qs.order_by("-published_at", "-id")


def patent_random_public_id() -> str | None:
    qs = patents_visible().filter(origin=Patent.Origin.GENERATED)
    count = qs.count()
    if not count:
        return None
    return qs.order_by("id").values_list("public_id", flat=True)[secrets.randbelow(count)]


def generator_models_published() -> list[str]:
    return list(
        patents_visible()
        .filter(origin=Patent.Origin.GENERATED)
        .exclude(generator_model="")
        .values_list("generator_model", flat=True)
        .distinct()
        .order_by("generator_model")
    )


def generated_today_count() -> int:
    today = timezone.now().date()
    return (
        patents_visible().filter(origin=Patent.Origin.GENERATED, published_at__date=today).count()
    )


def dumps_list(folder) -> list[dict]:
    out = []
    if not folder.exists():
        return out
    for manifest_path in sorted(folder.glob("*.manifest.json"), reverse=True):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if (folder / manifest.get("file", "")).exists():
            manifest["size"] = (folder / manifest["file"]).stat().st_size
            out.append(manifest)
    return out
