"""Keyword search behind one interface: SQLite FTS5, PostgreSQL full-text search, or
Tantivy beside either (SEARCH_KEYWORD_ENGINE=tantivy, search/fulltext.py).

A pasted claim names 20 to 60 distinct words, and the common ones (``device``, ``first``,
``configured``) are in a large share of a million patents: both engines score every
document that matches any term, so such a query read hundreds of thousands of postings
(1 to 6 s at a million patents, `bench/million.py keyword`). The query keeps its rarest
terms instead (``keyword_terms_pick``), by document shares estimated from a random sample
of the corpus (``term_stats_refresh``): the words that tell documents apart, and the
postings BM25 weighs most. Shares are counted per indexed term, the engine's stem (a rare
word such as "populating" is searched as "popul", which 3 % of documents hold).
"""

import json
import logging
import random
import threading
import time

from django.conf import settings
from django.db import connection, transaction

from allthepatents.bulk import column_arrays, ids_subquery
from search.fulltext import (
    fulltext_enabled,
    fulltext_search,
    fulltext_shares,
    fulltext_stems,
    keyword_index_remove,
)
from search.text import query_terms

logger = logging.getLogger(__name__)

TERM_STATS_FILE = "term-stats.json"
# 2: counts per indexed term (the engine's stem), not per word.
TERM_STATS_VERSION = 2
# Documents sampled for term shares: a term in 1 % of them is seen about 200 times, which
# places it well; rarer terms need no precise share (they are kept).
TERM_STATS_SAMPLE = 20_000
# Below this many documents every term is kept: scoring all of them is cheap.
TERM_STATS_MIN_DOCUMENTS = 50_000


def keyword_documents_write(rows: list[tuple[int, str, str, str]]) -> None:
    """Feeds (patent id, title, abstract, claims' text) rows to the keyword index. With
    SEARCH_KEYWORD_ENGINE=tantivy the database's engine is not fed: the indexing worker
    reads the patents themselves (search/fulltext.py)."""
    if not rows or fulltext_enabled():
        return
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.executemany("DELETE FROM search_fts WHERE rowid = %s", [(r[0],) for r in rows])
            cursor.executemany(
                "INSERT INTO search_fts(rowid, title, abstract, claims) VALUES (%s, %s, %s, %s)",
                rows,
            )
        else:
            # One statement a batch (executemany sent one a row).
            cursor.execute(
                "INSERT INTO search_tsv (patent_id, tsv) SELECT i, "
                "setweight(to_tsvector('english', t), 'A') || "
                "setweight(to_tsvector('english', a), 'B') || "
                "setweight(to_tsvector('english', c), 'C') "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS r(i, t, a, c) "
                "ON CONFLICT (patent_id) DO UPDATE SET tsv = EXCLUDED.tsv",
                column_arrays(rows),
            )


def keyword_documents_delete(patent_ids: list[int]) -> None:
    if not patent_ids:
        return
    if fulltext_enabled():
        # After the commit: a withdrawal rolled back must not leave the engine.
        transaction.on_commit(lambda: keyword_index_remove(patent_ids))
        return
    with connection.cursor() as cursor:
        table, column = (
            ("search_fts", "rowid")
            if connection.vendor == "sqlite"
            else ("search_tsv", "patent_id")
        )
        cursor.executemany(f"DELETE FROM {table} WHERE {column} = %s", [(i,) for i in patent_ids])  # noqa: S608


def fts5_match_expression(terms: list[str]) -> str:
    # Every term quoted: FTS syntax in the query ("NEAR", "*", quotes) stays literal.
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def keyword_terms_pick(
    terms: list[str],
    shares: dict[str, float] | None,
    *,
    max_terms: int | None = None,
    common_share: float | None = None,
    min_terms: int = 3,
    documents: int | None = None,
    max_matches: int | None = None,
) -> list[str]:
    """The terms worth sending: up to ``max_terms`` (SEARCH_KEYWORD_TERMS) of the rarest,
    leaving out those in more than ``common_share`` (SEARCH_KEYWORD_COMMON_SHARE) of the
    documents unless fewer than ``min_terms`` would remain, and stopping before the terms'
    estimated matches together (share times ``documents``) pass ``max_matches``
    (SEARCH_KEYWORD_MATCHES; 0: no bound), keeping ``min_terms`` at least. ``shares``: the
    estimated share of documents each term is in (a term missing from it is rare); None
    keeps every term."""
    if shares is None:
        return terms
    max_terms = settings.SEARCH_KEYWORD_TERMS if max_terms is None else max_terms
    common = settings.SEARCH_KEYWORD_COMMON_SHARE if common_share is None else common_share
    max_matches = settings.SEARCH_KEYWORD_MATCHES if max_matches is None else max_matches
    ranked = sorted(terms, key=lambda t: shares.get(t, 0.0))
    kept = [t for t in ranked if shares.get(t, 0.0) <= common][:max_terms]
    if len(kept) < min_terms:
        kept = ranked[: min(min_terms, max_terms)]
    if max_matches and documents:
        # Both engines score every document that matches any term before they sort (no
        # top-k early termination in FTS5's bm25 or ts_rank_cd): a query's time grows with
        # its terms' matches, which at a million patents the commoner terms dominate.
        matches, bounded = 0.0, []
        for term in kept:
            matches += shares.get(term, 0.0) * documents
            if matches > max_matches and len(bounded) >= min_terms:
                break
            bounded.append(term)
        kept = bounded
    return kept


