"""Retrieval evaluation on a scratch store (in-memory SQLite FTS5 + in-memory FAISS).

Documents are title + abstract only; each query is the patent's first claim; the right
answer is the patent itself. The site's database and index are never touched.
"""

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from patents.services import RecordError, reference_record_parse
from search.keyword import fts5_match_expression
from search.selectors import convex_fuse, rrf_fuse
from search.text import query_terms

DEPTH = 100


@dataclass
class EvalCase:
    doc_text: tuple[str, str]
    query: str


def eval_cases_load(lines, *, limit: int | None = None) -> list[EvalCase]:
    cases = []
    for line in lines:
        try:
            record = json.loads(line)
            parsed = reference_record_parse(record)
        except (ValueError, RecordError):
            continue
        if not record.get("claims_complete") or not parsed["claims"]:
            continue
        if not (parsed["title"] or parsed["abstract"]):
            continue
        cases.append(EvalCase((parsed["title"], parsed["abstract"]), parsed["claims"][0]["text"]))
        if limit and len(cases) >= limit:
            break
    return cases


def _metrics(ranks: list[int | None]) -> dict:
    n = len(ranks) or 1
    return {
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "recall@10": round(sum(1 for r in ranks if r and r <= 10) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
    }


def _rank(ranked: list[int], target: int) -> int | None:
    try:
        return ranked.index(target) + 1
    except ValueError:
        return None


def search_eval_run(
    cases: list[EvalCase],
    *,
    progress: Callable[[int], None] | None = None,
    fusions: dict | None = None,
) -> dict:
    import faiss
    import numpy as np

    from search.embeddings import embed

    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, abstract, tokenize='porter unicode61')")
    db.executemany(
        "INSERT INTO docs(rowid, title, abstract) VALUES (?, ?, ?)",
        [(i, t, a) for i, (t, a) in enumerate(c.doc_text for c in cases)],
    )
    doc_vectors = embed([f"{t}. {a}" for t, a in (c.doc_text for c in cases)])
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(doc_vectors)
    fusions = fusions or {"hybrid": {"alpha": 0.7}}
    ranks: dict[str, list] = {"keyword": [], "dense": [], **{name: [] for name in fusions}}
    batch = 64
    for start in range(0, len(cases), batch):
        chunk = cases[start : start + batch]
        query_vectors = embed([c.query for c in chunk])
        dense_scores, dense_ids = index.search(
            np.ascontiguousarray(query_vectors), min(DEPTH, len(cases))
        )
        for offset, case in enumerate(chunk):
            target = start + offset
            terms = query_terms(case.query)
            keyword_scored = (
                [
                    (row[0], -row[1])
                    for row in db.execute(
                        "SELECT rowid, bm25(docs, 3.0, 2.0) AS rank FROM docs WHERE docs MATCH ? "
                        "ORDER BY rank LIMIT ?",
                        (fts5_match_expression(terms), DEPTH),
                    )
                ]
                if terms
                else []
            )
            keyword = [item for item, _ in keyword_scored]
            dense_scored = [
                (int(i), float(s))
                for i, s in zip(dense_ids[offset], dense_scores[offset], strict=True)
                if i >= 0
            ]
            dense = [item for item, _ in dense_scored]
            ranks["keyword"].append(_rank(keyword, target))
            ranks["dense"].append(_rank(dense, target))
            for name, conf in fusions.items():
                if "alpha" in conf:
                    alpha = conf["alpha"]
                    fused = convex_fuse([dense_scored, keyword_scored], weights=[alpha, 1 - alpha])
                else:
                    fused = rrf_fuse([dense, keyword], k=conf["k"], weights=conf["weights"])
                ranks[name].append(_rank([item for item, _ in fused], target))
        if progress:
            progress(len(chunk))
    return {name: _metrics(r) for name, r in ranks.items()}
