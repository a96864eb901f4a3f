"""Reads for search: hybrid ranking over dense document, dense claim and keyword lists."""

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Max

from patents.models import Claim, Patent
from search.keyword import keyword_search
from search.models import IndexedVector
from search.store import IndexUnavailable, index_for_search, manifest_read
from search.text import query_terms, snippet

logger = logging.getLogger(__name__)

RRF_K = 60
CANDIDATES = 100  # per list; the depth search_eval measures fusion at


@dataclass
class SearchFilters:
    before: dt.date | None = None  # published strictly before this date (priority date)
    after: dt.date | None = None  # published on or after this date
    origin: str = Patent.Origin.GENERATED  # generated | reference | all
    generator: str = ""
    mode: str = ""


@dataclass
class SearchHit:
    patent: Patent
    score: float
    snippet: str
    matched_claim: Claim | None = None
    claim_score: float | None = None
    sources: dict = field(default_factory=dict)


@dataclass
class SearchResult:
    hits: list[SearchHit]
    total: int
    engine: str  # hybrid | keyword
    notice: str = ""
    terms: list[str] = field(default_factory=list)


def _filtered(ids, filters: SearchFilters):
    qs = Patent.objects.filter(pk__in=ids, status=Patent.Status.PUBLISHED)
    if filters.origin in (Patent.Origin.GENERATED, Patent.Origin.REFERENCE):
        qs = qs.filter(origin=filters.origin)
    if filters.before:
        qs = qs.filter(
            published_at__lt=dt.datetime.combine(filters.before, dt.time(), tzinfo=dt.UTC)
        )
    if filters.after:
        qs = qs.filter(
            published_at__gte=dt.datetime.combine(filters.after, dt.time(), tzinfo=dt.UTC)
        )
    if filters.generator:
        qs = qs.filter(generator_model=filters.generator)
    if filters.mode:
        qs = qs.filter(mode=filters.mode)
    return qs


def dense_search(query: str, *, limit: int):
    """Best document list and best-claim-per-patent list: [(patent_id, score, claim_no)]."""
    import numpy as np

    from search.embeddings import embed

    loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    vector = embed([query])
    if vector.shape[1] != loaded.index.d:
        raise IndexUnavailable("mismatch", "query dimension differs from the index")
    ntotal = loaded.index.ntotal
    if ntotal == 0:
        return [], []
    k = min(ntotal, limit * 8)
    scores, ids = loaded.index.search(np.ascontiguousarray(vector), k)
    pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    mapping = {
        row[0]: (row[1], row[2])
        for row in IndexedVector.objects.filter(pk__in=[i for i, _ in pairs]).values_list(
            "pk", "patent_id", "claim_number"
        )
    }
    docs, claims, seen_doc, seen_claim = [], [], set(), set()
    for vid, score in pairs:
        if vid not in mapping:
            continue  # removed (withdrawn) since the file was written
        patent_id, claim_no = mapping[vid]
        if claim_no is None and patent_id not in seen_doc:
            seen_doc.add(patent_id)
            docs.append((patent_id, score, None))
        elif claim_no is not None and patent_id not in seen_claim:
            seen_claim.add(patent_id)
            claims.append((patent_id, score, claim_no))
    return docs[:limit], claims[:limit]


