"""Keyword queries keep their rarest terms once the corpus is large (search/keyword.py):
a pasted claim's common words matched most of a million patents."""

import json
import math

import pytest

from patents.importing import reference_import_records
from search.keyword import (
    engine_stems,
    keyword_search,
    keyword_terms_pick,
    term_shares,
    term_stats_refresh,
    terms_by_rarity,
)
from search.services import search_documents_sync
from search.store import index_dir
from search.text import query_terms


@pytest.mark.unit
def test_the_rarest_terms_are_kept_and_common_ones_dropped():
    shares = {"device": 0.6, "first": 0.4, "housing": 0.05, "brush": 0.004, "nylon": 0.001}
    terms = ["device", "first", "housing", "brush", "nylon", "bristle"]
    assert keyword_terms_pick(terms, None, max_terms=2) == terms  # no estimates: all
    assert keyword_terms_pick(terms, shares, max_terms=12, common_share=0.01) == [
        "bristle",  # never seen in the sample: rarest
        "nylon",
        "brush",
    ]
    assert keyword_terms_pick(terms, shares, max_terms=2, common_share=0.01) == [
        "bristle",
        "nylon",
    ]
    # A query of common words keeps its rarest few rather than nothing.
    assert keyword_terms_pick(["device", "first", "housing"], shares, common_share=0.01) == [
        "housing",
        "first",
        "device",
    ]
    assert keyword_terms_pick(["device", "first"], shares, max_terms=1, common_share=0.0) == [
        "first"
    ]


@pytest.mark.unit
def test_the_terms_stop_before_their_matches_pass_the_bound():
    shares = {"a": 0.0, "b": 0.001, "c": 0.002, "d": 0.003, "e": 0.004}
    terms = ["e", "d", "c", "b", "a"]
    pick = keyword_terms_pick
    unbounded = pick(terms, shares, max_terms=12, common_share=0.01, max_matches=0, documents=10**6)
    assert unbounded == ["a", "b", "c", "d", "e"]
    # 0 + 1,000 + 2,000 matches fit in 3,500; the 3,000 of "d" would not.
    assert pick(
        terms, shares, max_terms=12, common_share=0.01, max_matches=3500, documents=10**6
    ) == ["a", "b", "c"]
    # min_terms are kept even past the bound: a query of common words still runs.
    assert pick(
        terms, shares, max_terms=12, common_share=0.01, max_matches=10, documents=10**6
    ) == [
        "a",
        "b",
        "c",
    ]
    # The bound is in documents: the same shares of a small corpus are few matches.
    assert (
        pick(terms, shares, max_terms=12, common_share=0.01, max_matches=3500, documents=10**5)
        == unbounded
    )
    assert (
        pick(terms, shares, max_terms=12, common_share=0.01, max_matches=3500) == unbounded
    )  # no count


@pytest.fixture
def imported(fixture_jsonl, settings, tmp_path, monkeypatch):
    import search.services as services

    settings.INDEX_DIR = tmp_path / "index"
    monkeypatch.setattr(services, "search_index_update_enqueue", lambda: False)
    lines = fixture_jsonl.read_text().splitlines()
    reference_import_records(enumerate(lines, start=1))
    search_documents_sync()
    return [json.loads(line) for line in lines]


@pytest.mark.django_db
def test_estimates_wait_for_a_large_corpus_and_refresh_when_it_doubles(imported, monkeypatch):
    import search.keyword as keyword

    assert term_stats_refresh() is None and term_shares() is None  # 40 documents: all terms
    monkeypatch.setattr(keyword, "TERM_STATS_MIN_DOCUMENTS", 10)
    data = term_stats_refresh()
    assert data["documents"] == data["sample"] == len(imported)
    shares = term_shares()
    common = max(data["counts"], key=data["counts"].get)
    assert shares[common] == data["counts"][common] / len(imported) > 0.2
    assert "the" not in shares and "wherein" not in shares  # stop words are never terms
    assert term_stats_refresh() is None  # not doubled since
    written = json.loads((index_dir() / keyword.TERM_STATS_FILE).read_text())
    assert written["counts"] == data["counts"]
    # Counted per indexed term (the engine's stem), as FTS5 and tsvector index them.
    words = {w for r in imported for w in query_terms(" ".join(r["claims"]), limit=10_000)}
    stems = engine_stems(sorted(words))
    stemmed = [w for w in words if stems[w] != w and stems[w] in data["counts"]]
    assert stemmed and not any(w in data["counts"] for w in stemmed if w not in stems.values())
    (index_dir() / keyword.TERM_STATS_FILE).write_text("{not json")
    assert term_shares() is None  # unreadable: every term is kept, the query still runs


