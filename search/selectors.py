"""Reads for search: hybrid ranking over dense document, dense claim and keyword lists."""

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.db.models import Max, Q

from allthepatents.bulk import ids_subquery
from patents.models import Claim, Patent
from search.fulltext import KeywordUnavailable, fulltext_enabled, keyword_index_status
from search.keyword import keyword_search
from search.models import IndexedVector, StoredQuery
from search.params import SearchFilters
from search.ranking import dense_scores, hybrid_rank
from search.store import IndexUnavailable, index_for_search, manifest_read, manifest_stamp
from search.text import query_terms, snippet

logger = logging.getLogger(__name__)

CANDIDATES = 100  # per list; the depth search_eval measures fusion at


@dataclass
class SearchHit:
    patent: Patent
    score: float
    snippet: str
    matched_claim: Claim | None = None
    claim_score: float | None = None
    parent_claim: Claim | None = None  # what a dependent matched claim depends on
    dense_score: float | None = None  # cosine (document, or best claim less the margin)
    sources: dict = field(default_factory=dict)


@dataclass
class SearchResult:
    hits: list[SearchHit]
    total: int
    engine: str  # hybrid | keyword
    notice: str = ""
    terms: list[str] = field(default_factory=list)
    total_exact: bool = True  # False: at least ``total`` (a candidate list hit its depth)


def vector_owners(
    vector_ids, *, documents_only: bool = False, filters: SearchFilters | None = None
) -> dict[int, tuple[int, int | None]]:
    """FAISS id -> (patent id, claim number or None for the document vector): the one
    mapping from the index back to the database. ``filters`` narrows it to the patents
    that pass them."""
    rows = IndexedVector.objects.filter(pk__in=ids_subquery([int(i) for i in vector_ids if i >= 0]))
    if documents_only:
        rows = rows.filter(claim_number=None)
    owners = {
        pk: (pid, claim) for pk, pid, claim in rows.values_list("pk", "patent_id", "claim_number")
    }
    if filters is not None and filters.narrows and owners:
        # The owners' patents checked against the filter by id: joining the candidates to
        # every patent a broad filter keeps took 0.4 s at a million patents.
        keep = patents_passing_indexed(
            filters=filters, patent_ids=[pid for pid, _ in owners.values()]
        )
        owners = {pk: owner for pk, owner in owners.items() if owner[0] in keep}
    return owners


def patents_matching(filters: SearchFilters):
    """Published patents that pass ``filters``: the one definition both retrievals use."""
    qs = Patent.objects.filter(status=Patent.Status.PUBLISHED)
    if filters.origin in (Patent.Origin.GENERATED, Patent.Origin.REFERENCE):
        qs = qs.filter(origin=filters.origin)

    def midnight(day):
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

    generated, reference = Q(origin=Patent.Origin.GENERATED), Q(origin=Patent.Origin.REFERENCE)
    if filters.before:
        qs = qs.filter(
            (generated & Q(published_at__lt=midnight(filters.before)))
            | (reference & Q(source_date__lt=filters.before))
        )
    if filters.after:
        qs = qs.filter(
            (generated & Q(published_at__gte=midnight(filters.after)))
            | (reference & Q(source_date__gte=filters.after))
        )
    if filters.filed_before:
        qs = qs.filter(filing_date__lt=filters.filed_before)
    if filters.filed_after:
        qs = qs.filter(filing_date__gte=filters.filed_after)
    if filters.generator:
        qs = qs.filter(generator_model=filters.generator)
    if filters.mode:
        qs = qs.filter(mode=filters.mode)
    if filters.cpc:
        # Only reference patents carry CPC codes; a generated invention's are suggestions.
        any_prefix = Q()
        for prefix in filters.cpc:
            any_prefix |= Q(cpc_codes__contains=f" {prefix}")
        qs = qs.filter(any_prefix)
    return qs


