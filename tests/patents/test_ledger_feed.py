"""The ledger as a feed (/api/ledger): a mirror that holds a dump follows the site from the
dump's head, entry by entry, and checks with the standalone verifier (``--follow``) that
the site's history since is the dump's, continued, and every invention hashes to its entry.
The daily dump alone made a mirror download every invention again each day (6.5 GB a day
at ten million)."""

import gzip
import json
import secrets
import time

import pytest
from django.db import connection

from allthepatents.clock import db_now
from patents.ledger import GENESIS_HASH, ledger_append, ledger_heads_document
from patents.models import LedgerEntry, Patent
from patents.services import patent_withdraw
from patents.verify_dump import content_hash, entry_hash
from tests.factories import patent_published
from tests.helpers import api_pages
from tests.patents.test_ledger import _dump, _verifier


def _feed(client, url):
    """Every entry the feed gives from ``url`` on, following ``next``; and the pages."""
    return api_pages(client, url, "entries")


@pytest.mark.django_db
def test_the_feed_is_the_chain_with_each_invention_as_the_dump_holds_it(client, tmp_path):
    patents = [patent_published(n=n) for n in range(5)]
    patent_withdraw(patent=patents[1], reason="test")
    entries, pages = _feed(client, "/api/ledger?limit=2")
    assert pages == 3
    chain = list(LedgerEntry.objects.order_by("id"))
    assert [e["id"] for e in entries] == [e.pk for e in chain]
    prev = GENESIS_HASH
    for entry in entries:
        assert entry["prev_hash"] == prev and entry_hash(entry, prev) == entry["entry_hash"]
        prev = entry["entry_hash"]
    assert [e["kind"] for e in entries] == ["publish"] * 5 + ["withdraw"]
    published = {e["public_id"]: e["invention"] for e in entries if e["kind"] == "publish"}
    assert published[patents[1].public_id] is None  # withdrawn: its withdrawal is an entry
    # Each invention is the dump's record, byte for byte, and hashes to its entry.
    _, manifest = _dump(tmp_path)
    with gzip.open(tmp_path / manifest["file"], "rt") as fh:
        dumped = {r["public_id"]: r for r in map(json.loads, fh)}
    assert {pid: r for pid, r in published.items() if r is not None} == dumped
    for entry in entries:
        if entry.get("invention"):
            assert content_hash(entry["invention"]) == entry["content_hash"]
            assert entry["invention"]["published_at"] == entry["recorded_at"]
    # Polling after the last entry: nothing yet, then what was published since.
    last = entries[-1]["id"]
    assert client.get(f"/api/ledger?after={last}").json() == {"entries": [], "next": None}
    later = patent_published(n=9)
    assert [e["public_id"] for e in _feed(client, f"/api/ledger?after={last}")[0]] == [
        later.public_id
    ]


@pytest.mark.django_db
def test_a_page_of_the_feed_is_three_queries_however_many_entries(
    client, django_assert_max_num_queries
):
    for n in range(30):
        patent_published(n=n)
    with django_assert_max_num_queries(3):
        page = client.get("/api/ledger?limit=1000").json()
    assert len(page["entries"]) == 30 and all(
        len(e["invention"]["claims"]) == 2 for e in page["entries"]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["after=-1", "after=x", "after=1.5", f"after={2**63}", "limit=0", "limit=1001", "limit=-3"],
)
def test_absurd_paging_of_the_feed_is_refused(client, query):
    response = client.get(f"/api/ledger?{query}")
    assert response.status_code == 400
    assert response.json()["status"] == 400 and "limit" in response.json()["error"]


@pytest.mark.django_db
def test_the_feed_past_the_head_is_empty_and_its_text_never_reads_as_html(client):
    patent_published(n=1, title="<script>alert(1)</script> & co")
    assert client.get(f"/api/ledger?after={2**63 - 1}").json() == {"entries": [], "next": None}
    response = client.get("/api/ledger")
    assert b"<script>" not in response.content and b"\\u003cscript" in response.content
    assert response.json()["entries"][0]["invention"]["title"].startswith("<script>")
    assert client.post("/api/ledger").status_code == 405


@pytest.mark.django_db
def test_a_client_asking_for_too_many_entries_a_minute_is_told_to_wait(client, settings):
    """Each request counts the entries it asks for (a page of 1,000 costs a web process
    about 0.2 s): past LEDGER_API_RATE_LIMIT, a 429 with Retry-After; another
    client is not held back."""
    settings.LEDGER_API_RATE_LIMIT = 5
    patent_published(n=1)
    mirror = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    assert client.get("/api/ledger?limit=5", REMOTE_ADDR=mirror).status_code == 200
    refused = client.get("/api/ledger?limit=1", REMOTE_ADDR=mirror)
    assert refused.status_code == 429 and refused.json()["status"] == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert client.get("/api/ledger?limit=1", REMOTE_ADDR="192.0.2.1").status_code == 200


def _since_dump(tmp_path):
    """Three inventions in a dump, then four more and two withdrawals (one of each)."""
    old = [patent_published(n=n) for n in range(3)]
    manifest_path, manifest = _dump(tmp_path / "dump")
    new = [patent_published(n=10 + n) for n in range(4)]
    patent_withdraw(patent=old[1], reason="test")
    patent_withdraw(patent=new[0], reason="test")
    return manifest_path, old, new


