"""Reads for patents."""

from django.db.models import Prefetch, QuerySet

from patents.models import Claim, Patent


def patents_visible() -> QuerySet[Patent]:
    return Patent.objects.filter(status=Patent.Status.PUBLISHED)


def patents_latest(*, origin: str = Patent.Origin.GENERATED, limit: int = 10) -> list[Patent]:
    return list(patents_visible().filter(origin=origin).order_by("-published_at", "-id")[:limit])


def patent_get(*, public_id: str) -> Patent | None:
    return (
        Patent.objects.filter(public_id=public_id)
        .prefetch_related(Prefetch("claims", queryset=Claim.objects.order_by("number")))
        .first()
    )


def patent_counts() -> dict:
    visible = patents_visible()
    return {
        "generated": visible.filter(origin=Patent.Origin.GENERATED).count(),
        "reference": visible.filter(origin=Patent.Origin.REFERENCE).count(),
    }