def _beyond_dates(filters: SearchFilters) -> SearchFilters:
    """The part of ``filters`` the table of vector dates cannot apply (search.vector_dates):
    everything but the dates and the origin."""
    return dataclasses.replace(
        filters, before=None, after=None, filed_before=None, filed_after=None, origin="all"
    )


def patents_passing(*, filters: SearchFilters, patent_ids) -> set[int]:
    """Which of ``patent_ids`` pass ``filters``: the rule of ``patents_matching`` applied
    to the candidates' rows, fetched by primary key. Asked in SQL, a date range with the
    candidates' ids let the database walk the range's date index (135,000 patents for a
    five-year window at a million: 0.22 s) instead of looking the few hundred ids up."""
    ids = sorted({int(i) for i in patent_ids})
    if not ids:
        return set()
    if not filters.narrows:
        return set(
            Patent.objects.filter(
                pk__in=ids_subquery(ids), status=Patent.Status.PUBLISHED
            ).values_list("pk", flat=True)
        )
    rows = Patent.objects.filter(pk__in=ids_subquery(ids)).values_list(
        "pk",
        "status",
        "origin",
        "published_at",
        "source_date",
        "filing_date",
        "generator_model",
        "mode",
        "cpc_codes",
    )
    return {row[0] for row in rows if _passes(filters, row)}


def patents_passing_indexed(*, filters: SearchFilters, patent_ids) -> set[int]:
    """``patents_passing`` for candidates drawn from the search indexes (the vector map,
    the keyword rows: withdrawn patents have left both): a filter of dates and origin alone
    is decided by the table of dates by patent (``search.vector_dates``), and only the
    patents it does not know yet are fetched."""
    from search.vector_dates import patent_dates_passing

    decided = patent_dates_passing(filters, patent_ids)
    if decided is None:
        return patents_passing(filters=filters, patent_ids=patent_ids)
    passing, unknown = decided
    if unknown:
        passing |= patents_passing(filters=filters, patent_ids=unknown)
    return passing


def _passes(filters: SearchFilters, row) -> bool:
    _, status, origin, published_at, source_date, filing_date, generator, mode, cpc = row
    if status != Patent.Status.PUBLISHED:
        return False
    if filters.origin in (Patent.Origin.GENERATED, Patent.Origin.REFERENCE):
        if origin != filters.origin:
            return False
    if filters.before or filters.after:
        if origin == Patent.Origin.GENERATED:
            day = published_at
            bounds = [
                dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) if d else None
                for d in (filters.before, filters.after)
            ]
        elif origin == Patent.Origin.REFERENCE:
            day, bounds = source_date, [filters.before, filters.after]
        else:
            return False
        if day is None:
            return False
        if bounds[0] is not None and not day < bounds[0]:
            return False
        if bounds[1] is not None and not day >= bounds[1]:
            return False
    if filters.filed_before and not (filing_date and filing_date < filters.filed_before):
        return False
    if filters.filed_after and not (filing_date and filing_date >= filters.filed_after):
        return False
    if filters.generator and generator != filters.generator:
        return False
    if filters.mode and mode != filters.mode:
        return False
    if filters.cpc and not any(f" {prefix}" in (cpc or "") for prefix in filters.cpc):
        return False
    return True


# Per process: vectors a filter keeps, by (filter, index file). A new index file (or
# a minute) invalidates; withdrawn patents are dropped again when the page is fetched.
_subset_cache: dict = {}
_SUBSET_TTL = 60.0


def vectors_indexed_q(manifest: dict) -> Q:
    """The vector rows an index holds, by its manifest: every row up to ``last_vector_id``,
    and the document rows up to ``documents_through`` (a documents-first build)."""
    held = Q(pk__lte=int(manifest.get("last_vector_id", 0)))
    documents = int(manifest.get("documents_through") or 0)
    if documents:
        held |= Q(claim_number__isnull=True, pk__lte=documents)
    return held


