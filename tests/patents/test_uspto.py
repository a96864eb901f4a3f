"""USPTO full-text import on the real sample files in ../shared/data/uspto-samples."""

import zipfile

import pytest
from django.core.management import call_command

from patents.importing import uspto_import_paths
from patents.models import Patent
from patents.uspto import DocumentError, uspto_document_parse, uspto_documents
from tests.helpers import shared_path


@pytest.fixture(scope="module")
def samples():
    return shared_path("data", "uspto-samples")


def _one(path):
    docs = list(uspto_documents(path))
    assert len(docs) == 1
    return uspto_document_parse(docs[0][1])


def test_every_sample_file_parses(samples):
    count = 0
    for path in sorted(samples.iterdir()):
        for _, text in uspto_documents(path):
            record = uspto_document_parse(text)
            assert record["id"].startswith("US") and record["title"], path.name
            count += 1
    assert count >= 30


def test_modern_grant_fields_checked_by_hand(samples):
    r = _one(samples / "grant_v4-5-B1.xml")
    assert r["id"] == "US9358892" and r["kind"] == "B1"
    assert r["date"] == "2016-06-07" and r["filing_date"] == "2014-12-02"
    assert r["title"] == (
        "System and method for pre-charging a hybrid vehicle for improving "
        "reverse driving performance"
    )
    assert r["abstract"].startswith("A method/system is provided for improving reverse hill")
    assert len(r["claims"]) == 20
    assert r["claims"][0]["text"].startswith("A pre-charging system for improving reverse")
    assert r["claims"][0]["depends_on"] is None and r["claims"][1]["depends_on"] == 1
    assert r["cpc"][0] == "B60L 11/1809" and "B60L 9/00" in r["ipc"]
    assert "US5856709A" in r["citations"]


def test_2001_grant_and_application_formats(samples):
    g = _one(samples / "grant_v2-5-B1.xml")
    assert (g["id"], g["kind"], g["title"]) == ("US6334226", "B1", "Faucet support member")
    assert g["date"] == "2002-01-01" and g["filing_date"] == "2000-04-24"
    assert len(g["claims"]) == 31 and g["claims"][1]["depends_on"] == 1
    assert g["claims"][0]["text"].startswith("A faucet support member configured to")
    a = _one(samples / "pap_US20010000943A1.xml")
    assert a["id"] == "US20010000943A1" and a["date"] == "2001-05-10"
    assert a["title"].startswith("Organic electroluminescence device")
    assert len(a["claims"]) == 13 and a["claims"][2]["depends_on"] == 2
    d = _one(samples / "sgml_USD435854S1.xml")  # a commented-out DOCTYPE, a design patent
    assert d["id"] == "USD435854" and d["title"] == "Disc cartridge"
    assert d["claims"][0]["text"].startswith("The ornamental design for a disc cartridge")


def test_named_entities_become_text(samples):
    r = _one(samples / "sgml_US06337117.xml")
    body = r["abstract"] + " ".join(c["text"] for c in r["claims"])
    assert "&deg;" not in body and "[deg]" not in body


def test_bad_documents_are_reported_not_fatal(tmp_path, samples):
    with pytest.raises(DocumentError):
        uspto_document_parse("<not-a-patent/>")
    good = (samples / "grant_v4-5-B2.xml").read_text()
    mixed = tmp_path / "mixed.xml"
    mixed.write_text(good + '\n<?xml version="1.0"?>\n<us-patent-grant><broken\n' + good)
    docs = list(uspto_documents(mixed))
    assert len(docs) == 3


@pytest.mark.django_db
def test_importer_streams_both_weekly_archives_idempotently(samples, capsys):
    archives = sorted(samples.glob("ipgb*.zip"))
    assert len(archives) == 2
    expected = 0
    for archive in archives:
        with zipfile.ZipFile(archive) as z:
            xml = next(n for n in z.namelist() if n.endswith(".xml"))
            expected += z.read(xml).decode().count("<?xml")
    report = uspto_import_paths(archives)
    assert report.imported + report.skipped_existing == expected
    assert report.imported == Patent.objects.count() >= expected - 1
    assert not report.bad
    call_command("import_patents", *map(str, archives), "--no-progress")
    assert "imported 0" in capsys.readouterr().out
    p = Patent.objects.get(source_id="USD982278")
    assert p.title == "Support undergarment" and p.origin == "reference"
    assert p.source_meta["source"] == "uspto-us-patent-grant"


@pytest.mark.django_db
def test_import_command_reads_xml_and_names_bad_documents(tmp_path, samples, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text('<?xml version="1.0"?>\n<us-patent-grant><oops>\n')
    call_command("import_patents", str(samples / "grant_v4-5-B1.xml"), str(bad), "--no-progress")
    out = capsys.readouterr().out
    assert Patent.objects.filter(source_id="US9358892").exists()
    assert "bad.xml:line 1: not well-formed XML" in out


def test_a_broken_document_between_good_ones_is_skipped(tmp_path, samples):
    good = (samples / "grant_v4-5-B2.xml").read_text().rstrip("\n") + "\n"
    mixed = tmp_path / "week.xml"
    mixed.write_text(good + '<?xml version="1.0"?>\n<us-patent-grant><broken\n' + good)
    results = []
    for _, text in uspto_documents(mixed):
        try:
            results.append(uspto_document_parse(text)["id"])
        except DocumentError:
            results.append("bad")
    assert results == ["US11147202", "bad", "US11147202"]


def test_canceled_claims_are_not_claims(samples):
    """Seen in the shared data: "1-18. (canceled)" parsed as claim 1, so the application's
    "first claim" (search_eval's query, the page's claim 1) claimed nothing."""
    a = _one(samples / "application_v4-4-A2.xml")
    assert all("canceled" not in c["text"].lower() for c in a["claims"])
    first = a["claims"][0]
    assert first["number"] == 19 and first["text"].startswith("A personal grooming apparatus")
    assert a["claims"][1]["depends_on"] == 19