def rrf_fuse(lists: list[list[int]], *, k: int = RRF_K, weights: list[float] | None = None):
    """Reciprocal rank fusion: sum of w / (k + rank) over the lists that hold an item."""
    weights = weights or [1.0] * len(lists)
    scores: dict[int, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def convex_fuse(lists: list[list[tuple[int, float]]], *, weights: list[float]):
    """Convex combination of min-max normalised scores: sum of w * (s - min) / (max - min)
    over the lists that hold an item (an item a list lacks scores 0 there, as its worst).

    Unlike RRF it keeps how far apart scores are: a dense list whose best hit is far ahead
    of the rest outweighs a keyword list of near-ties (measured in `search_eval`)."""
    scores: dict[int, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        if not ranked or not weight:
            continue
        values = [s for _, s in ranked]
        low, high = min(values), max(values)
        for item, score in ranked:
            # All tied (or a single hit): each is the list's best.
            norm = (score - low) / (high - low) if high > low else 1.0
            scores[item] = scores.get(item, 0.0) + weight * norm
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


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
            dense_docs, dense_claims = dense_search(query, limit=limit)
        except IndexUnavailable as exc:
            logger.warning("dense search unavailable: %s", exc)
            notice = "Semantic index unavailable; showing keyword matches only."
            used = "keyword"
        except Exception:
            logger.exception("dense search failed")
            notice = "Semantic index unavailable; showing keyword matches only."
            used = "keyword"
    keyword = keyword_search(query, limit=limit) if used in ("hybrid", "keyword") else []
    # A patent's dense score is its better one of document and best claim: a pasted claim
    # is best matched by a claim, a description by the abstract.
    dense: dict[int, float] = {}
    for pid, score, _ in dense_docs + dense_claims:
        dense[pid] = max(score, dense.get(pid, score))
    dense_ranked = sorted(dense.items(), key=lambda kv: -kv[1])
    alpha = settings.SEARCH_HYBRID_ALPHA if used == "hybrid" else (1.0 if used == "dense" else 0.0)
    fused = convex_fuse([dense_ranked, keyword], weights=[alpha, 1.0 - alpha])
    # Filter on ids only; full rows (abstracts, ...) are fetched for the page alone.
    allowed = set(_filtered([pid for pid, _ in fused], filters).values_list("pk", flat=True))
    ranked = [(pid, score) for pid, score in fused if pid in allowed]
    page_items = ranked[(page - 1) * k : page * k]
    patents = Patent.objects.in_bulk([pid for pid, _ in page_items])
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
        hits.append(
            SearchHit(
                patent=patent,
                score=score,
                snippet=snippet(patent.abstract or patent.title, terms),
                matched_claim=matched,
                claim_score=claim_score,
            )
        )
    return SearchResult(hits=hits, total=len(ranked), engine=used, notice=notice, terms=terms)


def index_health() -> dict:
    """State of the dense index, without loading the embedding model."""
    try:
        manifest = manifest_read()
    except IndexUnavailable as exc:
        return {"ok": False, "state": exc.state, "detail": exc.detail}
    if manifest is None:
        return {"ok": False, "state": "missing", "detail": "no index built yet"}
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
        manifest = loaded.manifest
    except IndexUnavailable as exc:
        return {"ok": False, "state": exc.state, "detail": exc.detail}
    latest = IndexedVector.objects.aggregate(m=Max("pk"))["m"] or 0
    pending = IndexedVector.objects.filter(pk__gt=manifest.get("last_vector_id", 0)).count()
    return {
        "ok": True,
        "state": "ok" if not pending else "behind",
        "count": manifest["count"],
        "embedding_model": manifest["embedding_model"],
        "dimension": manifest["dimension"],
        "index_type": manifest.get("index_type"),
        "pending_vectors": pending,
        "last_vector_id": manifest.get("last_vector_id"),
        "latest_vector_id": latest,
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
        vector = loaded.index.reconstruct(int(vid))
    except Exception as exc:  # missing, corrupt, or not in this index yet
        logger.info("no similar patents for %s: %s", patent.public_id, exc)
        return []
    # Claim vectors share the index: look deep enough to find k documents.
    scores, ids = loaded.index.search(
        np.asarray([vector], dtype="float32"), min(loaded.index.ntotal, k * 40)
    )
    mapping = dict(
        IndexedVector.objects.filter(
            pk__in=[int(i) for i in ids[0] if i >= 0], claim_number=None
        ).values_list("pk", "patent_id")
    )
    order = []
    for i in ids[0]:
        pid = mapping.get(int(i))
        if pid and pid != patent.pk and pid not in order:
            order.append(pid)
    found = {
        p.pk: p
        for p in Patent.objects.filter(pk__in=order, status=Patent.Status.PUBLISHED, origin=origin)
    }
    return [found[pid] for pid in order if pid in found][:k]