@pytest.mark.django_db
def test_a_pasted_claim_is_searched_by_its_rarest_terms(imported, settings):
    record = max(imported, key=lambda r: len(query_terms(r["claims"][0])))
    claim = record["claims"][0]
    everything = keyword_search(claim, limit=40)
    term_stats_refresh(force=True)
    settings.SEARCH_KEYWORD_TERMS = 4
    settings.SEARCH_KEYWORD_COMMON_SHARE = 0.2
    words, shares = terms_by_rarity(query_terms(claim), term_shares(), engine_stems)
    picked = keyword_terms_pick(words, shares)
    assert len(picked) == 4 < len(query_terms(claim))
    narrowed = keyword_search(claim, limit=40)
    assert narrowed == keyword_search(" ".join(picked), limit=40)
    assert len(narrowed) < len(everything)  # fewer documents scored
    from patents.models import Patent

    found = Patent.objects.filter(pk__in=[pk for pk, _ in narrowed[:5]])
    assert record["id"] in {p.source_id for p in found}  # its rare words still find it


@pytest.mark.django_db
def test_a_pasted_claim_sends_no_more_terms_than_the_match_bound_allows(imported, settings):
    record = max(imported, key=lambda r: len(query_terms(r["claims"][0])))
    claim = record["claims"][0]
    data = term_stats_refresh(force=True)
    settings.SEARCH_KEYWORD_TERMS = 100
    settings.SEARCH_KEYWORD_COMMON_SHARE = 1.0
    settings.SEARCH_KEYWORD_MATCHES = 0
    words, shares = terms_by_rarity(query_terms(claim), term_shares(), engine_stems)
    unbounded = keyword_terms_pick(words, shares)
    assert unbounded == sorted(words, key=lambda w: shares[w])
    matches = [shares[t] * data["documents"] for t in unbounded]
    # Terms in fewer than three sampled documents count as rare (share 0); the rest match
    # three documents or more.
    counted = [i for i, m in enumerate(matches) if m > 0]
    assert len(counted) >= 2 and counted[1] >= 3 and min(matches[i] for i in counted) >= 3
    everything = keyword_search(claim, limit=200)
    # A bound that admits the rare terms and the first counted one, not the second.
    cut = counted[1]
    settings.SEARCH_KEYWORD_MATCHES = math.ceil(sum(matches[:cut]))
    narrowed = keyword_search(claim, limit=200)
    assert narrowed == keyword_search(" ".join(unbounded[:cut]), limit=200)
    assert len(narrowed) < len(everything)  # fewer documents scored


@pytest.mark.django_db
def test_shares_follow_the_engines_stems_not_the_words():
    """A rare word can stand for a common indexed term: "populating" is searched as
    "popul", which "population" shares."""
    stems = engine_stems(["populating", "population", "receivers", "receiving", "nylon"])
    assert stems["populating"] == stems["population"]
    assert stems["receivers"] == stems["receiving"]
    words, shares = terms_by_rarity(
        ["populating", "population", "nylon"], {stems["population"]: 0.03}, engine_stems
    )
    assert words == ["populating", "nylon"]  # one word per indexed term
    assert shares == {"populating": 0.03, "nylon": 0.0}


@pytest.mark.django_db
def test_a_broad_filter_keeps_the_same_matches_whichever_way_it_is_applied(imported):
    """A filter keeping much of the corpus is applied to the unfiltered query's best
    matches (a join of every match to it was the slow part at a million patents); the
    answer is the one the filter inside the SQL gives."""
    import datetime as dt

    from patents.models import Patent

    allowed = Patent.objects.filter(source_date__gte=dt.date(2000, 1, 1))
    share = allowed.count() / Patent.objects.count()
    assert 0.05 <= share < 1
    for record in imported[:10]:
        query = record["claims"][0]
        inside = keyword_search(query, limit=5, allowed=allowed)
        after = keyword_search(query, limit=5, allowed=allowed, allowed_share=share)
        assert after == inside
        assert set(dict(after)) <= set(allowed.values_list("pk", flat=True))


@pytest.mark.django_db
def test_a_refresh_not_due_is_decided_without_counting(imported, monkeypatch):
    """The publish hook asks after every batch of an import; the COUNT it made each time
    took 90 ms at a million documents. Ids bound the count from above."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import search.keyword as keyword

    monkeypatch.setattr(keyword, "TERM_STATS_MIN_DOCUMENTS", 10)
    path = index_dir() / keyword.TERM_STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = {"version": keyword.TERM_STATS_VERSION, "sample": 1, "counts": {}}
    path.write_text(json.dumps({**stale, "documents": 10**9}))
    with CaptureQueriesContext(connection) as queries:
        assert term_stats_refresh() is None
    assert len(queries) == 1 and "COUNT" not in queries[0]["sql"].upper()
    # Estimates from 20 documents: 40 now, due; the count decides and the refresh runs.
    path.write_text(json.dumps({**stale, "documents": len(imported) // 2}))
    data = term_stats_refresh()
    assert data is not None and data["documents"] == len(imported)
    assert term_stats_refresh() is None  # the file just written says 40: not due again