def _sql(statement, params=()):
    with connection.cursor() as cursor:  # behind the app's back, as a rewriting site would
        cursor.execute(statement, params)


@pytest.mark.django_db(transaction=True)
def test_the_verifier_follows_the_site_from_its_dump(live_server, tmp_path):
    manifest_path, _, _ = _since_dump(tmp_path)
    result = _verifier(manifest_path.parent, manifest_path.name, "--follow", live_server.url)
    assert result.returncode == 0, result.stderr
    head = LedgerEntry.objects.order_by("-id").first().entry_hash
    assert (
        f"site: 6 entries since this dump (4 publications, 2 withdrawals) chain on from its "
        f"head to {head}" in result.stdout
    )


@pytest.mark.django_db(transaction=True)
def test_heads_saved_after_the_dump_are_checked_on_the_site_followed(live_server, tmp_path):
    """A heads.json archived after the dump names positions the dump does not reach: alone
    the dump cannot prove them, followed to the site it does, and a forged one fails."""
    manifest_path, _, _ = _since_dump(tmp_path)
    saved = tmp_path / "heads-later.json"
    document = ledger_heads_document()
    saved.write_text(json.dumps(document))
    newest = max(int(h["position"]) for h in document["heads"])
    assert newest > json.loads(manifest_path.read_text())["chain_position"]
    args = (manifest_path.parent, manifest_path.name, "--heads", str(saved))
    alone = _verifier(*args)
    assert alone.returncode == 1 and "the chain was cut short" in alone.stderr
    followed = _verifier(*args, "--follow", live_server.url)
    assert followed.returncode == 0, followed.stderr
    assert f"saved heads: all {len(document['heads'])} are in the chain" in followed.stdout
    for head in document["heads"]:
        if int(head["position"]) == newest:
            head["head"] = "3" * 64
    saved.write_text(json.dumps(document))
    forged = _verifier(*args, "--follow", live_server.url)
    assert forged.returncode == 1 and f"position {newest} is not in this chain" in forged.stderr


@pytest.mark.django_db(transaction=True)
def test_the_verifier_waits_when_the_site_asks_it_to(live_server, tmp_path, client, settings):
    """A mirror that follows from an old dump asks for more entries than a window allows:
    the site answers 429 with Retry-After, and the verifier waits that long and goes on."""
    manifest_path, _, _ = _since_dump(tmp_path)
    settings.LEDGER_API_RATE_LIMIT, settings.LEDGER_API_RATE_WINDOW = 1000, 4
    while time.time() % 4 > 0.5:  # early in a window, so that the next request shares it
        time.sleep(0.05)
    assert client.get("/api/ledger?limit=1000").status_code == 200  # the window's allowance
    result = _verifier(manifest_path.parent, manifest_path.name, "--follow", live_server.url)
    assert result.returncode == 0, result.stderr
    assert "the site asks to wait" in result.stderr and "site: 6 entries" in result.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("head", "no longer holds this dump's head"),
        ("text", "does not hash to its content hash"),
        ("chain", "does not chain on from the one before"),
        ("again", "is published twice in the site's ledger"),
    ],
)
def test_the_verifier_following_a_site_catches_a_rewritten_history(
    live_server, tmp_path, tamper, expected
):
    manifest_path, old, new = _since_dump(tmp_path)
    manifest = json.loads(manifest_path.read_text())
    if tamper == "head":  # the dump's newest entry is given another text, and re-hashed
        _sql(
            "UPDATE patents_ledgerentry SET content_hash = %s, entry_hash = %s WHERE id = %s",
            ["0" * 64, "1" * 64, manifest["chain_head_entry"]],
        )
    elif tamper == "text":  # an invention published since is edited
        _sql("UPDATE patents_patent SET title = %s WHERE id = %s", ["Edited", new[2].pk])
    elif tamper == "chain":  # an entry since is given another predecessor
        entry = LedgerEntry.objects.filter(patent=new[3], kind="publish").get()
        _sql("UPDATE patents_ledgerentry SET prev_hash = %s WHERE id = %s", ["2" * 64, entry.pk])
    else:  # a withdrawn invention of the dump's is published again, on a chain that holds
        ledger_append(patent=Patent.objects.get(pk=old[1].pk), kind="publish", recorded_at=db_now())
    result = _verifier(manifest_path.parent, manifest_path.name, "--follow", live_server.url)
    assert result.returncode == 1 and expected in result.stderr, (result.stdout, result.stderr)


@pytest.mark.django_db
def test_a_site_that_is_not_one_is_a_clear_failure(tmp_path):
    manifest_path, _, _ = _since_dump(tmp_path)
    result = _verifier(manifest_path.parent, manifest_path.name, "--follow", "file:///etc/")
    assert result.returncode == 1 and "not an http(s) address" in result.stderr
    result = _verifier(manifest_path.parent, manifest_path.name, "--follow", "http://127.0.0.1:9")
    assert result.returncode == 1 and "FAILED" in result.stderr
