"""Claim-element mapping: the examiner's chart of which passage of a prior-art document
meets each element of the claim at issue.

The query claim is split into its preamble and elements; each element is embedded once; a
result's passages are its abstract (its document vector) and its claims (their claim
vectors), read back from the FAISS index rather than embedded again, so a page of ten results
costs one small embedding batch and a few matrix products.
"""

import re
from dataclasses import dataclass, field

from django.conf import settings

from search.text import query_terms

_PREAMBLE_RE = re.compile(
    r"^(.{10,400}?\b(?:comprising|consisting of|including|characterized in that)\b\s*:?)\s+",
    re.IGNORECASE | re.DOTALL,
)
_SPLIT_RE = re.compile(
    r"\s*;\s*(?:and\s+)?|\s*\n+\s*|\s+(?=wherein\b)|\s+(?=\(\w\)\s)", re.IGNORECASE
)
_NUMBER_RE = re.compile(r"^\s*\d+\s*[.)]\s*")
MIN_ELEMENT_WORDS = 3
# A chart's rows: each is embedded and compared with every passage of every result, and
# a 2,000-element paste took 22 s and answered 3.5 MB. Real claims have a few dozen.
MAX_ELEMENTS = 40


def claim_elements(text: str) -> list[str]:
    """Preamble first, then the elements (at ";", new lines, "wherein", "(a)"); a short
    query or one without structure is a single element; at most MAX_ELEMENTS."""
    text = _NUMBER_RE.sub("", " ".join(text.split(" ")).strip())
    if len(text.split()) < 12:
        return [text] if text else []
    parts = []
    match = _PREAMBLE_RE.match(text)
    if match:
        parts.append(match.group(1).rstrip(" :"))
        text = text[match.end() :]
    for piece in _SPLIT_RE.split(text):
        piece = piece.strip(" ;,.:")
        if not piece:
            continue
        if parts and (len(piece.split()) < MIN_ELEMENT_WORDS or len(parts) >= MAX_ELEMENTS):
            parts[-1] = f"{parts[-1]}; {piece}"  # the rest stays in the last element
        else:
            parts.append(piece)
    return parts or [text]


@dataclass
class ElementMatch:
    element: str
    passage_label: str
    passage: str
    score: float
    covered: bool
    shared_terms: list[str] = field(default_factory=list)


@dataclass
class ElementChart:
    rows: list[ElementMatch]

    @property
    def covered(self) -> int:
        return sum(1 for r in self.rows if r.covered)

    def as_json(self) -> dict:
        return {
            "covered": self.covered,
            "elements": len(self.rows),
            "rows": [
                {
                    "element": r.element,
                    "passage": r.passage_label,
                    "text": r.passage,
                    "score": round(r.score, 4),
                    "covered": r.covered,
                    "shared_terms": r.shared_terms,
                }
                for r in self.rows
            ],
        }


def element_charts(elements: list[str], patents: list) -> dict[int, ElementChart]:
    """{patent pk: chart} for the given patents (one page of results). Empty when the
    index is unavailable; patents not indexed yet get no chart."""
    import numpy as np

    from search.embeddings import embed
    from search.models import IndexedVector
    from search.selectors import vectors_indexed_q
    from search.store import IndexUnavailable, index_for_search

    if not elements or not patents:
        return {}
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
    except IndexUnavailable:
        return {}
    rows = list(
        IndexedVector.objects.filter(
            vectors_indexed_q(loaded.manifest), patent__in=[p.pk for p in patents]
        ).values_list("pk", "patent_id", "claim_number")
    )
    if not rows:
        return {}
    wanted = np.array([r[0] for r in rows], dtype="int64")
    present, matrix = loaded.vectors_of(wanted)
    # Row of each present id in ``matrix``.
    position = np.cumsum(present) - 1
    # The bulk precision (bf16 where the CPU computes it natively): the passages they are
    # compared with were indexed in it, a chart only ranks passages, and it cut the added
    # latency of elements=1 (bench/search.py workbench).
    element_vectors = embed(elements, bulk=True)
    threshold = settings.SEARCH_ELEMENT_THRESHOLD
    by_patent: dict[int, list] = {}
    for (_vid, pid, claim_no), ok, row in zip(rows, present, position, strict=True):
        if ok:
            by_patent.setdefault(pid, []).append((claim_no, row))
    charts = {}
    for patent in patents:
        passages = by_patent.get(patent.pk)
        if not passages:
            continue
        claims = {c.number: c.text for c in patent.claims.all()}
        labels, texts, vector_rows = [], [], []
        for claim_no, row in sorted(passages, key=lambda x: (x[0] is not None, x[0] or 0)):
            if claim_no is None:
                labels.append("abstract")
                texts.append(patent.abstract or patent.title)
            else:
                labels.append(f"claim {claim_no}")
                texts.append(claims.get(claim_no, ""))
            vector_rows.append(row)
        scores = element_vectors @ matrix[np.array(vector_rows)].T  # elements x passages
        chart = []
        for e, element in enumerate(elements):
            best = int(np.argmax(scores[e]))
            shared = sorted(set(query_terms(element)) & set(query_terms(texts[best])))
            chart.append(
                ElementMatch(
                    element=element,
                    passage_label=labels[best],
                    passage=texts[best],
                    score=float(scores[e, best]),
                    covered=float(scores[e, best]) >= threshold,
                    shared_terms=shared,
                )
            )
        charts[patent.pk] = ElementChart(rows=chart)
    return charts


def element_combinations(charts: dict[int, ElementChart], *, limit: int = 3) -> list[dict]:
    """Up to ``limit`` pairs of results that together meet the most elements: the
    obviousness case, for a claim no single result meets in full. Each pair names, per
    element, which of the two meets it better. Empty when one result already meets all."""
    if not charts:
        return []
    n = len(next(iter(charts.values())).rows)
    if any(c.covered == n for c in charts.values()):
        return []
    ids = list(charts)
    pairs = []
    for a_pos, a in enumerate(ids):
        for b in ids[a_pos + 1 :]:
            rows = []
            for ra, rb in zip(charts[a].rows, charts[b].rows, strict=True):
                best, who = (ra, a) if ra.score >= rb.score else (rb, b)
                rows.append((who, best))
            covered = sum(1 for _, r in rows if r.covered)
            # Only pairs where each document brings something of its own.
            if covered <= max(charts[a].covered, charts[b].covered):
                continue
            pairs.append((covered, sum(r.score for _, r in rows), a, b, rows))
    pairs.sort(key=lambda p: (-p[0], -p[1]))
    return [
        {"patents": (a, b), "covered": covered, "elements": n, "rows": rows}
        for covered, _, a, b, rows in pairs[:limit]
    ]