def _vectors_kept_estimate(filters: SearchFilters, loaded) -> int:
    """About how many indexed vectors a filter keeps: the share of patents it keeps (an
    indexed count) of the index's vectors. Counting the vectors themselves joined every
    vector row to the filter (0.5 s for a tenth of a million patents)."""
    share = _patents_share(filters)
    return 0 if share == 0 else max(1, round(share * loaded.ntotal))


def _patents_share(filters: SearchFilters) -> float:
    """The share of published patents a filter keeps (two indexed counts, cached a minute
    and while the index files stay the same: a 0 for generated inventions, counted before
    the first was published, hid the published ones for that minute);
    for a filter of dates and origin alone, the share of vectors the table of vector dates
    keeps (a count over a bitmap: a five-year window's count took 0.22 s in SQL at a
    million patents, and every query of an examiner has its own date)."""
    from search.vector_dates import vector_dates_share

    key = (filters, "share", manifest_stamp())
    hit = _subset_cache.get(key)
    now = time.monotonic()
    if hit and now - hit[0] < _SUBSET_TTL:
        return hit[1]
    rest = _beyond_dates(filters)
    value = None if rest.narrows else vector_dates_share(filters)
    if value is None:
        value = patents_matching(filters).count() / (_published_count() or 1)
    if len(_subset_cache) > 256:
        _subset_cache.clear()
    _subset_cache[key] = (now, value)
    return value


def _published_count() -> int:
    key = ("published", manifest_stamp())
    hit = _subset_cache.get(key)
    now = time.monotonic()
    if hit and now - hit[0] < _SUBSET_TTL:
        return hit[1]
    value = Patent.objects.filter(status=Patent.Status.PUBLISHED).count()
    _subset_cache[key] = (now, value)
    return value


def _vector_subset(filters: SearchFilters, loaded, *, fetch: bool):
    """(count of vectors the filter keeps, and, when ``fetch``, their (vector id, patent
    id, claim number) rows), for vectors already in ``loaded``."""
    key = (filters, loaded.stamp, fetch)
    hit = _subset_cache.get(key)
    now = time.monotonic()
    if hit and now - hit[0] < _SUBSET_TTL:
        return hit[1]
    qs = IndexedVector.objects.filter(
        vectors_indexed_q(loaded.manifest), patent__in=patents_matching(filters).values("pk")
    )
    value = (
        (None, list(qs.values_list("pk", "patent_id", "claim_number")))
        if fetch
        else (qs.count(), None)
    )
    if len(_subset_cache) > 256:
        _subset_cache.clear()
    _subset_cache[key] = (now, value)
    return value


def _split_docs_claims(scored, mapping, limit):
    """[(vector id, score)] best first -> best document list and best-claim-per-patent
    list, each [(patent_id, score, claim_no)]."""
    docs, claims, seen_doc, seen_claim = [], [], set(), set()
    for vid, score in scored:
        if vid not in mapping:
            continue  # removed (withdrawn) since the file was written, or filtered out
        patent_id, claim_no = mapping[vid]
        if claim_no is None and patent_id not in seen_doc:
            seen_doc.add(patent_id)
            docs.append((patent_id, score, None))
        elif claim_no is not None and patent_id not in seen_claim:
            seen_claim.add(patent_id)
            claims.append((patent_id, score, claim_no))
        if len(docs) >= limit and len(claims) >= limit:
            break
    return docs[:limit], claims[:limit]


def _dates_only_share(filters: SearchFilters) -> bool:
    """Whether the filter's share comes from the table of vector dates: it narrows by
    dates and origin only, and the table is there."""
    from search.vector_dates import vector_dates_share

    rest = _beyond_dates(filters)
    return not rest.narrows and vector_dates_share(filters) is not None


