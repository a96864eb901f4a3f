"""Filters act inside retrieval: a filter that keeps about 1% of a few thousand patents
returns the same top 10 as ranking the filtered set exhaustively (real MiniLM, real FAISS,
real FTS), on an exact index, on IVF, and through the deep-search path."""

import datetime as dt
import json
import random

import pytest
from django.test import override_settings

from patents.importing import reference_import_records
from patents.models import LedgerEntry, Patent
from patents.services import patent_withdraw
from search.keyword import keyword_search
from search.params import SearchFilters
from search.ranking import hybrid_rank
from search.selectors import patents_matching, search_patents
from search.services import search_index_dates_write, search_index_rebuild, vector_texts
from search.store import reader_reset
from tests.factories import patent_published

WORDS = """valve piston rotor blade sensor circuit battery cathode anode membrane filter pump
nozzle turbine bearing shaft gear clutch spring damper hinge latch lens mirror prism laser
diode antenna receiver transmitter amplifier oscillator capacitor inductor resistor switch
relay motor stator coil magnet actuator solenoid catheter stent needle syringe implant
polymer resin fiber coating adhesive substrate wafer transistor gate channel electrode
plasma chamber heater cooler compressor condenser evaporator duct fan blower burner
injector carburetor exhaust muffler wheel axle brake tire seat belt airbag frame chassis
hull keel sail rudder propeller wing fuselage cockpit screen keyboard mouse printer
scanner camera speaker microphone headset cable connector socket plug fuse breaker
meter gauge probe thermostat humidifier dryer washer mixer blender oven grill kettle
toaster fridge freezer drill saw hammer chisel wrench clamp vise ladder scaffold crane
hoist winch pulley conveyor roller belt hopper silo tank pipe hose fitting flange gasket
seal""".split()

N_REFERENCES = 2000
N_GENERATED = 20  # about 1% of the corpus
N_OLD = 20  # references dated before 1980: another 1% filter


