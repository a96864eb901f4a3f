"""Public pages, the ledger, dumps, discovery files and escaping of untrusted text."""

import gzip
import hashlib
import json
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from patents.ledger import GENESIS_HASH, ledger_verify
from patents.models import Claim, LedgerEntry, Patent
from patents.services import patent_withdraw
from tests.factories import patent_published
from tests.helpers import ROOT

HOSTILE = {
    "title": '<script>alert("t")</script><img src=x onerror=alert(1)> [x](javascript:alert(2))',
    "abstract": "An abstract <img src=x onerror=alert(3)> and [click](javascript:alert(4)) "
    + "A" * 3000,
    "claims": [
        {
            "number": 1,
            "text": 'A device <script>alert("c")</script> comprising '
            "[link](javascript:alert(5)) and " + "B" * 2000,
        },
        {"number": 2, "text": "The device of claim 1 <svg onload=alert(6)>."},
    ],
}


@pytest.mark.django_db
def test_home_browse_and_pagination_edges(client):
    for n in range(25):
        patent_published(n=n)
    home = client.get("/")
    assert home.status_code == 200 and b"25</strong> inventions published" in home.content
    first = client.get("/patents/")
    assert first.status_code == 200 and b'rel="next"' in first.content
    assert b'rel="last" href="?&amp;page=2">Oldest' in first.content
    assert b'rel="first"' not in first.content
    second = client.get("/patents/?page=2")
    assert second.status_code == 200 and b'rel="prev"' in second.content
    assert b'rel="first" href="?&amp;page=1"' in second.content
    assert b'rel="last"' not in second.content
    assert second.content.count(b'<li><a href="/p/') == 5
    assert client.get("/patents/?page=3").status_code == 404
    assert client.get("/patents/?page=abc").status_code == 404
    assert client.get("/patents/?mode=sideways").status_code == 400
    assert client.get("/patents/?date=nope").status_code == 400
    assert client.get("/patents/?mode=top-down").status_code == 200
    random = client.get("/patents/random/")
    assert random.status_code == 302 and random["Location"].startswith("/p/")


def _listed(response) -> list[str]:
    return re.findall(r'<li><a href="/p/([a-z0-9]+)/">', response.content.decode())