def _allowed_by_dates(filters: SearchFilters, loaded):
    """The vectors whose patents pass the filter's dates and origin (a
    ``search.vector_dates.DatesAllowed``: by vector id, and by row for IVF lists), or None
    (no such part in the filter, or no table of vector dates yet)."""
    from search.vector_dates import has_date_bounds, vector_dates_selection

    if not has_date_bounds(filters) and filters.origin not in ("generated", "reference"):
        return None
    manifest = loaded.manifest
    last = max(
        int(manifest.get("last_vector_id") or 0), int(manifest.get("documents_through") or 0)
    )
    return vector_dates_selection(filters, last_id=last)


def dense_search(query: str, *, limit: int, filters: SearchFilters | None = None):
    """Best document list and best-claim-per-patent list: [(patent_id, score, claim_no)],
    only patents that pass ``filters``, each list up to ``limit`` long.

    A filter that keeps few vectors (at most SEARCH_EXACT_SUBSET_MAX) is ranked exactly
    over just those vectors (a matrix product over a view of the stored vectors: 0.3 ms
    for 700 vectors, 12 ms for 50k, `bench/search.py filters`); a broader one searches the
    whole index, deeper by the share it keeps and doubling until both lists are full. An
    ID selector inside HNSW was the third option: it walks the graph through rejected
    nodes and loses recall exactly where a filter is narrow."""
    import numpy as np

    from search.embeddings import embed_queries

    loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    vector = embed_queries([query])
    if vector.shape[1] != loaded.dimension:
        raise IndexUnavailable("mismatch", "query dimension differs from the index")
    ntotal = loaded.ntotal
    if ntotal == 0:
        return [], []
    filters = filters or SearchFilters(origin="all")
    if filters.narrows:
        kept = _vectors_kept_estimate(filters, loaded)
        if kept == 0:
            return [], []
        if kept <= 2 * settings.SEARCH_EXACT_SUBSET_MAX and not _dates_only_share(filters):
            # Near the line the estimate is replaced by the exact count (a share from the
            # table of vector dates is one already).
            kept, _ = _vector_subset(filters, loaded, fetch=False)
        if kept == 0:
            return [], []
        if kept <= settings.SEARCH_EXACT_SUBSET_MAX:
            _, rows = _vector_subset(filters, loaded, fetch=True)
            wanted = np.fromiter((r[0] for r in rows), dtype="int64", count=len(rows))
            present, matrix = loaded.vectors_of(wanted)
            wanted = wanted[present]
            scores = matrix @ vector[0]
            top = np.argsort(-scores, kind="stable")
            mapping = {r[0]: (r[1], r[2]) for r in rows}
            scored = ((int(wanted[i]), float(scores[i])) for i in top)
            return _split_docs_claims(scored, mapping, limit)
        share = kept / ntotal
        allowed = _allowed_by_dates(filters, loaded)
        if allowed is not None:
            # The dates and origin are kept to inside the search: only the rest of the
            # filter (checked afterwards) asks for a deeper one.
            rest = _beyond_dates(filters)
            share = max(share, _patents_share(rest) if rest.narrows else 1.0)
    else:
        share = 1.0
        allowed = None
    # Deep enough for ``limit`` patents to pass a filter that keeps ``share``: claim vectors
    # give a patent several chances, and the loop below doubles when it was not.
    k = min(ntotal, max(limit * 8, int(limit * 4 / max(share, 1e-6))))
    while True:
        scores, ids = loaded.search(vector, k, allowed=allowed)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        mapping = vector_owners([i for i, _ in pairs], filters=filters)
        docs, claims = _split_docs_claims(pairs, mapping, limit)
        # Deep enough when the candidates name ``limit`` patents (a page and then some):
        # claim vectors outnumber documents, so both lists need not be full.
        found = {pid for pid, _, _ in docs} | {pid for pid, _, _ in claims}
        if len(found) >= limit or k >= ntotal:
            return docs, claims
        k = min(ntotal, k * 2)


