"""Retrieval evaluation on a scratch store (in-memory SQLite FTS5 + in-memory FAISS).

Each query is a patent's first claim; the right answer is that patent, indexed by its title
+ abstract only (its own claims would find themselves). Distractors are other patents added
to the corpus; with ``distractor_claims`` they keep their claims, in the keyword index and
as claim vectors, as they would on the site. Ranking goes through the site's own fusion
(``search.ranking``). The site's database and index are never touched.
"""

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from search.embedder_training import document_text, patent_split, reference_records_read
from search.keyword import fts5_match_expression, fts5_stems, keyword_terms_pick, terms_by_rarity
from search.ranking import eval_query_ranks, rank_of, retrieval_metrics
from search.text import query_terms

DEPTH = 100


@dataclass
class EvalCase:
    doc_text: tuple[str, str]
    query: str
    source_id: str = ""


@dataclass
class EvalDoc:
    title: str
    abstract: str
    claims: list[str] = field(default_factory=list)
    source_id: str = ""


def eval_cases_load(lines, *, limit: int | None = None, split: str = "all") -> list[EvalCase]:
    """Patents with complete claims and a title or abstract, of ``split`` (all, train,
    dev, test: the split ``train_embedder`` uses)."""
    cases = []
    for record, parsed in reference_records_read(lines):
        if split != "all" and patent_split(parsed["source_id"]) != split:
            continue
        if not record.get("claims_complete") or not parsed["claims"]:
            continue
        if not (parsed["title"] or parsed["abstract"]):
            continue
        cases.append(
            EvalCase(
                (parsed["title"], parsed["abstract"]),
                parsed["claims"][0]["text"],
                parsed["source_id"],
            )
        )
        if limit and len(cases) >= limit:
            break
    return cases


def eval_distractors_load(lines, *, count: int, exclude: set[str]) -> list[EvalDoc]:
    """The first ``count`` patents with a title or abstract whose id is not in ``exclude``
    (the queries' own patents), in file order."""
    docs = []
    for _, parsed in reference_records_read(lines):
        if len(docs) >= count:
            break
        if parsed["source_id"] in exclude or not (parsed["title"] or parsed["abstract"]):
            continue
        docs.append(
            EvalDoc(
                parsed["title"],
                parsed["abstract"],
                [c["text"] for c in parsed["claims"]],
                parsed["source_id"],
            )
        )
    return docs


def _npy_cached(cache_dir: Path | None, key: str, texts: list[str], compute):
    """``compute()``, kept on disk by (key, texts) so that fusion settings can be compared
    without re-embedding tens of thousands of claims."""
    import numpy as np

    if cache_dir is None or not texts:
        return compute()
    digest = hashlib.sha256(key.encode())
    for text in texts:
        digest.update(b"\x00" + text.encode("utf-8", "replace"))
    path = cache_dir / f"{digest.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path)
    vectors = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _embed_cached(
    texts: list[str], *, model: str | None, cache_dir: Path | None, bulk: bool = False
):
    """Documents and claims embedded as the site indexes them (``bulk``)."""
    from django.conf import settings

    from search.embeddings import embed, embedding_bulk_precision

    precision = embedding_bulk_precision() if bulk else "fp32"
    key = f"{model or settings.EMBEDDING_MODEL}{precision}"
    return _npy_cached(cache_dir, key, texts, lambda: embed(texts, name=model, bulk=bulk))


def _queries_cached(texts, *, model, cache_dir, words):
    """Query vectors as the site makes them (``embed_queries``)."""
    from django.conf import settings

    from search.embeddings import embed_queries

    words = settings.SEARCH_QUERY_CHUNK_WORDS if words is None else words
    return _npy_cached(
        cache_dir,
        f"queries:{model}:{words}",
        texts,
        lambda: embed_queries(texts, name=model, chunk_words=words),
    )


class FulltextScratch:
    """An in-memory Tantivy index of the eval's documents, built and queried as the site's
    (search/fulltext.py): SEARCH_KEYWORD_ENGINE=tantivy measured on the same cases."""

    def __init__(self, docs: list["EvalDoc"], *, with_claims: bool):
        import tantivy

        from search.fulltext import fulltext_documents_add, fulltext_schema

        self.schema = fulltext_schema()
        self.index = tantivy.Index(self.schema)
        writer = self.index.writer(heap_size=128_000_000, num_threads=1)
        fulltext_documents_add(
            writer,
            [
                (i, d.title, d.abstract, "\n".join(d.claims) if with_claims else "")
                for i, d in enumerate(docs)
            ],
        )
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.searcher = self.index.searcher()

    def ranked(self, query: str, *, depth: int, rare_terms: bool):
        from search.fulltext import fulltext_hits, fulltext_query
        from search.keyword import fulltext_terms

        stems = fulltext_terms(query_terms(query), searcher=self.searcher, use_shares=rare_terms)
        if not stems:
            return []
        return fulltext_hits(self.searcher, fulltext_query(self.schema, stems), limit=depth)


def keyword_index_build(
    docs: list[EvalDoc], *, with_claims: bool, engine: str = "fts5"
) -> "sqlite3.Connection | FulltextScratch":
    """An in-memory FTS5 table of ``docs`` (row id = position), weighted as the site's; or
    with ``engine="tantivy"`` a Tantivy index of them."""
    if engine == "tantivy":
        return FulltextScratch(docs, with_claims=with_claims)
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE VIRTUAL TABLE docs USING fts5(title, abstract, claims, tokenize='porter unicode61')"
    )
    db.executemany(
        "INSERT INTO docs(rowid, title, abstract, claims) VALUES (?, ?, ?, ?)",
        [
            (i, d.title, d.abstract, "\n".join(d.claims) if with_claims else "")
            for i, d in enumerate(docs)
        ],
    )
    return db