def _phrase(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _records(rng):
    lines = []
    for i in range(N_REFERENCES):
        year = 1975 if i < N_OLD else 2010
        lines.append(
            json.dumps(
                {
                    "id": f"SYN{i:05d}",
                    "title": _phrase(rng, 4),
                    "abstract": "An apparatus with " + _phrase(rng, 20) + ".",
                    "claims": ["1. A device comprising " + _phrase(rng, 14) + "."],
                    "date": f"{year}-0{1 + i % 9}-1{i % 10}",
                    "date_type": "publication",
                    "claims_complete": True,
                }
            )
        )
    return lines


@pytest.fixture(scope="module")
def big_corpus(django_db_setup, django_db_blocker, tmp_path_factory, memo_embeddings):
    rng = random.Random(7)
    override = override_settings(
        INDEX_DIR=tmp_path_factory.mktemp("index"), NEAR_COPY_EMBEDDING_CHECK=False
    )
    override.enable()
    reader_reset()
    with django_db_blocker.unblock():
        reference_import_records(enumerate(_records(rng), start=1))
        for n in range(N_GENERATED):
            patent_published(
                n=n,
                title=_phrase(rng, 4),
                abstract="A machine with " + _phrase(rng, 20) + ".",
                claims=[{"number": 1, "text": "A machine comprising " + _phrase(rng, 14) + "."}],
            )
        search_index_rebuild()
    yield rng
    with django_db_blocker.unblock():
        LedgerEntry.objects.all().delete()
        Patent.objects.all().delete()
    override.disable()
    reader_reset()


def _exhaustive_dense(query: str, filters: SearchFilters) -> list[int]:
    """Cosine against every vector of every patent the filter keeps, scored as the site
    scores (document, or best claim less the margin): no index involved."""
    from django.conf import settings

    from search.embeddings import embed
    from search.models import IndexedVector

    rows = list(IndexedVector.objects.filter(patent__in=patents_matching(filters)))
    vectors = embed(vector_texts(rows))
    scores = vectors @ embed([query])[0]
    docs = [
        (r.patent_id, float(s), None)
        for r, s in zip(rows, scores, strict=True)
        if r.claim_number is None
    ]
    claims = [
        (r.patent_id, float(s), r.claim_number)
        for r, s in zip(rows, scores, strict=True)
        if r.claim_number is not None
    ]
    ranked = hybrid_rank(
        dense_docs=docs,
        dense_claims=claims,
        keyword=[],
        alpha=1.0,
        claim_margin=settings.SEARCH_CLAIM_MARGIN,
    )
    return [pid for pid, _ in ranked[:10]]


def _exhaustive_keyword(query: str, filters: SearchFilters) -> list[int]:
    """The full keyword ranking of the whole corpus, filtered afterwards: bm25's statistics
    are corpus-wide, so this is the filtered set's exact order."""
    allowed = set(patents_matching(filters).values_list("pk", flat=True))
    return [pid for pid, _ in keyword_search(query, limit=100_000) if pid in allowed][:10]


FILTERS = [
    SearchFilters(origin="generated"),
    SearchFilters(origin="reference", before=dt.date(1980, 1, 1)),
]


def _queries(rng):
    return ["A device comprising " + _phrase(rng, 10) for _ in range(4)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "case",
    [
        {"label": "flat, exact subset"},
        {"label": "flat, deep search", "SEARCH_EXACT_SUBSET_MAX": 0},
        {"label": "ivf, exact subset", "SEARCH_IVF_THRESHOLD": 100},
        {"label": "ivf, deep search", "SEARCH_IVF_THRESHOLD": 100, "SEARCH_EXACT_SUBSET_MAX": 0},
    ],
    ids=lambda c: c["label"],
)
def test_a_one_percent_filter_returns_the_exhaustive_top_10(big_corpus, settings, case):
    overrides = {k: v for k, v in case.items() if k != "label"}
    for key, value in overrides.items():
        setattr(settings, key, value)
    if "SEARCH_IVF_THRESHOLD" in overrides:
        search_index_rebuild()
        reader_reset()
    try:
        from search.selectors import index_health

        assert index_health()["index_type"] == (
            "ivf" if "SEARCH_IVF_THRESHOLD" in overrides else "flat"
        )
        for filters in FILTERS:
            kept = patents_matching(filters).count()
            assert kept == 20  # 1% of the corpus
            for query in _queries(big_corpus):
                dense = search_patents(query, filters=filters, k=10, engine="dense")
                assert [h.patent.pk for h in dense.hits] == _exhaustive_dense(query, filters)
                keyword = search_patents(query, filters=filters, k=10, engine="keyword")
                assert [h.patent.pk for h in keyword.hits] == _exhaustive_keyword(query, filters)
                hybrid = search_patents(query, filters=filters, k=10)
                assert len(hybrid.hits) == 10 and hybrid.total == 20 and hybrid.total_exact
                assert all(
                    patents_matching(filters).filter(pk=h.patent.pk).exists() for h in hybrid.hits
                )
    finally:
        if "SEARCH_IVF_THRESHOLD" in overrides:
            settings.SEARCH_IVF_THRESHOLD = 50_000
            search_index_rebuild()
            reader_reset()


@pytest.mark.django_db
def test_undated_references_never_pass_a_date_filter(big_corpus):
    undated = Patent.objects.filter(origin=Patent.Origin.REFERENCE).first()
    Patent.objects.filter(pk=undated.pk).update(source_date=None)
    try:
        for filters in (
            SearchFilters(origin="reference", before=dt.date(2100, 1, 1)),
            SearchFilters(origin="reference", after=dt.date(1700, 1, 1)),
        ):
            assert not patents_matching(filters).filter(pk=undated.pk).exists()
        assert patents_matching(SearchFilters(origin="reference")).filter(pk=undated.pk).exists()
    finally:
        Patent.objects.filter(pk=undated.pk).update(source_date=dt.date(2010, 1, 1))


# --- the table of vector dates: date filters inside the search ------------------------------

DATE_FILTERS = [
    SearchFilters(origin="all", before=dt.date(1980, 1, 1)),
    SearchFilters(origin="reference", after=dt.date(2010, 5, 1)),
    SearchFilters(origin="generated", after=dt.date(2000, 1, 1)),
    SearchFilters(origin="all", before=dt.date(2010, 3, 15), after=dt.date(2010, 2, 1)),
    SearchFilters(origin="all", filed_before=dt.date(2010, 6, 1)),
    SearchFilters(origin="all", filed_after=dt.date(1900, 1, 1)),
    SearchFilters(origin="generated"),
]


def _bitmap_patents(bitmap, filters):
    """The published patents whose every vector the bitmap keeps."""
    import numpy as np

    from search.models import IndexedVector

    bits = np.unpackbits(bitmap, bitorder="little").astype(bool)
    kept, dropped = set(), set()
    for pk, patent_id in IndexedVector.objects.filter(
        patent__status=Patent.Status.PUBLISHED
    ).values_list("pk", "patent_id"):
        (kept if bits[pk] else dropped).add(patent_id)
    assert not kept & dropped, "a patent's vectors were split by the bitmap"
    return kept


@pytest.mark.django_db
def test_the_table_of_vector_dates_keeps_what_the_database_filter_keeps(big_corpus):
    """Every filter's bitmap keeps exactly the vectors of the patents the database filter
    keeps (dates, undated references, filing dates, origin), so nothing is dropped early."""
    from search.models import IndexedVector
    from search.vector_dates import vector_dates_allowed

    undated = Patent.objects.filter(origin=Patent.Origin.REFERENCE).order_by("pk")[5]
    Patent.objects.filter(pk=undated.pk).update(source_date=None)
    filed = Patent.objects.filter(origin=Patent.Origin.REFERENCE).order_by("pk")[6:9]
    Patent.objects.filter(pk__in=[p.pk for p in filed]).update(filing_date=dt.date(2009, 1, 1))
    try:
        search_index_dates_write()
        last = IndexedVector.objects.order_by("-pk").values_list("pk", flat=True)[0]
        for filters in DATE_FILTERS:
            expected = set(patents_matching(filters).values_list("pk", flat=True))
            assert expected, filters
            bitmap = vector_dates_allowed(filters, last_id=last)
            assert _bitmap_patents(bitmap, filters) == expected, filters
    finally:
        Patent.objects.filter(pk=undated.pk).update(source_date=dt.date(2010, 1, 1))
        Patent.objects.filter(pk__in=[p.pk for p in filed]).update(filing_date=None)
        search_index_dates_write()


@pytest.mark.django_db
@pytest.mark.parametrize("threshold", [50_000, 100], ids=["flat", "ivf"])
def test_a_date_filter_is_applied_inside_the_search(big_corpus, settings, threshold, monkeypatch):
    """With the table, what the index returns already passes the dates: the search asks
    for as many candidates as an unfiltered one, and every candidate passes."""
    from search.store import LoadedIndex

    settings.SEARCH_IVF_THRESHOLD = threshold
    settings.SEARCH_EXACT_SUBSET_MAX = 0
    search_index_rebuild()
    reader_reset()
    calls = []
    real_search = LoadedIndex.search

    def spy(self, vectors, k, *, allowed=None):
        found = real_search(self, vectors, k, allowed=allowed)
        calls.append((k, allowed is not None, [int(i) for i in found[1][0] if i >= 0]))
        return found

    monkeypatch.setattr(LoadedIndex, "search", spy)
    try:
        from search.models import IndexedVector

        filters = SearchFilters(origin="reference", before=dt.date(1980, 1, 1))
        keep = set(patents_matching(filters).values_list("pk", flat=True))
        for query in _queries(big_corpus):
            calls.clear()
            hits = search_patents(query, filters=filters, k=10, engine="dense").hits
            assert [h.patent.pk for h in hits] == _exhaustive_dense(query, filters)
            (k, selected, ids), *_ = calls
            assert selected
            owners = dict(IndexedVector.objects.filter(pk__in=ids).values_list("pk", "patent_id"))
            assert ids and {owners[i] for i in ids} <= keep
    finally:
        settings.SEARCH_IVF_THRESHOLD = 50_000
        search_index_rebuild()
        reader_reset()


@pytest.mark.django_db
def test_vectors_newer_than_the_table_are_let_through(big_corpus, monkeypatch):
    """An invention indexed while the table was not brought up to date (its refresh
    failed) is still found by a date filter: unknown vectors pass to the database check."""
    from search import services

    failed = []

    def broken(**kwargs):
        failed.append(kwargs)
        raise OSError("disk full")

    monkeypatch.setattr("search.vector_dates.vector_dates_refresh", broken)
    patent = patent_published(
        n=999, title="Kettle with a tilting spout", abstract="A kettle whose spout tilts."
    )
    try:
        services.search_index_update()
        assert failed  # the update ran on, without the table
        filters = SearchFilters(origin="generated", after=dt.date(2020, 1, 1))
        hits = search_patents("kettle with a tilting spout", filters=filters, k=5, engine="dense")
        assert patent.pk in [h.patent.pk for h in hits.hits]
    finally:
        monkeypatch.undo()
        patent_withdraw(patent=patent, reason="test")
        search_index_rebuild()
        reader_reset()


@pytest.mark.django_db
def test_the_table_grows_by_the_new_rows_and_a_damaged_one_is_written_again(
    big_corpus, caplog, settings
):
    import numpy as np

    from search.store import index_dir
    from search.vector_dates import META, vector_dates_refresh

    whole = search_index_dates_write()
    full_table = np.load(index_dir() / whole["file"])
    # As if written when half the rows existed: the refresh adds the other half.
    half = {**whole, "through": whole["through"] // 2}
    (index_dir() / META).write_text(json.dumps(half))
    grown = vector_dates_refresh()
    assert grown["through"] == whole["through"]
    table = np.load(index_dir() / grown["file"])
    assert np.array_equal(table[:, : whole["through"] + 1], full_table[:, : whole["through"] + 1])

    (index_dir() / grown["file"]).write_bytes(b"not a numpy file")
    settings.SEARCH_EXACT_SUBSET_MAX = 0  # the deep search, which reads the table
    filters = SearchFilters(origin="reference", before=dt.date(1980, 1, 1))
    query = _queries(random.Random(3))[0]
    hits = search_patents(query, filters=filters, k=10, engine="dense").hits
    assert [h.patent.pk for h in hits] == _exhaustive_dense(query, filters)
    assert "vector dates unusable" in caplog.text
    repaired = vector_dates_refresh()
    upto = whole["through"] + 1
    assert np.array_equal(np.load(index_dir() / repaired["file"])[:, :upto], table[:, :upto])


@pytest.mark.django_db
def test_the_candidates_check_agrees_with_the_database_filter(big_corpus):
    """``patents_passing`` (the filter applied to candidates fetched by id) keeps exactly
    what ``patents_matching`` (the filter in SQL) keeps, over every kind of filter,
    withdrawn and undated patents included."""
    from search.selectors import patents_passing

    references = list(Patent.objects.filter(origin=Patent.Origin.REFERENCE).order_by("pk")[:12])
    Patent.objects.filter(pk=references[0].pk).update(source_date=None)
    Patent.objects.filter(pk__in=[p.pk for p in references[1:4]]).update(
        cpc_codes=" H04L12/28 A61B5/02 "
    )
    Patent.objects.filter(pk__in=[p.pk for p in references[4:6]]).update(
        filing_date=dt.date(2009, 1, 1)
    )
    withdrawn = Patent.objects.filter(origin=Patent.Origin.REFERENCE).order_by("pk")[20]
    Patent.objects.filter(pk=withdrawn.pk).update(status=Patent.Status.WITHDRAWN)
    every = list(Patent.objects.values_list("pk", flat=True))
    try:
        for filters in [
            *DATE_FILTERS,
            SearchFilters(origin="all"),
            SearchFilters(origin="reference"),
            SearchFilters(origin="all", cpc=("H04L",)),
            SearchFilters(origin="all", cpc=("A61B5/02", "G06F")),
            SearchFilters(origin="generated", generator="test/model", mode="top-down"),
            SearchFilters(origin="generated", mode="bottom-up"),
            SearchFilters(origin="reference", before=dt.date(2010, 5, 1), cpc=("H04L",)),
        ]:
            expected = set(patents_matching(filters).values_list("pk", flat=True))
            assert patents_passing(filters=filters, patent_ids=every) == expected, filters
    finally:
        Patent.objects.filter(pk=references[0].pk).update(source_date=dt.date(2010, 1, 1))
        Patent.objects.filter(pk__in=[p.pk for p in references[1:6]]).update(
            cpc_codes="", filing_date=None
        )
        Patent.objects.filter(pk=withdrawn.pk).update(status=Patent.Status.PUBLISHED)


BROAD_FILTERS = [
    SearchFilters(origin="reference", after=dt.date(2010, 5, 1)),
    SearchFilters(origin="all", before=dt.date(2010, 6, 1)),
    SearchFilters(origin="reference", before=dt.date(2010, 7, 1), after=dt.date(2010, 2, 1)),
]


@pytest.mark.django_db
def test_the_table_by_patent_agrees_with_the_database_filter(big_corpus):
    """``patents_passing_indexed`` (candidates of the indexes, decided by the table of dates
    by patent where the filter is dates and origin alone) keeps what ``patents_matching``
    keeps, undated references and filing dates included; other filters go to the rows."""
    from search.models import IndexedVector
    from search.selectors import patents_passing_indexed
    from search.store import index_dir
    from search.vector_dates import META, patent_dates_passing

    references = list(Patent.objects.filter(origin=Patent.Origin.REFERENCE).order_by("pk")[:12])
    Patent.objects.filter(pk=references[0].pk).update(source_date=None)
    Patent.objects.filter(pk__in=[p.pk for p in references[4:6]]).update(
        filing_date=dt.date(2009, 1, 1)
    )
    try:
        # A table written before the rows by patent existed is written again whole.
        meta = json.loads((index_dir() / META).read_text())
        (index_dir() / META).write_text(
            json.dumps({k: v for k, v in meta.items() if not k.startswith("patents_")})
        )
        assert search_index_dates_write()["patents_file"]
        indexed = set(IndexedVector.objects.values_list("patent_id", flat=True))
        for filters in [*DATE_FILTERS, *BROAD_FILTERS]:
            expected = set(patents_matching(filters).values_list("pk", flat=True)) & indexed
            decided = patent_dates_passing(filters, indexed)
            assert decided is not None and decided[1] == [], filters
            assert decided[0] == expected, filters
            assert patents_passing_indexed(filters=filters, patent_ids=indexed) == expected
        cpc = SearchFilters(origin="reference", after=dt.date(2010, 5, 1), cpc=("H04L",))
        assert patent_dates_passing(cpc, indexed) is None
    finally:
        Patent.objects.filter(pk=references[0].pk).update(source_date=dt.date(2010, 1, 1))
        Patent.objects.filter(pk__in=[p.pk for p in references[4:6]]).update(filing_date=None)
        search_index_dates_write()


@pytest.mark.django_db
@pytest.mark.parametrize("filters", BROAD_FILTERS, ids=["reference-after", "before", "window"])
def test_a_broad_date_filter_fetches_no_candidate_rows(big_corpus, monkeypatch, filters):
    """A filter keeping a large share by dates and origin alone: both engines' candidates
    (the dense search's and the keyword post-filter's) are decided by the table, no
    patent row fetched, and the page is the one the database check gives."""
    from search import selectors, vector_dates

    search_index_dates_write()
    real_passing = selectors.patents_passing
    real_table = vector_dates.patent_dates_passing
    fetched: list[int] = []
    use_table = [True]

    def passing(*, filters, patent_ids):
        ids = list(patent_ids)
        fetched.extend(ids)
        return real_passing(filters=filters, patent_ids=ids)

    monkeypatch.setattr(selectors, "patents_passing", passing)
    monkeypatch.setattr(
        vector_dates,
        "patent_dates_passing",
        lambda f, ids: real_table(f, ids) if use_table[0] else None,
    )
    assert patents_matching(filters).count() > 0.05 * Patent.objects.count()
    for query in _queries(big_corpus):
        fetched.clear()
        use_table[0] = True
        by_table = search_patents(query, filters=filters, k=10)
        assert fetched == []
        use_table[0] = False
        by_rows = search_patents(query, filters=filters, k=10)
        assert len(fetched) > 10  # the same search, candidates fetched from the database
        assert [h.patent.pk for h in by_table.hits] == [h.patent.pk for h in by_rows.hits]
        assert len(by_table.hits) == 10
        assert all(patents_matching(filters).filter(pk=h.patent.pk).exists() for h in by_table.hits)


# Bounds on both date columns (a pass over the rows), open-ended and empty ranges.
ROW_FILTERS = [
    SearchFilters(origin="all", before=dt.date(2010, 3, 15), filed_before=dt.date(2010, 6, 1)),
    SearchFilters(origin="reference", after=dt.date(2010, 9, 1), before=dt.date(2010, 2, 1)),
    SearchFilters(origin="all", after=dt.date(1975, 3, 1), before=dt.date(1975, 3, 2)),
    SearchFilters(origin="generated", before=dt.date(2100, 1, 1)),
    SearchFilters(origin="all", after=dt.date(1600, 1, 1)),
]


@pytest.mark.django_db
def test_ivf_lists_test_the_dates_by_row_as_the_id_map_would(big_corpus, settings):
    """The bitmap in the IVF index's row order (no id translated while the lists are
    scanned) keeps exactly the rows the bitmap by vector id keeps through the id map,
    rows the table does not know included, and the search finds the same."""
    import faiss
    import numpy as np

    from search.embeddings import embed_queries
    from search.models import IndexedVector
    from search.selectors import index_for_search
    from search.store import index_dir
    from search.vector_dates import (
        META,
        _row_orders,
        vector_dates_reset,
        vector_dates_selection,
        vector_dates_share,
        vector_dates_warm,
    )

    settings.SEARCH_IVF_THRESHOLD = 100
    search_index_rebuild()
    reader_reset()
    try:
        loaded = index_for_search(model=settings.EMBEDDING_MODEL)
        assert loaded.delta is None and hasattr(
            faiss.downcast_index(loaded.index.index), "refine_index"
        )
        id_map = faiss.vector_to_array(loaded.index.id_map).astype("int64")
        last = IndexedVector.objects.order_by("-pk").values_list("pk", flat=True)[0]
        query = embed_queries([_queries(random.Random(5))[0]])
        # Warmed at a worker's start: the row order and the sorted days are made there.
        vector_dates_reset()
        assert vector_dates_warm(loaded.segments)
        ((segment, order, _),) = _row_orders.values()
        assert segment is loaded.index and 0 in order._sorted
        meta = json.loads((index_dir() / META).read_text())
        for through in (meta["through"], meta["through"] // 2):
            # The second pass: a table behind the index, whose newer rows are let through.
            (index_dir() / META).write_text(json.dumps({**meta, "through": through}))
            vector_dates_reset()
            table = np.load(index_dir() / meta["file"])[:, : through + 1]
            known = int(np.count_nonzero(table[2]))
            for filters in [*DATE_FILTERS, *ROW_FILTERS]:
                selection = vector_dates_selection(filters, last_id=last)
                by_id = np.unpackbits(selection.ids, bitorder="little").astype(bool)
                by_row = np.unpackbits(selection.rows(loaded.index), bitorder="little")
                assert np.array_equal(by_row[: len(id_map)].astype(bool), by_id[id_map]), filters
                if through < meta["through"]:
                    assert by_row[id_map > through].all()
                # The share, counted by day, is the bitmap's count over the known rows.
                kept = int(np.count_nonzero(by_id[: through + 1]))
                assert round(vector_dates_share(filters) * known) == kept, filters
                scores, ids = loaded.search(query, 40, allowed=selection)
                translated = loaded.search(query, 40, allowed=selection.ids)
                assert np.array_equal(ids, translated[1]), filters
                assert np.allclose(scores, translated[0]), filters
    finally:
        search_index_dates_write()
        vector_dates_reset()
        settings.SEARCH_IVF_THRESHOLD = 50_000
        search_index_rebuild()
        reader_reset()