def search_patents(
    query: str, *, filters: SearchFilters, k: int = 10, page: int = 1, engine: str = "hybrid"
) -> SearchResult:
    terms = query_terms(query)
    want = k * page
    limit = max(CANDIDATES, want * 2)
    notice = ""
    dense_docs, dense_claims = [], []
    used = engine
    if engine in ("hybrid", "dense"):
        try:
            dense_docs, dense_claims = dense_search(query, limit=limit, filters=filters)
        except IndexUnavailable as exc:
            logger.warning("dense search unavailable: %s", exc)
            notice = "Semantic index unavailable; showing keyword matches only."
            used = "keyword"
        except Exception:
            logger.exception("dense search failed")
            notice = "Semantic index unavailable; showing keyword matches only."
            used = "keyword"
    allowed = patents_matching(filters) if filters.narrows else None
    keyword = []
    if used in ("hybrid", "keyword"):
        try:
            keyword = keyword_search(
                query,
                limit=limit,
                allowed=allowed,
                allowed_share=_patents_share(filters) if allowed is not None else None,
                passing=lambda ids: patents_passing_indexed(filters=filters, patent_ids=ids),
            )
        except KeywordUnavailable as exc:
            logger.warning("keyword search unavailable: %s", exc)
            if used == "keyword":
                notice = "Search is unavailable while its indexes are rebuilt; try again soon."
            else:
                notice = "Keyword index unavailable; showing semantic matches only."
                used = "dense"
    alpha = settings.SEARCH_HYBRID_ALPHA if used == "hybrid" else (1.0 if used == "dense" else 0.0)
    ranked = hybrid_rank(
        dense_docs=dense_docs,
        dense_claims=dense_claims,
        keyword=keyword,
        alpha=alpha,
        claim_margin=settings.SEARCH_CLAIM_MARGIN,
    )
    dense_of = dense_scores(
        dense_docs=dense_docs, dense_claims=dense_claims, claim_margin=settings.SEARCH_CLAIM_MARGIN
    )
    # Both lists were filtered inside retrieval; the page's rows are fetched alone, and a
    # patent withdrawn since the index was read drops out here.
    page_items = ranked[(page - 1) * k : page * k]
    patents = Patent.objects.filter(status=Patent.Status.PUBLISHED).in_bulk(
        [pid for pid, _ in page_items]
    )
    page_items = [(pid, score) for pid, score in page_items if pid in patents]
    claim_of = {pid: (claim_no, score) for pid, score, claim_no in dense_claims}
    claim_rows = {
        (c.patent_id, c.number): c
        for c in Claim.objects.filter(patent_id__in=[pid for pid, _ in page_items])
    }
    hits = []
    for pid, score in page_items:
        patent = patents[pid]
        claim_no, claim_score = claim_of.get(pid, (None, None))
        matched = claim_rows.get((pid, claim_no)) if claim_no else None
        if matched is None and terms:
            # Keyword-only hit: the claim sharing most query terms.
            candidates = [c for (p, _), c in claim_rows.items() if p == pid]
            if candidates:
                matched = max(candidates, key=lambda c: sum(t in c.text.lower() for t in terms))
        parent = (
            claim_rows.get((pid, matched.depends_on)) if matched and matched.depends_on else None
        )
        hits.append(
            SearchHit(
                patent=patent,
                score=score,
                snippet=snippet(patent.abstract or patent.title, terms),
                matched_claim=matched,
                claim_score=claim_score,
                parent_claim=parent,
                dense_score=dense_of.get(pid),
            )
        )
    # Each list is complete when it came back shorter than its depth.
    exact = len(keyword) < limit and (used == "keyword" or len(dense_docs) < limit)
    return SearchResult(
        hits=hits,
        total=len(ranked),
        engine=used,
        notice=notice,
        terms=terms,
        total_exact=exact,
    )


def origin_other_count(query: str, *, filters: SearchFilters) -> int:
    """How many keyword matches the other origin has: for 'nothing found here, but N there'."""
    other = (
        Patent.Origin.REFERENCE
        if filters.origin == Patent.Origin.GENERATED
        else Patent.Origin.GENERATED
    )
    try:
        return len(
            keyword_search(
                query,
                limit=1000,
                allowed=patents_matching(dataclasses.replace(filters, origin=other)),
            )
        )
    except KeywordUnavailable:
        return 0


