"""The public counts are tallies that the writes keep (publish, import, withdraw), read exact
at every request; ``manage.py patent_tallies`` checks them against the patents and mends
them."""

import datetime as dt
import importlib
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from patents.importing import reference_import_records
from patents.models import Patent, PatentTally, ReferenceAreaTally
from patents.selectors import (
    generator_models_published,
    patent_counts,
    patent_tallies_counted,
    patent_tallies_problems,
    patents_browse_count,
    reference_areas_kept,
)
from patents.services import patent_withdraw
from tests.factories import patent_published


def _home_counts(client) -> tuple[str, str]:
    html = client.get("/").content.decode()
    generated = html.split("</strong> inventions published")[0].rsplit("<strong>", 1)[1]
    references = html.split(" reference patents.")[0].rsplit(" ", 1)[1]
    return generated, references


def _references(n: int, start: int = 0, cpc=()) -> list[tuple[int, str]]:
    return [
        (
            i + 1,
            json.dumps(
                {
                    "id": f"US-TALLY-{start + i}",
                    "title": f"Reference gadget {start + i}",
                    "abstract": f"A gadget {start + i} of the references, with a lever.",
                    "claims": [f"1. A gadget {start + i} comprising a lever."],
                    "date": "2001-02-03",
                    "cpc": list(cpc),
                }
            ),
        )
        for i in range(n)
    ]


@pytest.mark.django_db
def test_public_counts_follow_every_write_at_once(client, settings, monkeypatch):
    """Counts kept a minute per process lagged that long; the tallies do not, however long
    PUBLIC_FIGURES_SECONDS is and whatever the clock says."""
    import allthepatents.kept

    monkeypatch.setattr(allthepatents.kept.time, "monotonic", lambda: 1000.0)
    settings.PUBLIC_FIGURES_SECONDS = 3600
    assert _home_counts(client) == ("0", "0")
    a = [
        patent_published(n=n, provenance={"generator_model": "m/a", "mode": "top-down"})
        for n in range(3)
    ]
    b = patent_published(n=9, provenance={"generator_model": "m/b", "mode": "bottom-up"})
    assert _home_counts(client) == ("4", "0")
    reference_import_records(_references(5))
    reference_import_records(_references(5))  # again: all skipped, none counted twice
    assert _home_counts(client) == ("4", "5")
    patent_withdraw(patent=a[0], reason="test")
    patent_withdraw(patent=a[0], reason="test")  # twice: counted once
    patent_withdraw(patent=b, reason="test")
    reference = Patent.objects.filter(origin=Patent.Origin.REFERENCE).first()
    patent_withdraw(patent=reference, reason="test")
    assert _home_counts(client) == ("2", "4")
    assert b"<strong>2</strong> inventions published" in client.get("/stats/").content
    assert patent_counts() == {"generated": 2, "reference": 4}
    assert patents_browse_count(origin="generated", generator="m/a") == 2
    assert patents_browse_count(origin="generated", generator="m/b") == 0
    assert patents_browse_count(origin="generated", mode="bottom-up") == 0
    assert patents_browse_count(origin="generated", generator="m/a", mode="top-down") == 2
    assert generator_models_published() == ["m/a"]  # m/b's only one was withdrawn
    # The browse pages' page count is the tally's: one page each, and no second.
    assert client.get("/patents/?generator=m/a").status_code == 200
    assert client.get("/patents/?generator=m/a&page=2").status_code == 404
    assert client.get("/patents/?origin=reference").status_code == 200
    assert patent_tallies_problems() == []


@pytest.mark.django_db
def test_check_names_each_difference_and_rebuild_mends_them():
    for n in range(3):
        patent_published(n=n, provenance={"generator_model": "m/a", "mode": "top-down"})
    reference_import_records(_references(2))
    call_command("patent_tallies", "check")
    # Rows written around the services: a withdrawal by hand, an invention's model renamed.
    first = Patent.objects.filter(origin=Patent.Origin.REFERENCE).order_by("id")[0]
    Patent.objects.filter(pk=first.pk).update(status=Patent.Status.WITHDRAWN)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE patents_patent SET generator_model = 'm/renamed' WHERE id = "
            "(SELECT MIN(id) FROM patents_patent WHERE generator_model = 'm/a')"
        )
    problems = patent_tallies_problems()
    assert problems == [
        "generated m/a top-down: 3 kept, 2 published",
        "generated m/renamed top-down: 0 kept, 1 published",
        "reference (no model) (no mode): 2 kept, 1 published",
    ], problems
    with pytest.raises(CommandError, match="m/renamed top-down: 0 kept, 1 published"):
        call_command("patent_tallies")
    call_command("patent_tallies", "rebuild")
    call_command("patent_tallies", "check")
    assert patent_counts() == {"generated": 3, "reference": 1}


@pytest.mark.django_db
def test_a_tally_gone_wrong_never_stops_a_withdrawal():
    """A tally that reads 0 for an invention that is there (rows loaded around the
    services) must not make its withdrawal fail: the count goes below zero, the pages read
    0, and check names it."""
    patent = patent_published(n=1)
    PatentTally.objects.all().delete()
    patent_withdraw(patent=patent, reason="a court order")
    assert Patent.objects.get(pk=patent.pk).is_withdrawn
    assert patent_counts()["generated"] == 0
    assert patent_tallies_problems() == ["generated test/model top-down: -1 kept, 0 published"]


