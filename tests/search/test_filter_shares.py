"""A filter's share of the corpus is cached for a minute (search/selectors.py): the cache
must not outlive the corpus it was counted on."""

import pytest

from patents.importing import reference_import_records
from search.params import SearchFilters
from search.selectors import search_patents
from search.services import search_documents_sync, search_index_rebuild, search_index_update
from search.store import reader_reset
from tests.factories import patent_published


@pytest.mark.django_db
def test_the_first_published_inventions_are_found_within_the_minute(
    fixture_jsonl, settings, tmp_path, monkeypatch
):
    """Before any invention was published, the share of generated patents is 0; once
    some are published and indexed, a search for them finds them at once, not a minute
    later when the cached 0 runs out."""
    import search.services as services

    settings.INDEX_DIR = tmp_path / "index"
    monkeypatch.setattr(services, "search_index_update_enqueue", lambda: False)
    reader_reset()
    reference_import_records(enumerate(fixture_jsonl.read_text().splitlines(), start=1))
    search_index_rebuild()
    generated = SearchFilters(origin="generated")
    query = "A widget 7 comprising a motor and a rotating brush."
    assert search_patents(query, filters=generated, k=10, engine="dense").hits == []

    invention = patent_published(n=7)
    search_documents_sync(patent_ids=[invention.pk])
    search_index_update()
    for engine in ("dense", "keyword", "hybrid"):
        hits = search_patents(query, filters=generated, k=10, engine=engine).hits
        assert [h.patent.pk for h in hits][:1] == [invention.pk], engine
    reader_reset()