def index_progress() -> dict | None:
    """The running index build (done, total, rate, seconds left), or None."""
    import json

    from search.store import index_dir

    try:
        data = json.loads((index_dir() / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    # A build that stopped writing for two minutes died (kill -9, OOM): not running.
    if data.get("state") != "indexing" or time.time() - data.get("updated_at", 0) > 120:
        return None
    return {k: data.get(k) for k in ("done", "total", "vectors_per_s", "eta_seconds")}


def vectors_pending_query(
    *, last_vector_id: int, documents_through: int = 0, documents_only: bool = False
):
    """The vector rows not in an index whose manifest says ``last_vector_id`` and
    ``documents_through`` (every row up to the first, every document row up to the second);
    only document rows with ``documents_only``."""
    query = IndexedVector.objects.filter(pk__gt=last_vector_id)
    if documents_through > last_vector_id:
        query = query.exclude(claim_number__isnull=True, pk__lte=documents_through)
    if documents_only:
        query = query.filter(claim_number__isnull=True)
    return query


def embedding_shards_progress() -> dict | None:
    """The sharded build under way (``search_index shards``): shards by state, vectors done
    of planned, the rate of the shards finished so far and the time left at that rate with
    the workers now running; None when no plan is unmerged."""
    from django.db.models import Count, Sum

    from search.models import EmbeddingShard

    shards = EmbeddingShard.objects.filter(embedding_model=settings.EMBEDDING_MODEL)
    if not shards.exclude(status=EmbeddingShard.Status.MERGED).exists():
        return None
    states = dict(shards.values_list("status").annotate(n=Count("pk")).order_by())
    totals = shards.aggregate(planned=Sum("planned"), done=Sum("done"))
    finished = shards.filter(seconds__gt=0).aggregate(n=Sum("done"), s=Sum("seconds"))
    per_worker = (finished["n"] or 0) / finished["s"] if finished["s"] else None
    running = states.get(EmbeddingShard.Status.RUNNING, 0)
    left = (totals["planned"] or 0) - (totals["done"] or 0)
    eta = round(left / (per_worker * max(running, 1))) if per_worker else None
    return {
        "shards": {state: states.get(state, 0) for state in EmbeddingShard.Status.values},
        "vectors_planned": totals["planned"] or 0,
        "vectors_embedded": totals["done"] or 0,
        "vectors_per_s_per_worker": round(per_worker, 1) if per_worker else None,
        "eta_seconds": eta,
        "failed": [
            {"shard": pk, "error": error}
            for pk, error in shards.filter(status=EmbeddingShard.Status.FAILED).values_list(
                "pk", "error"
            )[:10]
        ],
    }


def index_health() -> dict:
    """State of the dense index, without loading the embedding model."""
    building = index_progress()
    extra = {"building": building} if building else {}
    sharded = embedding_shards_progress()
    if sharded:
        extra["sharded_build"] = sharded
    if fulltext_enabled():
        extra["keyword"] = keyword_index_status()
    try:
        manifest = manifest_read()
    except IndexUnavailable as exc:
        return {"ok": False, "state": exc.state, "detail": exc.detail, **extra}
    if manifest is None:
        state = "building" if building else "missing"
        return {"ok": False, "state": state, "detail": "no index built yet", **extra}
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
        manifest = loaded.manifest
    except IndexUnavailable as exc:
        return {"ok": False, "state": exc.state, "detail": exc.detail, **extra}
    latest = IndexedVector.objects.aggregate(m=Max("pk"))["m"] or 0
    pending = vectors_pending_query(
        last_vector_id=int(manifest.get("last_vector_id", 0)),
        documents_through=int(manifest.get("documents_through") or 0),
    ).count()
    claims_pending = (
        vectors_pending_query(
            last_vector_id=int(manifest.get("last_vector_id", 0)),
            documents_through=int(manifest.get("documents_through") or 0),
        )
        .exclude(claim_number=None)
        .count()
        if pending
        else 0
    )
    return {
        "ok": True,
        "state": "ok" if not pending else ("building" if building else "behind"),
        "count": manifest["count"],
        "embedding_model": manifest["embedding_model"],
        "dimension": manifest["dimension"],
        "index_type": manifest.get("index_type"),
        "pending_vectors": pending,
        "pending_claim_vectors": claims_pending,
        "last_vector_id": manifest.get("last_vector_id"),
        "latest_vector_id": latest,
        **extra,
    }


def patents_similar(
    patent: Patent, *, k: int = 10, origin: str = Patent.Origin.GENERATED
) -> list[Patent]:
    """Nearest published patents of ``origin`` by document vector; empty when the index is
    unavailable or the patent is not indexed yet. Needs no query embedding: the patent's own
    vector is read back from the index."""
    import numpy as np

    vid = (
        IndexedVector.objects.filter(patent=patent, claim_number=None)
        .values_list("pk", flat=True)
        .first()
    )
    if vid is None:
        return []
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
        vector = loaded.reconstruct(int(vid))
    except Exception as exc:  # missing, corrupt, or not in this index yet
        logger.info("no similar patents for %s: %s", patent.public_id, exc)
        return []
    # Claim vectors share the index: look deep enough to find k documents.
    scores, ids = loaded.search(np.asarray([vector], dtype="float32"), min(loaded.ntotal, k * 40))
    mapping = vector_owners(ids[0], documents_only=True)
    order = []
    for i in ids[0]:
        pid = mapping.get(int(i), (None, None))[0]
        if pid and pid != patent.pk and pid not in order:
            order.append(pid)
    found = {
        p.pk: p
        for p in Patent.objects.filter(pk__in=order, status=Patent.Status.PUBLISHED, origin=origin)
    }
    return [found[pid] for pid in order if pid in found][:k]


def stored_query_text(*, key: str) -> str | None:
    if not key or len(key) > 24:
        return None
    return StoredQuery.objects.filter(key=key).values_list("text", flat=True).first()


# Combinations are looked for among this many results.
COMBINATION_DEPTH = 30


@dataclass
class Workbench:
    """One search for a result page or an API answer. ``charts``: {patent pk: element
    chart} of the page's hits; ``combinations``: [(patent a, patent b, combination)]."""

    result: SearchResult
    elements: list[str]
    charts: dict
    combinations: list


def search_workbench(params, *, charts: bool, combinations: bool) -> Workbench:
    """Hits, and when asked the element charts and the pairs among the top
    COMBINATION_DEPTH that together meet the most elements of the query's claim, from one
    search: the query is embedded once, its elements split and charted once. (The
    ranking does not depend on k up to CANDIDATES, so the page is the top k of the deeper
    search.)"""
    from search.elements import claim_elements, element_charts, element_combinations

    deep = combinations and params.page == 1
    k = max(params.k, COMBINATION_DEPTH) if deep else params.k
    result = search_patents(params.q, filters=params.filters, k=k, page=params.page)
    top = result.hits
    if deep:
        result = replace(result, hits=top[: params.k])
    elements = claim_elements(params.q) if charts or combinations else []
    if len(elements) < 2 or not top:
        return Workbench(result=result, elements=elements, charts={}, combinations=[])
    charted = element_charts(elements, [h.patent for h in (top if deep else result.hits)])
    page_pks = {h.patent.pk for h in result.hits}
    pairs = []
    if deep:
        patents = {h.patent.pk: h.patent for h in top}
        pairs = [
            (patents[c["patents"][0]], patents[c["patents"][1]], c)
            for c in element_combinations(charted)
        ]
    return Workbench(
        result=result,
        elements=elements,
        charts={pk: chart for pk, chart in charted.items() if pk in page_pks} if charts else {},
        combinations=pairs,
    )