def fts5_stems(db, words: list[str]) -> dict[str, str]:
    """``{word: the term FTS5 indexes it as}`` (porter stems, as ``search_fts`` and the
    evaluation's table tokenise), read back from a scratch FTS5 table in the connection's
    temp schema: the engine's own stemmer, so the shares and the index agree. ``db``: a
    sqlite3 connection."""
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.stemmer USING fts5(w, tokenize='porter unicode61')"
    )
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.stemmer_v USING fts5vocab(temp, stemmer, 'instance')"
    )
    db.executemany("INSERT INTO temp.stemmer(rowid, w) VALUES (?, ?)", list(enumerate(words)))
    try:
        stems = dict(db.execute("SELECT doc, term FROM temp.stemmer_v").fetchall())
    finally:
        db.execute("DELETE FROM temp.stemmer")
    return {w: stems.get(i, w) for i, w in enumerate(words)}


def _pg_stems(words: list[str]) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT w, (tsvector_to_array(to_tsvector('english', w)))[1] "
            "FROM unnest(%s::text[]) AS w",
            [words],
        )
        return {w: stem or w for w, stem in cursor.fetchall()}


def engine_stems(words: list[str]) -> dict[str, str]:
    """``{word: the term the site's keyword engine indexes it as}``."""
    if not words:
        return {}
    if fulltext_enabled():
        return fulltext_stems(words)
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return fts5_stems(connection.connection, words)
    return _pg_stems(words)


def terms_by_rarity(words: list[str], stem_shares: dict[str, float] | None, stems) -> tuple:
    """(one word per indexed term, ``{word: share of documents its term is in}``), for
    ``keyword_terms_pick``; ``stems``: a function as ``engine_stems``. Without shares the
    words are kept as they are."""
    if stem_shares is None or not words:
        return words, None
    stem_of = stems(words)
    first: dict[str, str] = {}
    for w in words:
        first.setdefault(stem_of[w], w)
    kept = list(first.values())
    return kept, {w: stem_shares.get(stem_of[w], 0.0) for w in kept}


# A filter keeping at least this share of the corpus is applied to the best matches of the
# unfiltered query instead of inside it: joining every match to a tenth of a million
# patents took 0.35 s, filtering 2,000 matches by id 0.06 s (`bench/million.py api`).
POSTFILTER_MIN_SHARE = 0.05
POSTFILTER_MAX_FETCH = 5000
# The most patents a filter passes to Tantivy by id (as a set of terms): listing a million
# ids from the database would take longer than the query.
FULLTEXT_ALLOWED_IDS = 200_000


def keyword_search(
    query: str,
    *,
    limit: int = 200,
    allowed=None,
    allowed_share: float | None = None,
    passing=None,
) -> list[tuple[int, float]]:
    """(patent id, score) best first; OR semantics so that pasted claims still match.

    ``allowed``, a queryset of patents, filters inside the SQL (as a subquery), so that a
    narrow filter still gets ``limit`` matches when the corpus has them. A broad one
    (``allowed_share``, the share of patents it keeps, at least POSTFILTER_MIN_SHARE)
    filters the best matches of the unfiltered query by id (``passing(ids)``: the ones
    that pass, when the caller has a faster test than the queryset), falling back to the
    subquery when too few of them pass."""
    if fulltext_enabled():
        terms = fulltext_terms(query_terms(query))
    else:
        stats = _stats_read()
        words, shares = terms_by_rarity(query_terms(query), stats["shares"], engine_stems)
        terms = keyword_terms_pick(words, shares, documents=stats["documents"])
    if not terms:
        return []
    if allowed is not None and allowed_share and allowed_share >= POSTFILTER_MIN_SHARE:
        fetch = min(POSTFILTER_MAX_FETCH, int(2 * limit / allowed_share))
        hits = _keyword_query(terms, limit=fetch, allowed=None)
        ids = [pk for pk, _ in hits]
        keep = (
            passing(ids)
            if passing is not None
            else set(allowed.filter(pk__in=ids_subquery(ids)).values_list("pk", flat=True))
        )
        passed = [hit for hit in hits if hit[0] in keep]
        if len(passed) >= limit or len(hits) < fetch:
            return passed[:limit]
    return _keyword_query(terms, limit=limit, allowed=allowed)


