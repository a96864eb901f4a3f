"""A first load builds the near-copy index once, at its end (patents/importing.py): inserting
64 random band values a patent into that index was the largest part of a million-patent
import. Whatever happens to the import, the index is there after it."""

import json

import pytest
from django.db import connection

import patents.importing as importing
from patents.importing import reference_import_records
from patents.models import MinHashBand
from patents.nearcopy import near_copy_find


def _value_index_present() -> bool:
    name = next(i.name for i in MinHashBand._meta.indexes if list(i.fields) == ["value"])
    with connection.cursor() as cursor:
        return name in connection.introspection.get_constraints(cursor, MinHashBand._meta.db_table)


def _lines(path, start=0, stop=None):
    return list(enumerate(path.read_text().splitlines()[start:stop], start=1))


def _drop_value_index():
    index = next(i for i in MinHashBand._meta.indexes if list(i.fields) == ["value"])
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {connection.ops.quote_name(index.name)}")


@pytest.fixture
def no_enqueue(monkeypatch):
    import search.services as services

    monkeypatch.setattr(services, "search_index_update_enqueue", lambda: False)


@pytest.mark.django_db
def test_a_first_load_builds_the_band_index_at_its_end_and_finds_near_copies(
    fixture_jsonl, no_enqueue
):
    assert _value_index_present()
    report = reference_import_records(_lines(fixture_jsonl, 0, 20), batch_size=7)
    assert report.imported == 20 and report.bands_index_seconds is not None
    assert "near-copy index built in" in report.summary()
    assert _value_index_present()
    assert MinHashBand.objects.count() == 20 * 64
    # The index serves near-copy checks: a reference's own text is found as its copy.
    record = json.loads(fixture_jsonl.read_text().splitlines()[3])
    claims = [c.split(". ", 1)[-1] if c[:1].isdigit() else c for c in record["claims"]]
    found = near_copy_find(abstract=record["abstract"], claims=claims)
    assert found is not None and found.patent.source_id == record["id"]

    # A later import into a site that has bands keeps the index in place all along.
    report = reference_import_records(_lines(fixture_jsonl, 20), batch_size=7)
    assert report.imported == 20 and report.bands_index_seconds is None
    assert "near-copy index" not in report.summary()
    assert _value_index_present() and MinHashBand.objects.count() == 40 * 64


@pytest.mark.django_db
def test_an_import_that_fails_halfway_still_leaves_the_index(
    fixture_jsonl, no_enqueue, monkeypatch
):
    write = importing._reference_batch_write
    calls = []

    def failing(parsed, bands, report):
        calls.append(len(parsed))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return write(parsed, bands, report)

    monkeypatch.setattr(importing, "_reference_batch_write", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        reference_import_records(_lines(fixture_jsonl), batch_size=5)
    assert _value_index_present()
    assert MinHashBand.objects.count() == 5 * 64  # the first batch's patents, whole


@pytest.mark.django_db
def test_an_import_after_one_killed_before_its_end_builds_the_missing_index(
    fixture_jsonl, no_enqueue
):
    reference_import_records(_lines(fixture_jsonl, 0, 10))
    _drop_value_index()  # as a first load killed (SIGKILL) before its end leaves it
    assert not _value_index_present()
    report = reference_import_records(_lines(fixture_jsonl, 10, 12))
    assert report.bands_index_seconds is not None and _value_index_present()


@pytest.mark.django_db
def test_near_copy_checks_stay_right_without_the_index(fixture_jsonl, no_enqueue):
    """What a worker publishing during a first load sees: a scan, the same answer."""
    reference_import_records(_lines(fixture_jsonl, 0, 10))
    record = json.loads(fixture_jsonl.read_text().splitlines()[2])
    claims = [c.split(". ", 1)[-1] if c[:1].isdigit() else c for c in record["claims"]]
    with_index = near_copy_find(abstract=record["abstract"], claims=claims)
    _drop_value_index()
    without = near_copy_find(abstract=record["abstract"], claims=claims)
    assert with_index is not None and without is not None
    assert without.patent.pk == with_index.patent.pk and without.similarity == with_index.similarity
    reference_import_records(_lines(fixture_jsonl, 10, 11))
    assert _value_index_present()