@pytest.mark.django_db
def test_browse_pages_follow_publication_order_and_days_end_at_midnight(client):
    """Pages are cut by keys first (allthepatents.pagination): the same order, every
    invention once. A day's filter is a range on the column: its first and last instant
    in, the next day's first out."""
    from patents.views import PER_PAGE

    day = timezone.make_aware(timezone.datetime(2026, 3, 4))
    at = [day, day + timedelta(hours=12), day + timedelta(days=1) - timedelta(microseconds=1)]
    at += [day + timedelta(days=1)] + [day - timedelta(minutes=n + 1) for n in range(PER_PAGE)]
    patents = [patent_published(n=n, published_at=when) for n, when in enumerate(at)]
    newest_first = [p.public_id for p in sorted(patents, key=lambda p: (p.published_at, p.pk))]
    newest_first.reverse()
    pages = _listed(client.get("/patents/")) + _listed(client.get("/patents/?page=2"))
    assert pages == newest_first
    assert _listed(client.get("/patents/?date=2026-03-04")) == [
        patents[2].public_id,
        patents[1].public_id,
        patents[0].public_id,
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("origin", ["generated", "reference"])
def test_pages_counted_from_the_end_are_the_pages_counted_from_the_start(origin):
    """A page in the second half is cut from the end, along the index backwards: every
    page equals Django's own paginator's, through ties and undated references, and the
    last page skips no rows."""
    from django.core.paginator import Paginator
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from allthepatents.pagination import KeysFirstPaginator
    from patents.importing import reference_import_records
    from patents.selectors import patents_browse, patents_browse_count

    at = timezone.now().replace(microsecond=0)
    for n in range(11):  # pairs published at the same instant: the key breaks the tie
        patent_published(n=n, published_at=at - timedelta(seconds=n // 2))
    records = [
        {
            "id": f"US{9000000 + n}",
            "title": f"Reference {n}",
            "abstract": f"A reference number {n}.",
            "claims": [f"1. A thing {n}."],
            "date": "" if n % 4 == 0 else f"2019-0{1 + n // 5}-01",
        }
        for n in range(13)
    ]
    reference_import_records(enumerate((json.dumps(r) for r in records), start=1))
    rows = patents_browse(origin=origin)
    count = patents_browse_count(origin=origin)
    assert count == rows.count() and count in (11, 13)
    ours = KeysFirstPaginator(rows, 3, count=count)
    theirs = Paginator(rows, 3)
    assert ours.num_pages == theirs.num_pages
    for number in ours.page_range:
        assert [p.pk for p in ours.page(number)] == [p.pk for p in theirs.page(number)], number
    with CaptureQueriesContext(connection) as queries:
        list(ours.page(ours.num_pages))
    keys = queries.captured_queries[0]["sql"]
    assert "OFFSET" not in keys.upper() or re.search(r"OFFSET 0\b", keys.upper()), keys


@pytest.mark.django_db
def test_home_counts_today_in_the_sites_time_zone(client):
    today = timezone.localdate()
    midnight = timezone.make_aware(timezone.datetime.combine(today, timezone.datetime.min.time()))
    patent_published(n=1, published_at=midnight)
    patent_published(n=2, published_at=midnight - timedelta(microseconds=1))
    patent_published(n=3)
    from patents.selectors import generated_today_count

    assert generated_today_count() == 2


@pytest.mark.django_db
def test_a_random_invention_can_be_any_of_them(client):
    patents = [patent_published(n=n) for n in range(3)]
    patent_withdraw(patent=patents[2], reason="test")
    seen = {client.get("/patents/random/")["Location"] for _ in range(60)}
    # Missing one of two in 60 fair draws: 2 * 2**-60.
    assert seen == {f"/p/{p.public_id}/" for p in patents[:2]}


@pytest.mark.django_db
def test_random_draws_are_fair_by_the_ledger_and_by_the_walk(monkeypatch, fixture_jsonl):
    """Drawn by ledger position (a lookup, whatever the size), an invention is as likely
    as any other: a withdrawal's entry and a withdrawn invention are drawn again, and
    references (no ledger entries) never come. The walk along the index, where the draws
    miss, is fair too."""
    from collections import Counter

    import patents.selectors as selectors
    from patents.importing import reference_import_records

    reference_import_records(enumerate(fixture_jsonl.read_text().splitlines(), start=1))
    patents = [patent_published(n=n) for n in range(4)]
    patent_withdraw(patent=patents[1], reason="test")
    visible = {p.public_id for p in patents} - {patents[1].public_id}
    for draws in (selectors.RANDOM_LEDGER_DRAWS, 0):
        monkeypatch.setattr(selectors, "RANDOM_LEDGER_DRAWS", draws)
        counts = Counter(selectors.patent_random_public_id() for _ in range(600))
        assert set(counts) == visible, counts
        # 200 expected each; sd 11.5: outside 140-260 in about one run in 10**7.
        assert all(140 <= n <= 260 for n in counts.values()), (draws, counts)


@pytest.mark.django_db
def test_the_generator_filter_offers_each_model_that_published_once(client):
    from patents.selectors import generator_models_published

    for n, model in enumerate(["m/b", "m/a", "m/b", "m/a-2", ""]):
        patent_published(n=n, provenance={"generator_model": model, "mode": "top-down"})
    withdrawn = patent_published(n=9, provenance={"generator_model": "m/gone", "mode": "top-down"})
    patent_withdraw(patent=withdrawn, reason="test")
    assert generator_models_published() == ["m/a", "m/a-2", "m/b"]


def test_kept_figures_are_bounded_in_number(settings):
    """A browse count is kept per filter value; endless values must not grow a process."""
    from allthepatents import kept as kept_module

    settings.PUBLIC_FIGURES_SECONDS = 60
    calls = []

    def figure(*, n):
        calls.append(n)
        return {"n": n}

    for n in range(kept_module.KEPT_MAX + 10):
        assert kept_module.kept(figure, n=n) == {"n": n}
    assert len(kept_module._kept) == kept_module.KEPT_MAX
    kept_module.kept(figure, n=kept_module.KEPT_MAX + 9)  # the newest is still kept
    kept_module.kept(figure, n=0)  # the oldest went
    assert calls[-1] == 0 and calls.count(kept_module.KEPT_MAX + 9) == 1


@pytest.mark.django_db
def test_invention_page_shows_everything_an_examiner_needs(client):
    patent = patent_published(n=7)
    page = client.get(f"/p/{patent.public_id}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert patent.content_hash in html
    assert patent.published_at.strftime("%Y-%m-%d %H:%M:%S") in html
    assert 'claim <a href="#claim-1">1</a>' in html
    assert 'id="claim-1"' in html and 'class="independent"' in html
    assert "@misc{allthepatents-" in html and "machine" in html.lower()
    assert f'<link rel="canonical" href="http://127.0.0.1:8000/p/{patent.public_id}/">' in html
    assert "test/model" in html  # provenance


@pytest.mark.django_db
def test_unknown_id_is_a_404_page(client):
    response = client.get("/p/doesnotexist/")
    assert response.status_code == 404
    assert client.get("/api/patents/doesnotexist").status_code == 404
    assert client.get("/p/doesnotexist.json").status_code == 404


@pytest.mark.django_db
def test_downloads_of_one_invention(client):
    patent = patent_published(n=3)
    md = client.get(f"/p/{patent.public_id}.md")
    assert md.status_code == 200 and md["Content-Disposition"].startswith("attachment")
    assert md.content.decode().startswith("# Patent\n\n## Title\nSelf-cleaning widget 3")
    data = json.loads(client.get(f"/p/{patent.public_id}.json").content)
    assert data["content_hash"] == patent.content_hash and len(data["claims"]) == 2
    api = client.get(f"/api/patents/{patent.public_id}").json()
    for field in ("public_id", "title", "abstract", "claims", "content_hash", "provenance"):
        assert data[field] == api[field], field
    assert data["provenance"]["generator_model"] == patent.generator_model


@pytest.mark.django_db
def test_jsonld_parses_and_has_the_fields(client):
    patent = patent_published(n=4, title="A </script><script>alert(1)</script> & more")
    html = client.get(f"/p/{patent.public_id}/").content.decode()
    blocks = re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    assert len(blocks) == 1
    data = json.loads(blocks[0])
    assert data["@type"] == "CreativeWork"
    assert data["datePublished"] == patent.published_at.isoformat()
    assert data["name"] == patent.title
    ids = {i["propertyID"]: i["value"] for i in data["identifier"]}
    assert ids == {"public_id": patent.public_id, "sha256": patent.content_hash}


@pytest.mark.django_db
def test_hostile_text_renders_inert_everywhere(client, admin_client):
    patent = patent_published(**HOSTILE)
    urls = [
        f"/p/{patent.public_id}/",
        "/",
        "/patents/",
        "/feed.atom",
        f"/api/patents/{patent.public_id}",
        f"/admin/patents/patent/{patent.pk}/change/",
        "/admin/patents/patent/",
    ]
    for url in urls:
        c = admin_client if url.startswith("/admin/") else client
        response = c.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert "<script>alert" not in body, url
        assert "<img src=x onerror" not in body, url
        assert "<svg onload" not in body, url
        assert 'href="javascript:' not in body, url
    page = client.get(f"/p/{patent.public_id}/").content.decode()
    assert "&lt;script&gt;alert" in page
    api = json.loads(client.get(f"/api/patents/{patent.public_id}").content)
    assert api["title"] == HOSTILE["title"]  # escaped on the wire, intact when parsed
    # Long unbroken strings wrap instead of widening the page.
    css = (ROOT / "static" / "css" / "site.css").read_text()
    assert "overflow-wrap: anywhere" in css


@pytest.mark.django_db
def test_ledger_appends_and_verifies():
    patents = [patent_published(n=n) for n in range(5)]
    entries = list(LedgerEntry.objects.order_by("id"))
    assert len(entries) == 5 and entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.entry_hash for a, b in zip(entries, entries[1:], strict=False))
    patent_withdraw(patent=patents[2], reason="duplicate")
    assert LedgerEntry.objects.filter(kind="withdraw").count() == 1
    checked, problem = ledger_verify()
    assert problem is None and checked == 6
    call_command("ledger", "verify", "--no-progress")


@pytest.mark.django_db
def test_ledger_verify_names_the_tampered_entry():
    patents = [patent_published(n=n) for n in range(4)]
    target = patents[2]
    with connection.cursor() as cursor:  # an edit behind the app's back
        cursor.execute(
            "UPDATE patents_claim SET text = %s WHERE patent_id = %s AND number = 1",
            ["A widget that was quietly changed.", target.pk],
        )
    entry = LedgerEntry.objects.get(patent=target)
    checked, problem = ledger_verify()
    assert problem.entry_id == entry.pk and "content changed" in problem.why and checked == 2
    with pytest.raises(CommandError, match=f"ledger entry {entry.pk} \\({target.public_id}\\)"):
        call_command("ledger", "verify", "--no-progress")


@pytest.mark.django_db
def test_withdrawn_invention_leaves_a_tombstone(client):
    patent = patent_published(n=9)
    patent_withdraw(patent=patent, reason="requested by operator")
    response = client.get(f"/p/{patent.public_id}/")
    assert response.status_code == 410
    assert (
        b"Withdrawn invention" in response.content
        and patent.content_hash.encode() in response.content
    )
    assert Patent.objects.filter(pk=patent.pk).exists()
    assert client.get(f"/p/{patent.public_id}.json").status_code == 404


@pytest.mark.django_db
def test_ledger_page_lists_daily_heads(client):
    first = patent_published(n=1, published_at=timezone.now() - timedelta(days=1))
    patent_published(n=2)
    html = client.get("/ledger/").content.decode()
    last = LedgerEntry.objects.order_by("-id").first()
    assert last.entry_hash in html
    assert first.published_at.strftime("%Y-%m-%d") in html


@pytest.mark.django_db
def test_dump_round_trip(client, settings, tmp_path):
    settings.EXPORT_DIR = tmp_path / "dumps"
    patents = [patent_published(n=n) for n in range(3)]
    patent_published(**HOSTILE)
    call_command("export_dump", "--no-progress")
    manifest_path = next((tmp_path / "dumps").glob("*.manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    dump = tmp_path / "dumps" / manifest["file"]
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == manifest["sha256"]
    assert manifest["chain_head"] == LedgerEntry.objects.order_by("-id").first().entry_hash
    with gzip.open(dump, "rt") as fh:
        records = [json.loads(line) for line in fh]
    assert len(records) == manifest["count"] == 4
    by_id = {r["public_id"]: r for r in records}
    from patents.text import content_hash

    for p in patents:
        r = by_id[p.public_id]
        assert (
            content_hash(title=r["title"], abstract=r["abstract"], claims=r["claims"])
            == r["content_hash"]
            == p.content_hash
        )
    listing = client.get("/downloads/").content.decode()
    assert manifest["file"] in listing and manifest["sha256"] in listing
    served = client.get(f"/downloads/{manifest['file']}")
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == dump.read_bytes()
    assert client.get("/downloads/..%2Fsecret_key").status_code == 404
    assert client.get("/downloads/etc-passwd").status_code == 404


@pytest.fixture
def big_dump(settings, tmp_path, monkeypatch):
    """A dump file counted as large (the threshold lowered to its size)."""
    import allthepatents.downloads as downloads

    settings.EXPORT_DIR = tmp_path / "dumps"
    settings.EXPORT_DIR.mkdir()
    name = "allthepatents-2026-12-07.jsonl.gz"
    (settings.EXPORT_DIR / name).write_bytes(b"x" * 1000)
    monkeypatch.setattr(downloads, "SLOT_BYTES", 1000)
    return name


@pytest.mark.django_db
def test_large_downloads_wait_for_a_slot_so_that_web_workers_stay_free(client, settings, big_dump):
    """Each large download holds a web worker until its last byte: at most
    DOWNLOADS_MAX_STREAMS at once, a slot given back when its response closes (sent whole
    or not), and small files never wait."""
    settings.DOWNLOADS_MAX_STREAMS = 1
    first = client.get(f"/downloads/{big_dump}")
    assert first.status_code == 200 and first["Content-Length"] == "1000"
    busy = client.get(f"/downloads/{big_dump}")
    assert busy.status_code == 503 and busy["Retry-After"]
    (settings.EXPORT_DIR / f"{big_dump}.manifest.json").write_text("{}")
    assert client.get(f"/downloads/{big_dump}.manifest.json").status_code == 200
    first.close()  # the visitor went away before the end
    second = client.get(f"/downloads/{big_dump}")
    assert second.status_code == 200
    assert b"".join(second.streaming_content) == b"x" * 1000  # read whole: closed
    third = client.get(f"/downloads/{big_dump}")
    assert third.status_code == 200
    third.close()  # as a WSGI server does; a slot left held would outlive this test
    settings.DOWNLOADS_MAX_STREAMS = 0  # no limit
    held = [client.get(f"/downloads/{big_dump}") for _ in range(3)]
    assert [r.status_code for r in held] == [200, 200, 200]
    for response in held:
        response.close()


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.django_db
def test_a_broken_download_resumes_where_it_stopped(client, settings, big_dump):
    """A dump is hundreds of megabytes: a line that breaks at 90 % asks for the rest (a
    Range, with If-Range naming the version it has) and gets a 206 of just that, not the
    whole file again."""
    import os

    data = os.urandom(1000)
    (settings.EXPORT_DIR / big_dump).write_bytes(data)
    url = f"/downloads/{big_dump}"
    whole = client.get(url)
    assert whole.status_code == 200 and _body(whole) == data
    assert whole["Accept-Ranges"] == "bytes" and whole["Last-Modified"]
    etag = whole["ETag"]
    rest = client.get(url, HTTP_RANGE="bytes=900-", HTTP_IF_RANGE=etag)
    assert rest.status_code == 206, rest
    assert rest["Content-Range"] == "bytes 900-999/1000" and rest["Content-Length"] == "100"
    assert _body(rest) == data[900:]
    by_date = client.get(url, HTTP_RANGE="bytes=0-99", HTTP_IF_RANGE=whole["Last-Modified"])
    assert by_date.status_code == 206 and _body(by_date) == data[:100]
    assert _body(client.get(url, HTTP_RANGE="bytes=-10")) == data[-10:]
    assert _body(client.get(url, HTTP_RANGE="bytes=990-5000")) == data[990:]
    for past_the_end in ("bytes=1000-", "bytes=-0"):
        refused = client.get(url, HTTP_RANGE=past_the_end)
        assert refused.status_code == 416 and refused["Content-Range"] == "bytes */1000"
    # Another version of the file, or a range this does not read: the whole file, a 200.
    for headers in (
        {"HTTP_RANGE": "bytes=900-", "HTTP_IF_RANGE": '"an-older-version"'},
        {"HTTP_RANGE": "bytes=0-1,5-6"},
        {"HTTP_RANGE": "items=0-5"},
        {"HTTP_RANGE": "bytes=5-1"},
        {"HTTP_RANGE": "bytes=" + "9" * 5000 + "-"},
    ):
        answered = client.get(url, **headers)
        assert answered.status_code == 200 and _body(answered) == data, headers
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    head = client.head(url)
    assert head.status_code == 200 and head["Content-Length"] == "1000" and head.content == b""


@pytest.mark.django_db
def test_only_a_large_stream_waits_for_a_slot(client, settings, big_dump):
    """A slot is for the bytes sent: with every slot held, a small range, a HEAD and a
    304 still answer; the whole file waits."""
    settings.DOWNLOADS_MAX_STREAMS = 1
    url = f"/downloads/{big_dump}"
    held = client.get(url)
    assert held.status_code == 200
    assert client.get(url).status_code == 503
    assert client.get(url, HTTP_RANGE="bytes=0-99").status_code == 206
    assert client.head(url).status_code == 200
    assert client.get(url, HTTP_IF_NONE_MATCH=held["ETag"]).status_code == 304
    held.close()
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_behind_nginx_downloads_are_sent_by_nginx(client, settings, big_dump):
    settings.DOWNLOADS_ACCEL_REDIRECT = "/_dumps/"
    response = client.get(f"/downloads/{big_dump}")
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/_dumps/{big_dump}"
    assert response["Content-Disposition"] == f'attachment; filename="{big_dump}"'
    assert response.content == b""


@pytest.mark.django_db
def test_a_dump_pruned_after_the_listing_is_not_found(client, settings, big_dump):
    (settings.EXPORT_DIR / big_dump).unlink()
    assert client.get(f"/downloads/{big_dump}").status_code == 404


@pytest.mark.django_db
def test_discovery_files(client):
    patent = patent_published(n=5)
    assert _sitemap_urls(client) == [f"/p/{patent.public_id}/"]
    robots = client.get("/robots.txt").content.decode()
    assert "Sitemap:" in robots and "Disallow: /admin/" in robots
    feed = client.get("/feed.atom")
    assert (
        feed.status_code == 200
        and b"<feed" in feed.content
        and patent.public_id.encode() in feed.content
    )


def _sitemap_urls(client, path="/sitemap.xml") -> list[str]:
    """Every page URL a crawler finds from ``path``, following a sitemap index's entries."""
    from urllib.parse import urlsplit
    from xml.etree import ElementTree

    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    response = client.get(path)
    assert response.status_code == 200, path
    root = ElementTree.fromstring(response.content)
    if root.tag.endswith("sitemapindex"):
        found = []
        for loc in root.findall("s:sitemap/s:loc", ns):
            part = urlsplit(loc.text)
            found += _sitemap_urls(client, part.path + (f"?{part.query}" if part.query else ""))
        return found
    return [urlsplit(loc.text).path for loc in root.findall("s:url/s:loc", ns)]


@pytest.mark.django_db
def test_the_sitemap_leads_a_crawler_to_every_invention_past_one_file(client, monkeypatch):
    """A sitemap file holds a few thousand URLs; past that, crawlers only find the rest
    through a sitemap index. Shrunk here to two a file."""
    from patents.views import PatentSitemap

    monkeypatch.setattr(PatentSitemap, "limit", 2)
    patents = [patent_published(n=n) for n in range(5)]
    found = _sitemap_urls(client)
    assert sorted(found) == sorted(p.get_absolute_url() for p in patents)


@pytest.mark.django_db
def test_sitemap_files_are_ranges_of_the_ledger_that_withdrawals_do_not_shift(
    client, monkeypatch, django_assert_max_num_queries
):
    """A file was a range of positions among the published inventions: the last file of a
    million skipped a million index keys, and a withdrawal moved every later invention into
    the file before. A file is now a range of ledger entries: a lookup by key whatever the
    file, and a withdrawal leaves a gap where it was (its entry, and its tombstone's entry,
    take a place in the ledger)."""
    from patents.views import PatentSitemap

    monkeypatch.setattr(PatentSitemap, "limit", 2)
    patents = [patent_published(n=n) for n in range(5)]  # ledger entries 1-5: files 1-3

    def file(n):
        return _sitemap_urls(client, f"/sitemap-patents.xml?p={n}")

    before = {n: file(n) for n in (1, 2, 3)}
    assert before[2] == [p.get_absolute_url() for p in patents[2:4]]
    patent_withdraw(patent=patents[1], reason="test")  # in file 1; its entry is the 6th
    later = patent_published(n=9)  # the 7th: file 4
    assert file(1) == [patents[0].get_absolute_url()]
    assert (file(2), file(3)) == (before[2], before[3])
    assert file(4) == [later.get_absolute_url()]
    assert client.get("/sitemap-patents.xml?p=5").status_code == 404
    visible = [p for p in patents if p != patents[1]] + [later]
    assert sorted(_sitemap_urls(client)) == sorted(p.get_absolute_url() for p in visible)
    with django_assert_max_num_queries(4):  # the ids' span (2), the entries, the inventions
        assert client.get("/sitemap-patents.xml?p=3").status_code == 200


@pytest.mark.django_db
def test_a_sitemap_file_says_what_djangos_own_view_says(client, rf, monkeypatch):
    """The files are written line by line (Django's template took a second for 5,000
    URLs): the same URLs, days, change frequency and headers as Django's sitemap view on
    the same file, and the same 404s."""
    from xml.etree import ElementTree

    from django.contrib.sitemaps.views import sitemap as django_sitemap

    from patents.views import SITEMAPS, PatentSitemap

    monkeypatch.setattr(PatentSitemap, "limit", 3)
    at = timezone.now() - timedelta(days=3)
    for n in range(5):
        patent_published(n=n, published_at=at + timedelta(hours=7 * n))

    def parsed(content):
        ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
        return [
            tuple(
                url.findtext(f"s:{tag}", namespaces=ns) for tag in ("loc", "lastmod", "changefreq")
            )
            for url in ElementTree.fromstring(content).findall("s:url", ns)
        ]

    for page in ("1", "2"):
        ours = client.get(f"/sitemap-patents.xml?p={page}")
        theirs = django_sitemap(
            rf.get(f"/sitemap-patents.xml?p={page}"), sitemaps=SITEMAPS, section="patents"
        )
        theirs.render()
        assert ours.status_code == theirs.status_code == 200
        assert parsed(ours.content) == parsed(theirs.content) and len(parsed(ours.content)) in (
            2,
            3,
        )
        for header in ("Content-Type", "Last-Modified", "X-Robots-Tag"):
            assert ours[header] == theirs[header], header
    assert client.head("/sitemap-patents.xml?p=1").status_code == 200
    for bad in ("p=3", "p=x", "p=0"):
        assert client.get(f"/sitemap-patents.xml?{bad}").status_code == 404, bad
    assert client.get("/sitemap-other.xml").status_code == 404
    assert client.post("/sitemap-patents.xml").status_code == 405


@pytest.mark.django_db
def test_stats_page_shows_numbers_and_charts(client):
    from generation.batches import job_counters_refresh
    from generation.models import GenerationJob, Sample
    from tests.factories import GeneratorFactory

    gen = GeneratorFactory(name="stats-gen")
    job = GenerationJob.objects.create(
        generator=gen, mode="mixed", count=4, started_at=timezone.now(), worker_seconds=10.0
    )
    patent = patent_published(n=1, job=job)
    verdicts = ["published", "rejected", "rejected", "rejected"]
    for i, verdict in enumerate(verdicts):
        Sample.objects.create(
            job=job,
            index=i,
            mode="top-down" if i % 2 == 0 else "bottom-up",
            seed=i,
            prompt="p",
            raw_text="t",
            tokens=750,
            verdict=verdict,
            patent=patent if verdict == "published" else None,
            reasons=[] if verdict == "published" else ["truncated_claim"],
        )
    job_counters_refresh(job)  # as a worker does after each batch
    html = client.get("/stats/").content.decode()
    # A mixed job's samples counted under their own modes: 1 of 2 top-down, 0 of 2 bottom-up.
    assert re.search(r"top-down</td>\s*<td>1 / 2</td>", html), html
    assert re.search(r"bottom-up</td>\s*<td>0 / 2</td>", html), html
    assert "stats-gen" in html and "truncated_claim" in html
    assert "<svg" in html and "300.0" in html  # tokens per CPU-second


@pytest.mark.django_db
def test_jobs_that_ran_before_mode_counts_get_them_from_their_samples():
    import importlib

    from django.apps import apps

    from generation.models import GenerationJob, Sample
    from tests.factories import GeneratorFactory

    migration = importlib.import_module("generation.migrations.0017_job_mode_counts")
    job = GenerationJob.objects.create(generator=GeneratorFactory(), mode="mixed", count=3)
    idle = GenerationJob.objects.create(generator=job.generator, count=1)
    for i, verdict in enumerate(["published", "rejected", "rejected"]):
        mode = "top-down" if i % 2 == 0 else "bottom-up"
        Sample.objects.create(
            job=job, index=i, mode=mode, seed=i, prompt="", raw_text="", verdict=verdict
        )
    migration.mode_counts_fill(apps, None)
    job.refresh_from_db()
    idle.refresh_from_db()
    assert job.mode_counts == {
        "top-down": {"generated": 2, "published": 1},
        "bottom-up": {"generated": 1, "published": 0},
    }
    assert idle.mode_counts == {}


@pytest.mark.django_db
def test_published_content_is_read_only_in_the_admin(admin_client):
    patent = patent_published(n=1)
    response = admin_client.post(f"/admin/patents/patent/{patent.pk}/change/", {"title": "Changed"})
    patent.refresh_from_db()
    assert patent.title == "Self-cleaning widget 1"
    assert admin_client.get("/admin/patents/patent/add/").status_code == 403
    assert admin_client.get(f"/admin/patents/patent/{patent.pk}/delete/").status_code == 403
    del response
    assert Claim.objects.filter(patent=patent).count() == 2


@pytest.mark.django_db
def test_the_admins_filters_list_each_model_and_mode_and_filter_by_them(admin_client):
    """Filters named without a DISTINCT over every row (allthepatents/admin.py)."""
    a = patent_published(n=1, provenance={"generator_model": "m/a", "mode": "top-down"})
    b = patent_published(n=2, provenance={"generator_model": "m/b", "mode": "bottom-up"})
    page = admin_client.get("/admin/patents/patent/").content.decode()
    assert "?generator_model=m%2Fa" in page and "?generator_model=m%2Fb" in page
    assert "?mode=top-down" in page and "?mode=bottom-up" in page
    for query, shown, hidden in (("generator_model=m/b", b, a), ("mode=top-down", a, b)):
        page = admin_client.get(f"/admin/patents/patent/?{query}").content.decode()
        assert shown.public_id in page and hidden.public_id not in page


@pytest.mark.django_db
def test_pages_send_a_strict_csp(client):
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