@pytest.mark.django_db
def test_tallies_of_patents_published_before_them_are_filled_in():
    """A site that published before the tallies were kept gets them when it migrates."""
    from django.apps import apps

    fill = importlib.import_module("patents.migrations.0013_patent_tallies").patent_tallies_fill
    for n in range(2):
        patent_published(n=n, provenance={"generator_model": "m/a", "mode": "bottom-up"})
    patent_withdraw(patent=patent_published(n=5), reason="test")
    reference_import_records(_references(3))
    kept = list(
        PatentTally.objects.filter(count__gt=0).values("origin", "generator_model", "mode", "count")
    )
    PatentTally.objects.all().delete()
    fill(apps, connection.schema_editor())
    assert patent_tallies_counted() == kept
    assert patent_tallies_problems() == []
    assert patent_counts() == {"generated": 2, "reference": 3}


@pytest.mark.django_db(transaction=True)
def test_workers_publishing_and_importing_at_once_lose_no_count():
    """Eight threads, each on its own database connection, publish under one new model and
    import references at once: every write meets the others at the same tallies."""
    from concurrent.futures import ThreadPoolExecutor

    def work(i):
        try:
            for n in range(3):
                patent_published(
                    n=100 * i + n, provenance={"generator_model": "m/crowd", "mode": "top-down"}
                )
            # Areas in both orders: imports meeting at the same areas wait, never deadlock.
            areas = ["H04M1/23", "B62B3/02"] if i % 2 else ["B62B5/00", "H04M1/02"]
            reference_import_records(_references(2, start=10 * i, cpc=areas))
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))
    assert patent_counts() == {"generated": 24, "reference": 16}
    assert reference_areas_kept(["B62B", "H04M"]) == {"B62B": 16, "H04M": 16}
    assert patent_tallies_problems() == []


@pytest.mark.django_db
def test_coverage_reads_the_references_of_each_area_from_tallies_the_imports_keep(
    admin_client, django_assert_max_num_queries
):
    """/coverage/ counted each area's references with a LIKE over every reference: 40
    areas at a million references ran past the 25 s request deadline. The imports and
    withdrawals now keep a count an area: the page reads them in one query however many
    areas it shows."""
    from search.models import SearchTally

    reference_import_records(_references(3, cpc=["H04M1/23", "H04M1/247", "G06F3/01"]))
    reference_import_records(_references(2, start=10, cpc=["G06F3/02"]))
    reference_import_records(_references(1, start=20))  # no codes: in no area
    reference_import_records(_references(3, cpc=["H04M1/23"]))  # again: skipped, not counted
    assert reference_areas_kept(["H04M", "G06F", "A61B"]) == {"H04M": 3, "G06F": 5, "A61B": 0}
    patent_withdraw(patent=Patent.objects.get(source_id="US-TALLY-0"), reason="imported by mistake")
    assert reference_areas_kept(["H04M", "G06F"]) == {"H04M": 2, "G06F": 4}
    assert patent_tallies_problems() == []
    today = dt.date.today()
    SearchTally.objects.create(day=today, cpc="H04M", searches=7)
    SearchTally.objects.create(day=today, cpc="G06F", searches=5)
    page = admin_client.get("/coverage/").content.decode()
    assert '<tr class="coverage-row"><td>H04M</td><td>7</td><td>2</td>' in page
    assert '<tr class="coverage-row"><td>G06F</td><td>5</td><td>4</td>' in page
    from generation.selectors import coverage_areas

    with django_assert_max_num_queries(3) as few:
        coverage_areas()
    SearchTally.objects.bulk_create(
        SearchTally(day=today, cpc=f"A{n:02d}B", searches=1) for n in range(30)
    )
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(coverage_areas()) == 32
    # Written around the services, check names it and rebuild mends it.
    Patent.objects.filter(source_id="US-TALLY-10").update(cpc_codes=" A61B5/00 ")
    assert patent_tallies_problems() == [
        "reference patents in A61B: 0 kept, 1 published",
        "reference patents in G06F: 4 kept, 3 published",
    ]
    call_command("patent_tallies", "rebuild")
    assert patent_tallies_problems() == []
    assert reference_areas_kept(["A61B", "G06F"]) == {"A61B": 1, "G06F": 3}


@pytest.mark.django_db
def test_reference_areas_of_references_imported_before_them_are_filled_in():
    from django.apps import apps

    migration = importlib.import_module("patents.migrations.0014_reference_area_tallies")
    reference_import_records(_references(2, cpc=["B62B3/02", "B62B5/00", "H04M1/02"]))
    reference_import_records(_references(1, start=5, cpc=["h04m 1/23"]))
    patent_withdraw(patent=Patent.objects.get(source_id="US-TALLY-1"), reason="test")
    kept = reference_areas_kept(["B62B", "H04M"])
    assert kept == {"B62B": 1, "H04M": 2}
    ReferenceAreaTally.objects.all().delete()
    migration.reference_area_tallies_fill(apps, connection.schema_editor())
    assert reference_areas_kept(["B62B", "H04M"]) == kept
    assert patent_tallies_problems() == []
