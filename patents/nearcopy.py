"""Near-copy detection: shingled word n-grams, MinHash with LSH bands in the database, and
an exact Jaccard check on the candidates the bands bring up.

The threshold comes from measurements on the shared corpus (``bench/nearcopy.py``, 3,000
patents): Jaccard of 5-word shingles between random pairs of distinct patents is 0.013 at the
99th and 0.022 at the 99.9th percentile; a copy with every 20th word replaced keeps 0.44 at
worst (median 0.60), every 10th word 0.26 at worst (median 0.36). 0.2 sits ten times above
unrelated pairs and below every 10%-edited copy. Heavier rewording (every 5th word: 0.03)
destroys shingles and is left to the embedding check.
"""

from collections import Counter
from dataclasses import dataclass

from patents.minhash import (  # the pure functions, kept importable from here
    BANDS,
    JACCARD_NEAR_COPY,
    PERMUTATIONS,
    ROWS,
    SHINGLE,
    jaccard,
    minhash_bands,
    patent_text,
    shingles,
    texts_bands,
)
from patents.models import MinHashBand, Patent

__all__ = [
    "NearCopy",
    "bands_insert",
    "bands_store",
    "bands_store_texts",
    "near_copy_find",
    # From patents.minhash, kept importable from here.
    "BANDS",
    "JACCARD_NEAR_COPY",
    "PERMUTATIONS",
    "ROWS",
    "SHINGLE",
    "jaccard",
    "minhash_bands",
    "patent_text",
    "shingles",
    "texts_bands",
]


def bands_store(patents) -> None:
    """Records the LSH bands of these patents (claims prefetched or fetched)."""
    bands_store_texts(
        texts={
            p.pk: patent_text(abstract=p.abstract, claims=[c.text for c in p.claims.all()])
            for p in patents
        }
    )


def bands_store_texts(*, texts: dict[int, str]) -> None:
    """Records the LSH bands of ``{patent id: patent_text(...)}``: the importer has the
    texts in hand and need not read back what it just wrote."""
    bands_insert(bands={pk: minhash_bands(shingles(text)) for pk, text in texts.items()})


def bands_insert(*, bands: dict[int, list[int]]) -> None:
    """Stores bands computed by ``minhash_bands`` (an import computes them in a second
    process while the first writes)."""
    from allthepatents.bulk import rows_insert

    rows = [(pk, i, v) for pk, values in bands.items() for i, v in enumerate(values)]
    rows_insert(MinHashBand, ["patent", "band", "value"], rows)


@dataclass
class NearCopy:
    patent: Patent
    similarity: float
    method: str  # "shingles" or "embedding"


def near_copy_find(
    *,
    abstract: str,
    claims: list[str],
    threshold: float = JACCARD_NEAR_COPY,
    max_candidates: int = 10,
) -> NearCopy | None:
    """The closest existing document (reference or published) by shingle Jaccard, if it is
    at or above the threshold."""
    text_shingles = shingles(patent_text(abstract=abstract, claims=claims))
    bands = minhash_bands(text_shingles)
    if not bands:
        return None
    # One indexed IN lookup on the band values, matched to their band positions here:
    # far faster than 64 OR-ed (band, value) pairs on SQLite.
    wanted = set(enumerate(bands))
    hits: Counter = Counter()
    rows = MinHashBand.objects.filter(
        value__in=set(bands), patent__status=Patent.Status.PUBLISHED
    ).values_list("patent_id", "band", "value")
    for patent_id, band, value in rows:
        if (band, value) in wanted:
            hits[patent_id] += 1
    # Two shared bands at least: one is often chance on boilerplate-heavy claims, and a
    # pair at Jaccard 0.26 (the worst 10%-edited copy measured) shares two with p ~ 0.94.
    candidates = [{"patent_id": pid} for pid, n in hits.most_common(max_candidates) if n >= 2]
    best = None
    for row in candidates:
        patent = Patent.objects.prefetch_related("claims").get(pk=row["patent_id"])
        other = shingles(
            patent_text(abstract=patent.abstract, claims=[c.text for c in patent.claims.all()])
        )
        score = jaccard(text_shingles, other)
        if best is None or score > best.similarity:
            best = NearCopy(patent=patent, similarity=score, method="shingles")
    if best and best.similarity >= threshold:
        return best
    return None
