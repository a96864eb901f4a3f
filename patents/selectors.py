"""Reads for patents."""

import datetime as dt
import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Prefetch, QuerySet, Sum
from django.utils import timezone

from patents.models import Claim, LedgerEntry, Patent, PatentTally, ReferenceAreaTally
from patents.text import cpc_subclasses


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
    """Published patents by origin, from the tallies the writes keep (a few rows)."""
    return {
        origin: patents_browse_count(origin=origin)
        for origin in (Patent.Origin.GENERATED, Patent.Origin.REFERENCE)
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
        # Undated last: SQLite's descending order puts NULLs last already, and an explicit
        # NULLS LAST would keep it off its index (PostgreSQL has one in this order).
        by_date = F("source_date").desc(nulls_last=connection.vendor == "postgresql" or None)
        return qs.order_by(by_date, "-id")
    if on:
        qs = qs.filter(published_at__range=_day_bounds(on))
    return qs.order_by("-published_at", "-id")


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The first and last instant of ``day`` in the site's time zone: a range on the column
    itself, which its index serves, where ``__date`` casts every row's value first."""
    start = timezone.make_aware(dt.datetime.combine(day, dt.time.min))
    end = timezone.make_aware(dt.datetime.combine(day, dt.time.max))
    return start, end


def patents_in_publication_order() -> QuerySet[Patent]:
    """Published inventions, oldest first."""
    return patents_visible().filter(origin=Patent.Origin.GENERATED).order_by("published_at", "id")


def patents_in_ledger_order(
    *,
    after: int = 0,
    through: int,
    claims: bool = False,
    fields: tuple[str, ...] = (),
    chunk: int = 1000,
) -> Iterator[Patent]:
    """The generated inventions still published whose publication entry's id is in
    (``after``, ``through``], in the entries' order (the dumps' order, and the sitemap's
    files), with their claims where asked, or only ``fields`` where given: ``chunk``
    entries at a time, then their inventions by key alone (given the origin and status
    too, SQLite walked their index through every invention for each chunk: 0.4 s a chunk
    at a million)."""
    while True:
        entries = list(
            LedgerEntry.objects.filter(id__gt=after, id__lte=through, kind=LedgerEntry.Kind.PUBLISH)
            .order_by("id")
            .values_list("id", "patent_id")[:chunk]
        )
        if not entries:
            return
        by_id = _inventions_published(
            [patent_id for _, patent_id in entries], claims=claims, fields=fields
        )
        yield from (by_id[p] for _, p in entries if p in by_id)
        if len(entries) < chunk:
            return
        after = entries[-1][0]


def ledger_entries_page(*, after: int, limit: int) -> tuple[list[LedgerEntry], dict, int | None]:
    """The ledger's entries after the id ``after``, ``limit`` of them in the chain's order,
    the inventions still published of their publication entries (by patent key, with their
    claims), and the id to continue after (None: this page reached the head). Three
    queries whatever the ledger's length: the entries by key, then their inventions."""
    entries = list(LedgerEntry.objects.filter(id__gt=after).order_by("id")[: limit + 1])
    following = entries[limit - 1].pk if len(entries) > limit else None
    entries = entries[:limit]
    published = [e.patent_id for e in entries if e.kind == LedgerEntry.Kind.PUBLISH]
    return entries, _inventions_published(published, claims=True), following


def _inventions_published(
    patent_ids: list[int], *, claims: bool = False, fields: tuple[str, ...] = ()
) -> dict[int, Patent]:
    """Those of ``patent_ids`` that are generated inventions still published, by key: read
    by key alone (the origin and status are checked here, not asked of the database)."""
    patents = Patent.objects.filter(pk__in=patent_ids)
    if fields:
        patents = patents.only("origin", "status", *fields)
    if claims:
        patents = patents.prefetch_related("claims")
    return {
        p.pk: p
        for p in patents
        if p.origin == Patent.Origin.GENERATED and p.status == Patent.Status.PUBLISHED
    }


def ledger_id_span() -> tuple[int, int]:
    """The ledger's first and last entry ids ((0, 0) when empty): entries are never deleted,
    so the first stays where it is."""
    ids = LedgerEntry.objects.values_list("id", flat=True)
    return ids.order_by("id").first() or 0, ids.order_by("-id").first() or 0


def patent_latest_published_at() -> dt.datetime | None:
    # In the browse index's own order: PostgreSQL answered MAX() along published_at's
    # single-column index instead, through every reference imported later (0.2 s).
    return (
        patents_in_publication_order()
        .order_by("-published_at", "-id")
        .values_list("published_at", flat=True)
        .first()
    )


# Draws of a ledger position before the walk along the browse index: each miss (a withdrawal
# entry, a withdrawn invention, a number a rolled-back append used) is a few percent.
RANDOM_LEDGER_DRAWS = 16


def patent_random_public_id() -> str | None:
    """A published invention drawn uniformly. Each has exactly one publication entry in the
    ledger, whose ids run densely: a number drawn between the first and the last id is one
    primary-key lookup, kept when it is a publication of an invention still published. Only
    when many draws miss (a ledger mostly of withdrawals) does it skip a drawn count of keys
    along the browse index instead, which grows with the inventions (45 ms at a million)."""
    first, last = ledger_id_span()
    if not last:
        return None
    for _ in range(RANDOM_LEDGER_DRAWS):
        drawn = first + secrets.randbelow(last - first + 1)
        found = (
            LedgerEntry.objects.filter(
                id=drawn,
                kind=LedgerEntry.Kind.PUBLISH,
                patent__status=Patent.Status.PUBLISHED,
            )
            .values_list("patent__public_id", flat=True)
            .first()
        )
        if found is not None:
            return found
    qs = patents_visible().filter(origin=Patent.Origin.GENERATED)
    total = qs.count()
    if not total:
        return None
    position = secrets.randbelow(total)
    keys = qs.order_by("published_at", "id").values_list("pk", flat=True)
    key = keys[position : position + 1].first()
    return Patent.objects.filter(pk=key).values_list("public_id", flat=True).first()


def patents_browse_count(*, origin: str, generator: str = "", mode: str = "") -> int:
    """What ``patents_browse`` lists without a day, counted from the tallies."""
    tallies = PatentTally.objects.filter(origin=origin)
    if generator:
        tallies = tallies.filter(generator_model=generator)
    if mode:
        tallies = tallies.filter(mode=mode)
    return max(0, tallies.aggregate(n=Sum("count"))["n"] or 0)


def patent_tallies_counted() -> list[dict]:
    """The published patents by origin, generator model and mode, counted from the patents:
    a scan of every row, what ``PatentTally`` keeps."""
    return list(
        patents_visible()
        .values("origin", "generator_model", "mode")
        .annotate(count=Count("id"))
        .order_by("origin", "generator_model", "mode")
    )


def reference_areas_counted() -> dict[str, int]:
    """The published reference patents by CPC subclass, counted from the patents (a scan
    of every reference): what ``ReferenceAreaTally`` keeps."""
    counts: Counter[str] = Counter()
    rows = (
        patents_visible()
        .filter(origin=Patent.Origin.REFERENCE)
        .exclude(cpc_codes="")
        .values_list("cpc_codes", flat=True)
    )
    for codes in rows.iterator(chunk_size=5000):
        counts.update(cpc_subclasses(codes))
    return dict(sorted(counts.items()))


def reference_areas_kept(areas: list[str]) -> dict[str, int]:
    """The published reference patents in each of ``areas`` (CPC subclasses), as kept."""
    kept = dict(ReferenceAreaTally.objects.filter(cpc__in=areas).values_list("cpc", "count"))
    return {area: max(0, kept.get(area, 0)) for area in areas}


def patent_tallies_problems() -> list[str]:
    """Where the kept tallies differ from a count of the patents, one line each (empty:
    they agree)."""
    key = ("origin", "generator_model", "mode")
    counted = {tuple(r[k] for k in key): r["count"] for r in patent_tallies_counted()}
    kept = {tuple(r[k] for k in key): r["count"] for r in PatentTally.objects.values(*key, "count")}
    areas = dict(ReferenceAreaTally.objects.values_list("cpc", "count"))
    return _differences(
        kept,
        counted,
        lambda k: f"{k[0]} {k[1] or '(no model)'} {k[2] or '(no mode)'}",
    ) + _differences(areas, reference_areas_counted(), lambda area: f"reference patents in {area}")


def _differences(kept: dict, counted: dict, name) -> list[str]:
    """A line for each key whose kept count is not the counted one (absent: 0)."""
    return [
        f"{name(k)}: {kept.get(k, 0)} kept, {counted.get(k, 0)} published"
        for k in sorted(counted.keys() | kept.keys())
        if kept.get(k, 0) != counted.get(k, 0)
    ]


def generator_models(patents: QuerySet[Patent]) -> list[str]:
    """The generator models among ``patents``. Each distinct model of all patents is one
    step along the generator_model index (the only condition, so both databases keep to
    it: SQLite, given the origin too, walked every invention, 0.23 s a step), then one
    lookup of it among ``patents``; DISTINCT read every patent."""
    found: list[str] = []
    after = ""  # references have no model
    while True:
        model = (
            Patent.objects.filter(generator_model__gt=after)
            .order_by("generator_model")
            .values_list("generator_model", flat=True)
            .first()
        )
        if model is None:
            return found
        if patents.filter(generator_model=model).exists():
            found.append(model)
        after = model


def generator_models_published() -> list[str]:
    """The models of published inventions, from the tallies."""
    return list(
        PatentTally.objects.filter(origin=Patent.Origin.GENERATED, count__gt=0)
        .exclude(generator_model="")
        .order_by("generator_model")
        .values_list("generator_model", flat=True)
        .distinct()
    )


def generated_today_count() -> int:
    today = timezone.localdate()
    return (
        patents_visible()
        .filter(origin=Patent.Origin.GENERATED, published_at__range=_day_bounds(today))
        .count()
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