def fulltext_terms(words: list[str], *, searcher=None, use_shares: bool | None = None) -> list[str]:
    """The Tantivy terms (stems) a query of ``words`` sends: its rarest, by the engine's
    exact document frequencies (``searcher``: the site's engine unless given), once the
    corpus has TERM_STATS_MIN_DOCUMENTS (or as ``use_shares`` says). No match bound: Tantivy
    skips the documents that cannot reach the top (block-max pruning), and the bound, there
    for the database engines that score every match, cost it recall (0.913 against 0.933
    known answers at a million patents, bench/README.md 2026-12-06)."""
    stem_of = fulltext_stems(words)
    shares = documents = None
    if use_shares is not False:
        shares, documents = fulltext_shares(sorted(set(stem_of.values())), searcher=searcher)
        if use_shares is None and documents < TERM_STATS_MIN_DOCUMENTS:
            shares = None
    kept, word_shares = terms_by_rarity(words, shares, lambda ws: {w: stem_of[w] for w in ws})
    picked = keyword_terms_pick(kept, word_shares, documents=documents, max_matches=0)
    return list(dict.fromkeys(stem_of[w] for w in picked))


def _keyword_query(terms: list[str], *, limit: int, allowed) -> list[tuple[int, float]]:
    if fulltext_enabled():
        # A filter's patents are passed by id (the engine holds no filter fields) unless
        # they are too many to list, when the engine's best matches are filtered instead.
        if allowed is None:
            return fulltext_search(terms, limit=limit)
        ids = list(allowed.values_list("pk", flat=True)[: FULLTEXT_ALLOWED_IDS + 1])
        if len(ids) <= FULLTEXT_ALLOWED_IDS:
            return fulltext_search(terms, limit=limit, allowed_ids=ids)
        hits = fulltext_search(terms, limit=max(limit, POSTFILTER_MAX_FETCH))
        keep = set(
            allowed.filter(pk__in=ids_subquery([pk for pk, _ in hits])).values_list("pk", flat=True)
        )
        return [hit for hit in hits if hit[0] in keep][:limit]
    restrict, restrict_params = "", []
    if allowed is not None:
        sub_sql, restrict_params = allowed.values("pk").query.sql_with_params()
        restrict = f" AND k.patent_id IN ({sub_sql})"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT f.rowid, bm25(search_fts, 3.0, 2.0, 1.0) AS rank FROM search_fts f "  # noqa: S608 (Django-compiled subquery, parameters bound)
                "JOIN search_keyworddocument k ON k.patent_id = f.rowid "
                f"WHERE search_fts MATCH %s{restrict} ORDER BY rank, f.rowid LIMIT %s",
                [fts5_match_expression(terms), *restrict_params, limit],
            )
            return [(int(pk), -float(rank)) for pk, rank in cursor.fetchall()]
        cursor.execute(
            "SELECT s.patent_id, ts_rank_cd(s.tsv, q) AS rank "  # noqa: S608 (as above)
            "FROM search_tsv s JOIN search_keyworddocument k ON k.patent_id = s.patent_id, "
            f"to_tsquery('english', %s) q WHERE s.tsv @@ q{restrict} "
            "ORDER BY rank DESC, s.patent_id LIMIT %s",
            [" | ".join(_pg_lexeme(t) for t in terms), *restrict_params, limit],
        )
        return [(int(pk), float(rank)) for pk, rank in cursor.fetchall()]


def _pg_lexeme(term: str) -> str:
    # Quoted lexemes cannot inject tsquery operators.
    return "'" + term.replace("'", "''").replace("\\", "") + "'"


# --- term shares, estimated from a sample of the corpus ------------------------------------

_stats_lock = threading.Lock()
_stats: dict = {"stamp": None, "shares": None, "documents": None}


def _stats_path():
    from search.store import index_dir

    return index_dir() / TERM_STATS_FILE