def keyword_shares(docs: list[EvalDoc], *, with_claims: bool) -> dict[str, float]:
    """Each indexed term's (porter stem's) share of ``docs``, for measuring what
    the site's rarest-terms query (``keyword_terms_pick``) does to recall."""
    words = [
        set(
            query_terms(
                " ".join([d.title, d.abstract, *(d.claims if with_claims else [])]), limit=1_000_000
            )
        )
        for d in docs
    ]
    scratch = sqlite3.connect(":memory:")
    distinct = sorted(set().union(*words)) if words else []
    stem_of = {}
    for at in range(0, len(distinct), 5000):
        stem_of.update(fts5_stems(scratch, distinct[at : at + 5000]))
    counts: dict[str, int] = {}
    for doc in words:
        for stem in {stem_of[w] for w in doc}:
            counts[stem] = counts.get(stem, 0) + 1
    return {t: n / max(len(docs), 1) for t, n in counts.items()}


def keyword_ranked(
    db: sqlite3.Connection, query: str, *, depth: int = DEPTH, shares: dict | None = None
):
    """(row id, score) best first: BM25 over title, abstract and claims (3 : 2 : 1).
    ``shares``: send only the rarest terms, as the site does on a large corpus."""
    if isinstance(db, FulltextScratch):
        return db.ranked(query, depth=depth, rare_terms=shares is not None)
    words, word_shares = terms_by_rarity(query_terms(query), shares, lambda ws: fts5_stems(db, ws))
    terms = keyword_terms_pick(words, word_shares)
    if not terms:
        return []
    return [
        (row[0], -row[1])
        for row in db.execute(
            "SELECT rowid, bm25(docs, 3.0, 2.0, 1.0) AS rank FROM docs "
            "WHERE docs MATCH ? ORDER BY rank LIMIT ?",
            (fts5_match_expression(terms), depth),
        )
    ]


def search_eval_run(
    cases: list[EvalCase],
    *,
    distractors: list[EvalDoc] | None = None,
    distractor_claims: bool = False,
    model: str | None = None,
    progress: Callable[[int], None] | None = None,
    fusions: dict | None = None,
    cache_dir: Path | None = None,
    query_chunk_words: int | None = None,
    rare_terms: bool = False,
    keyword_engine: str = "fts5",
    keyword_only: bool = False,
) -> dict:
    import faiss
    from django.conf import settings

    distractors = distractors or []
    docs = [EvalDoc(t, a) for t, a in (c.doc_text for c in cases)] + distractors
    db = keyword_index_build(docs, with_claims=distractor_claims, engine=keyword_engine)
    shares = None
    if rare_terms:
        # Tantivy reads its own exact shares; FTS5's are counted here.
        shares = (
            {}
            if keyword_engine == "tantivy"
            else keyword_shares(docs, with_claims=distractor_claims)
        )
    if keyword_only:
        # The keyword side alone: no embedder loaded, no vector made.
        ranks_alone = []
        for start, case in enumerate(cases):
            scored = keyword_ranked(db, case.query, depth=min(DEPTH, len(docs)), shares=shares)
            ranks_alone.append(rank_of([item for item, _ in scored], start))
            if progress:
                progress(1)
        return {"keyword": retrieval_metrics(ranks_alone)}
    doc_vectors = _embed_cached(
        [document_text(d.title, d.abstract) for d in docs],
        model=model,
        cache_dir=cache_dir,
        bulk=True,
    )
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(doc_vectors)
    claim_owner: list[int] = []
    claim_index = None
    if distractor_claims:
        texts = []
        for i, d in enumerate(docs):
            for text in d.claims:
                claim_owner.append(i)
                texts.append(text)
        if texts:
            claim_index = faiss.IndexFlatIP(doc_vectors.shape[1])
            claim_index.add(_embed_cached(texts, model=model, cache_dir=cache_dir, bulk=True))
    default = {
        "alpha": settings.SEARCH_HYBRID_ALPHA,
        "claim_margin": settings.SEARCH_CLAIM_MARGIN,
    }
    fusions = fusions or {"hybrid": default}
    ranks: dict[str, list] = {"keyword": [], "dense": [], **{name: [] for name in fusions}}
    batch = 64
    depth = min(DEPTH, len(docs))
    for start in range(0, len(cases), batch):
        chunk = cases[start : start + batch]
        query_vectors = _queries_cached(
            [c.query for c in chunk], model=model, cache_dir=cache_dir, words=query_chunk_words
        )
        dense_scores, dense_ids = index.search(query_vectors, depth)
        if claim_index is not None:
            claim_scores, claim_ids = claim_index.search(
                query_vectors, min(DEPTH * 8, claim_index.ntotal)
            )
        for offset, case in enumerate(chunk):
            query_ranks = eval_query_ranks(
                target=start + offset,
                dense_ids=dense_ids[offset],
                dense_scores=dense_scores[offset],
                claim_ids=claim_ids[offset] if claim_index is not None else None,
                claim_scores=claim_scores[offset] if claim_index is not None else None,
                claim_owner=claim_owner,
                keyword_scored=keyword_ranked(db, case.query, shares=shares),
                fusions=fusions,
                alpha=default["alpha"],
                claim_margin=default["claim_margin"],
            )
            for name, rank in query_ranks.items():
                ranks[name].append(rank)
        if progress:
            progress(len(chunk))
    return {name: retrieval_metrics(r) for name, r in ranks.items()}
