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
    second = client.get("/patents/?page=2")
    assert second.status_code == 200 and b'rel="prev"' in second.content
    assert second.content.count(b'<li><a href="/p/') == 5
    assert client.get("/patents/?page=3").status_code == 404
    assert client.get("/patents/?page=abc").status_code == 404
    assert client.get("/patents/?mode=sideways").status_code == 400
    assert client.get("/patents/?date=nope").status_code == 400
    assert client.get("/patents/?mode=top-down").status_code == 200
    random = client.get("/patents/random/")
    assert random.status_code == 302 and random["Location"].startswith("/p/")


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


@pytest.mark.django_db
def test_discovery_files(client):
    patent = patent_published(n=5)
    sitemap = client.get("/sitemap.xml").content.decode()
    assert f"/p/{patent.public_id}/" in sitemap
    robots = client.get("/robots.txt").content.decode()
    assert "Sitemap:" in robots and "Disallow: /admin/" in robots
    feed = client.get("/feed.atom")
    assert (
        feed.status_code == 200
        and b"<feed" in feed.content
        and patent.public_id.encode() in feed.content
    )


@pytest.mark.django_db
def test_stats_page_shows_numbers_and_charts(client):
    from generation.models import GenerationJob, Sample
    from tests.factories import GeneratorFactory

    gen = GeneratorFactory(name="stats-gen")
    job = GenerationJob.objects.create(
        generator=gen,
        count=3,
        started_at=timezone.now(),
        tokens_generated=3000,
        worker_seconds=10.0,
        published_count=1,
    )
    patent = patent_published(n=1, job=job)
    Sample.objects.create(
        job=job,
        index=0,
        mode="top-down",
        seed=1,
        prompt="p",
        raw_text="t",
        verdict="published",
        patent=patent,
    )
    for i in (1, 2):
        Sample.objects.create(
            job=job,
            index=i,
            mode="top-down",
            seed=i,
            prompt="p",
            raw_text="t",
            verdict="rejected",
            reasons=["truncated_claim"],
        )
    html = client.get("/stats/").content.decode()
    assert "stats-gen" in html and "1 / 3" in html and "truncated_claim" in html
    assert "<svg" in html and "300.0" in html  # tokens per CPU-second


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
def test_pages_send_a_strict_csp(client):
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
