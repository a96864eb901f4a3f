"""The Tantivy keyword engine (SEARCH_KEYWORD_ENGINE=tantivy, search/fulltext.py): real
Tantivy indexes in a temporary INDEX_DIR, fed from the test database."""

import json

import pytest
from django.core.management import call_command

from patents.importing import reference_import_records
from patents.models import Patent
from patents.services import patent_withdraw
from search.fulltext import (
    SYNC_FILE,
    KeywordUnavailable,
    engine_dir,
    fulltext_search,
    fulltext_shares,
    fulltext_stems,
    keyword_index_status,
    keyword_index_sync,
    reader_reset,
)
from search.keyword import keyword_search, keyword_terms_pick, terms_by_rarity
from search.params import SearchFilters
from search.selectors import search_patents
from search.services import search_documents_sync
from search.text import query_terms
from tests.factories import patent_published


@pytest.fixture
def tantivy(settings, tmp_path, monkeypatch):
    import search.services as services

    settings.INDEX_DIR = tmp_path / "index"
    settings.SEARCH_KEYWORD_ENGINE = "tantivy"
    monkeypatch.setattr(services, "search_index_update_enqueue", lambda: False)
    reader_reset()
    yield
    reader_reset()


@pytest.fixture
def publish(tantivy, django_capture_on_commit_callbacks):
    """Publishes through the real service and runs its after-commit hooks (the publish
    hook feeds the engine)."""

    def run(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return patent_published(**kwargs)

    return run


@pytest.fixture
def imported(tantivy, fixture_jsonl):
    lines = fixture_jsonl.read_text().splitlines()
    reference_import_records(enumerate(lines, start=1))
    search_documents_sync()
    keyword_index_sync()  # what the indexing worker does after an import
    return [json.loads(line) for line in lines]


def _source_ids(hits):
    by_pk = dict(
        Patent.objects.filter(pk__in=[pk for pk, _ in hits]).values_list("pk", "source_id")
    )
    return [by_pk[pk] for pk, _ in hits]


@pytest.mark.django_db
def test_published_patents_are_found_by_their_own_claims(imported):
    """Each patent's first claim finds it first, as FTS5's bm25 does."""
    status = keyword_index_status()
    assert status["built"] and status["documents"] == len(imported) == Patent.objects.count()
    firsts = 0
    for record in imported:
        hits = keyword_search(record["claims"][0], limit=10)
        assert hits == sorted(hits, key=lambda h: (-h[1], h[0]))
        firsts += _source_ids(hits[:1]) == [record["id"]]
    assert firsts >= 0.9 * len(imported)


@pytest.mark.django_db
def test_the_title_weighs_more_than_the_claims(publish):
    in_title = publish(
        n=1,
        title="Zeolite sieve",
        abstract="A filter.",
        claims=[{"number": 1, "text": "A filter comprising a frame."}],
    )
    in_claims = publish(
        n=2,
        title="Filter",
        abstract="A filter.",
        claims=[{"number": 1, "text": "A filter comprising a zeolite sieve."}],
    )
    hits = keyword_search("zeolite sieve", limit=10)
    assert [pk for pk, _ in hits] == [in_title.pk, in_claims.pk]


@pytest.mark.django_db
def test_the_web_process_reads_each_commit(publish):
    first = publish(n=1)
    assert [pk for pk, _ in keyword_search("widget brush", limit=10)] == [first.pk]
    second = publish(n=2, title="Widget brush holder")
    assert {pk for pk, _ in keyword_search("widget brush", limit=10)} == {first.pk, second.pk}


@pytest.mark.django_db
def test_a_sync_replayed_after_a_crash_adds_nothing_twice(imported):
    """The marker is written after Tantivy's commit: a crash between them replays the same
    patents, which replace themselves."""
    (engine_dir() / SYNC_FILE).unlink()
    result = keyword_index_sync()
    assert result["added"] == len(imported)
    assert result["count"] == len(imported)
    again = keyword_index_sync()
    assert again["added"] == 0 and again["count"] == len(imported)
    assert keyword_index_status()["documents"] == len(imported)


@pytest.mark.django_db
def test_a_withdrawn_patent_leaves_the_engine(publish, django_capture_on_commit_callbacks):
    kept = publish(n=1)
    gone = publish(n=2)
    with django_capture_on_commit_callbacks(execute=True):
        patent_withdraw(patent=gone, reason="test")
    assert [pk for pk, _ in keyword_search("widget brush motor", limit=10)] == [kept.pk]
    assert keyword_index_status()["documents"] == 1


@pytest.mark.django_db
def test_a_withdrawal_the_engine_missed_is_mended_by_the_next_sync(
    publish, django_capture_on_commit_callbacks
):
    import search.fulltext as fulltext

    kept = publish(n=1)
    gone = publish(n=2)
    # Another process holds the writer at the withdrawal: the engine keeps the patent.
    with fulltext.keyword_lock():
        with django_capture_on_commit_callbacks(execute=True):
            patent_withdraw(patent=gone, reason="test")
    assert keyword_index_status()["documents"] == 2
    result = keyword_index_sync()
    assert result["removed"] == 1 and result["count"] == 1
    assert [pk for pk, _ in keyword_search("widget brush motor", limit=10)] == [kept.pk]


@pytest.mark.django_db
def test_a_narrow_filter_is_applied_inside_the_engine(imported, monkeypatch):
    import datetime as dt

    allowed = Patent.objects.filter(source_date__lt=dt.date(1990, 1, 1))
    keep = set(allowed.values_list("pk", flat=True))
    assert 0 < len(keep) < len(imported)
    for record in imported[:10]:
        hits = keyword_search(record["claims"][0], limit=5, allowed=allowed)
        assert hits and {pk for pk, _ in hits} <= keep
        unfiltered = [h for h in keyword_search(record["claims"][0], limit=200) if h[0] in keep]
        assert [pk for pk, _ in hits] == [pk for pk, _ in unfiltered[:5]]
    assert fulltext_search(["widget"], limit=5, allowed_ids=[]) == []
    # A filter passing more patents than are worth listing filters the best matches.
    import search.keyword as keyword

    by_id = [keyword_search(r["claims"][0], limit=5, allowed=allowed) for r in imported[:10]]
    monkeypatch.setattr(keyword, "FULLTEXT_ALLOWED_IDS", 3)
    assert [keyword_search(r["claims"][0], limit=5, allowed=allowed) for r in imported[:10]] == (
        by_id
    )


@pytest.mark.django_db
def test_term_shares_are_the_engines_exact_document_frequencies(imported, monkeypatch, settings):
    import search.keyword as keyword

    claim = max(imported, key=lambda r: len(query_terms(r["claims"][0])))["claims"][0]
    words = query_terms(claim)
    stems = fulltext_stems(words)
    shares, documents = fulltext_shares(sorted(set(stems.values())))
    assert documents == len(imported)
    common = max(shares, key=shares.get)
    holding = [
        r
        for r in imported
        if common
        in {
            stems.get(w) or fulltext_stems([w])[w]
            for w in query_terms(" ".join([r["title"], r["abstract"], *r["claims"]]), limit=100_000)
        }
    ]
    # The largest of the three fields' counts: no more than the documents holding it.
    assert 0 < shares[common] * documents <= len(holding)
    # Below TERM_STATS_MIN_DOCUMENTS every term is sent; above, the rarest.
    everything = keyword_search(claim, limit=40)
    monkeypatch.setattr(keyword, "TERM_STATS_MIN_DOCUMENTS", 10)
    picked = keyword_terms_pick(
        *terms_by_rarity(words, shares, fulltext_stems), max_terms=4, common_share=1.0
    )
    assert len(picked) == 4
    narrowed = keyword_search(claim, limit=40)
    assert len(narrowed) <= len(everything)
    assert len(narrowed) < len(everything)  # the common terms were left out
    # The match bound is the database engines' (they score every match): not Tantivy's.
    settings.SEARCH_KEYWORD_COMMON_SHARE = 1.0
    unbounded = keyword_search(claim, limit=40)
    settings.SEARCH_KEYWORD_MATCHES = 1
    assert keyword_search(claim, limit=40) == unbounded
    assert [pk for pk, _ in narrowed[:1]] == [pk for pk, _ in everything[:1]]


@pytest.mark.django_db
def test_a_corrupt_engine_falls_back_and_is_rebuilt(imported, settings):
    (engine_dir() / "meta.json").write_text("{ not json")
    reader_reset()
    with pytest.raises(KeywordUnavailable):
        keyword_search(imported[0]["claims"][0], limit=5)
    result = search_patents(
        imported[0]["claims"][0], filters=SearchFilters(origin="all"), engine="keyword"
    )
    assert result.hits == [] and "unavailable" in result.notice
    rebuilt = keyword_index_sync()
    assert rebuilt["count"] == len(imported)
    assert _source_ids(keyword_search(imported[0]["claims"][0], limit=1)) == [imported[0]["id"]]


@pytest.mark.django_db
def test_no_engine_files_is_a_clear_error(tantivy):
    with pytest.raises(KeywordUnavailable, match="search_index keyword"):
        keyword_search("widget", limit=5)


@pytest.mark.django_db
def test_the_command_builds_the_engine_from_the_database(imported, settings, capsys):
    import shutil

    shutil.rmtree(engine_dir())
    reader_reset()
    call_command("search_index", "keyword", "--no-progress")
    out = capsys.readouterr().out
    assert f"added {len(imported)} patents" in out
    assert keyword_index_status()["documents"] == len(imported)
    call_command("search_index", "keyword", "--rebuild", "--no-progress")
    assert f"holds {len(imported)}" in capsys.readouterr().out
    # Back to the database's engine: its full text was never written, and --rebuild writes it.
    settings.SEARCH_KEYWORD_ENGINE = "database"
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--rebuild"):
        call_command("search_index", "keyword")
    record = imported[3]
    assert keyword_search(record["claims"][0], limit=5) == []
    call_command("search_index", "keyword", "--rebuild", "--no-progress")
    assert f"written for {len(imported)} patents" in capsys.readouterr().out
    assert _source_ids(keyword_search(record["claims"][0], limit=1)) == [record["id"]]


@pytest.mark.django_db
def test_the_database_engine_is_not_fed_while_tantivy_answers(imported):
    from django.db import connection

    table = "search_fts" if connection.vendor == "sqlite" else "search_tsv"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_an_indexing_worker_feeds_the_engine_after_an_import(
    fixture_jsonl, settings, tmp_path, worker_factory, monkeypatch
):
    """A real Celery worker over real Redis: an import's batches are left to the indexing
    worker (too many to add inline), whose update adds them before it embeds."""
    import search.services as services
    from tests.helpers import wait_for

    settings.INDEX_DIR = tmp_path / "index"
    settings.SEARCH_KEYWORD_ENGINE = "tantivy"
    reader_reset()
    monkeypatch.setattr(services, "KEYWORD_INLINE_MAX", 0)
    worker = worker_factory(INDEX_DIR=str(settings.INDEX_DIR), SEARCH_KEYWORD_ENGINE="tantivy")
    lines = fixture_jsonl.read_text().splitlines()
    reference_import_records(enumerate(lines, start=1))
    assert not keyword_index_status()["built"]  # nothing inline

    def fed():
        status = keyword_index_status()
        return status["built"] and status.get("documents") == len(lines)

    wait_for(fed, timeout=300, message=lambda: worker.log_text()[-3000:])
    record = json.loads(lines[7])
    assert _source_ids(keyword_search(record["claims"][0], limit=1)) == [record["id"]]
    reader_reset()


def test_search_eval_measures_the_tantivy_engine_on_the_same_cases(fixture_jsonl, capsys):
    """The keyword engine a site would switch to is measured on the eval's cases beside
    FTS5: the same queries, the same documents, its own ranking."""
    from search.evaluation import EvalDoc, keyword_index_build, keyword_ranked

    docs = [
        EvalDoc("Zeolite sieve", "A filter.", ["A filter comprising a frame."]),
        EvalDoc("Filter", "A filter.", ["A filter comprising a zeolite sieve."]),
        EvalDoc("Lamp", "A light.", ["A lamp comprising a bulb."]),
    ]
    for engine in ("fts5", "tantivy"):
        db = keyword_index_build(docs, with_claims=True, engine=engine)
        assert [i for i, _ in keyword_ranked(db, "zeolite sieve")] == [0, 1], engine
    call_command("search_eval", str(fixture_jsonl), "--json", "--keyword-engine", "tantivy")
    out = json.loads(capsys.readouterr().out)
    assert out["setup"]["keyword_engine"] == "tantivy"
    assert out["results"]["keyword"]["recall@10"] > 0.5
    # The keyword side alone, without the embedder: the same figures.
    call_command(
        "search_eval", str(fixture_jsonl), "--json", "--keyword-engine", "tantivy", "--keyword-only"
    )
    alone = json.loads(capsys.readouterr().out)
    assert alone["results"] == {"keyword": out["results"]["keyword"]}


@pytest.mark.django_db
def test_the_health_report_names_the_keyword_engine(imported):
    from search.selectors import index_health

    health = index_health()
    assert health["keyword"]["engine"] == "tantivy"
    assert health["keyword"]["documents"] == len(imported)
    assert health["keyword"]["bytes"] > 0