def _stats_read() -> dict:
    """The estimates file as this process last read it (read again once per change of the
    file): its ``shares`` (None when unusable) and the ``documents`` they were made from.
    Queries ask on every search and the publish hook on every batch of an import."""
    from search.store import file_stamp

    path = _stats_path()
    stamp = file_stamp(path)
    if stamp is None:
        return {"shares": None, "documents": None}
    with _stats_lock:
        if _stats["stamp"] != stamp:
            shares = documents = None
            try:
                data = json.loads(path.read_text())
                if data.get("version") != TERM_STATS_VERSION:
                    raise ValueError(f"version {data.get('version')}, not {TERM_STATS_VERSION}")
                sample = max(int(data["sample"]), 1)
                shares = {t: n / sample for t, n in data["counts"].items()}
                documents = int(data["documents"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("term shares unreadable (%s): every query term is kept", exc)
                shares = documents = None
            _stats.update(stamp=stamp, shares=shares, documents=documents)
        return {"shares": _stats["shares"], "documents": _stats["documents"]}


def term_shares() -> dict[str, float] | None:
    """The share of documents each common indexed term (stem) is in, as ``term_stats_refresh`` last
    estimated it; None when there are no estimates (a small corpus, or none made yet):
    every term is then kept."""
    return _stats_read()["shares"]


def term_stats_refresh(*, force: bool = False, sample: int = TERM_STATS_SAMPLE) -> dict | None:
    """Estimates each indexed term's share of documents (the engine's stems of the words
    queries keep) from ``sample`` random keyword-indexed patents (title, abstract and
    claims) and writes them for
    every process to read. Runs when the corpus has doubled since the last estimate (or
    with ``force``); the shares of common words move little as a corpus grows. Returns
    what it wrote, or None when nothing was due."""
    from django.db.models import Max, Min

    from allthepatents.files import file_write_atomic
    from patents.models import Claim, Patent
    from search.models import KeywordDocument

    path = _stats_path()
    if not force:
        due_at = TERM_STATS_MIN_DOCUMENTS
        previous = _stats_read()["documents"]
        if previous is not None:
            due_at = max(due_at, 2 * previous)
        # Ids number the documents, so while the largest is below the mark the count is
        # too: an import's every batch skips the COUNT (90 ms at a million) this way.
        top = KeywordDocument.objects.aggregate(hi=Max("patent_id"))["hi"] or 0
        if top < due_at:
            return None
    documents = KeywordDocument.objects.count()
    if not force and documents < due_at:
        return None
    started = time.monotonic()
    bounds = KeywordDocument.objects.aggregate(lo=Min("patent_id"), hi=Max("patent_id"))
    if bounds["lo"] is None:
        return None
    rng = random.Random(documents)
    wanted = min(sample, documents)
    picked: list[int] = []
    # Random ids in the id range, kept when they are indexed patents: ids are dense enough
    # (withdrawals are rare) that a few rounds find the sample without a full scan.
    for _ in range(20):
        if len(picked) >= wanted:
            break
        draws = {rng.randint(bounds["lo"], bounds["hi"]) for _ in range(2 * (wanted - len(picked)))}
        picked += list(
            KeywordDocument.objects.filter(patent_id__in=draws).values_list("patent_id", flat=True)
        )[: wanted - len(picked)]
    counts: dict[str, int] = {}
    stem_of: dict[str, str] = {}
    for start in range(0, len(picked), 1000):
        chunk = picked[start : start + 1000]
        texts = {
            pk: f"{title} {abstract}"
            for pk, title, abstract in Patent.objects.filter(pk__in=chunk).values_list(
                "pk", "title", "abstract"
            )
        }
        for pk, text in Claim.objects.filter(patent_id__in=chunk).values_list("patent_id", "text"):
            texts[pk] = texts.get(pk, "") + " " + text
        words = [set(query_terms(text, limit=1_000_000)) for text in texts.values()]
        fresh = sorted(set().union(*words) - stem_of.keys()) if words else []
        for at in range(0, len(fresh), 5000):
            stem_of.update(engine_stems(fresh[at : at + 5000]))
        for doc in words:
            for stem in {stem_of[w] for w in doc}:
                counts[stem] = counts.get(stem, 0) + 1
    # Terms seen once or twice in the sample are rare: they are left out (kept by queries).
    data = {
        "version": TERM_STATS_VERSION,
        "documents": documents,
        "sample": len(picked),
        "made_at": time.time(),
        "counts": {t: n for t, n in counts.items() if n > 2},
    }
    file_write_atomic(path, json.dumps(data).encode())
    logger.info(
        "term shares from %d of %d documents in %.1f s",
        len(picked),
        documents,
        time.monotonic() - started,
    )
    return data
