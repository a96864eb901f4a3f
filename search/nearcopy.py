"""The paraphrase check of the quality gate: a generated text whose title and abstract sit
next to an indexed document is a near copy even when shingles miss the rewording. It lives
with the index it reads; the shingle check (patents/nearcopy.py) needs only the database."""

from django.conf import settings

from patents.models import Patent
from patents.nearcopy import NearCopy
from search.selectors import vector_owners
from search.store import IndexUnavailable, index_for_search


def embedding_near_copy_find(
    *, title: str, abstract: str, threshold: float | None = None
) -> NearCopy | None:
    """The nearest indexed document vector (title + abstract), if its cosine is at or above
    the threshold. Returns None when the index is unavailable: the shingle check still ran,
    and a missing index must not stop generation."""
    if threshold is None:
        threshold = settings.NEAR_COPY_EMBEDDING_THRESHOLD
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    except IndexUnavailable:
        return None
    if loaded.ntotal == 0:
        return None
    from search.embeddings import embed

    vector = embed([f"{title}. {abstract}".strip(". ")])
    scores, ids = loaded.search(vector, min(loaded.ntotal, 50))
    candidates = [
        (int(i), float(sc))
        for i, sc in zip(ids[0], scores[0], strict=True)
        if i >= 0 and sc >= threshold
    ]
    if not candidates:
        return None
    docs = vector_owners([i for i, _ in candidates], documents_only=True)
    for vid, score in candidates:
        if vid in docs:
            patent = Patent.objects.filter(pk=docs[vid][0], status=Patent.Status.PUBLISHED).first()
            if patent:
                return NearCopy(patent=patent, similarity=score, method="embedding")
    return None
