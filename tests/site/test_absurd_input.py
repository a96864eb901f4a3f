"""Every public page and API, asked with absurd values in every parameter it reads: each
answers with a clear refusal (4xx) or a page, never a server error, and an API's refusal is
its JSON error. The site is a real one: published inventions, imported references, and a
FAISS index of them built with the real MiniLM."""

from urllib.parse import urlencode

import pytest
from django.test import override_settings

from patents.importing import reference_import_records
from search.requests import SEARCH_FIELDS
from search.services import search_index_rebuild
from search.store import reader_reset
from tests.factories import patent_published
from tests.helpers import ROOT

# Digits that str.isdigit() accepts and int() does not, numbers past any bound, text where a
# number or a date belongs, control characters, and lists where one value belongs.
ABSURD = [
    "²",
    "①",
    "٣",
    "-1",
    "0",
    "1e9",
    "99999999999999999999999",
    "2020-02-30",
    "0001-01-01",
    "9999-12-31",
    "\x00",
    "é" * 3000,
    " ",
    "%",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    # Full-text query syntax, which a keyword engine must take as words.
    '"unbalanced quote',
    "a AND OR NOT b",
    "NEAR(brush motor, 2)",
    "title:widget*",
    "^brush -motor +(",
]
FIXTURE = ROOT / "tests" / "fixtures" / "patents-40.jsonl"
# What a browser cannot send but a client can: bytes that are not UTF-8, a lone surrogate,
# a stray percent sign (already encoded, sent as they are).
RAW = ["%FF%FE", "%ED%A0%80", "%", "%%32"]
# The search's own fields, then every other parameter a public page reads.
PARAMS = [
    *SEARCH_FIELDS,
    *("generator", "page", "qid", "claims_page", "date", "elements", "combinations", "detail"),
    *("after", "limit"),
]


@pytest.fixture
def site(db, tmp_path, memo_embeddings):
    """Three inventions, forty references and their index."""
    with override_settings(INDEX_DIR=tmp_path / "index"):
        reader_reset()
        inventions = [patent_published(n=n) for n in range(1, 4)]
        reference_import_records(enumerate(FIXTURE.read_text().splitlines(), start=1))
        search_index_rebuild()
        yield inventions
    reader_reset()


def _paths(invention):
    public_id = invention.public_id
    return [
        "/",
        "/patents/",
        "/patents/random/",
        f"/p/{public_id}/",
        f"/p/{public_id}.json",
        "/ledger/",
        "/ledger/heads.json",
        "/downloads/",
        "/feed.atom",
        "/sitemap.xml",
        "/sitemap-patents.xml",
        "/search/",
        "/search/export.csv",
        "/search/export.ris",
        "/search/report/",
        "/search/feed.atom",
        f"/search/like/{public_id}/",
        "/api/search",
        f"/api/patents/{public_id}",
        "/api/ledger",
        "/api/verdicts",
        "/stats/",
        "/contributors/",
        "/healthz",
    ]


@pytest.mark.django_db
def test_no_absurd_parameter_gets_a_server_error(client, settings, site):
    settings.SEARCH_RATE_LIMIT = 0  # every request is searched, none turned away
    settings.LEDGER_API_RATE_LIMIT = 0
    client.raise_request_exception = False  # every failure counted, not the first raised
    failures = []
    for path in _paths(site[0]):
        for name in PARAMS:
            # A sensible query beside the absurd parameter, so that the search itself runs.
            sensible = {"q": "a widget with a rotating brush"} if name != "q" else {}
            queries = [urlencode({**sensible, name: value}) for value in ABSURD]
            queries += [urlencode(sensible) + f"&{name}={raw}" for raw in RAW]
            for query in queries:
                response = client.get(f"{path}?{query}")
                if response.status_code >= 500:
                    failures.append(f"{path}?{query[:80]}: {response.status_code}")
                elif path.startswith("/api/") and response.status_code >= 400:
                    body = response.json()
                    if not (body.get("error") and body.get("status") == response.status_code):
                        failures.append(f"{path}?{query[:80]}: {body}")
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:40])


# JSON a client can POST where the search API wants an object of strings and numbers.
ABSURD_BODIES = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"a widget"',
    b"{" * 5000,
    b'{"q": ["a", "widget"]}',
    b'{"q": {"text": "a widget"}}',
    b'{"q": null}',
    b'{"q": 1e400}',
    b'{"q": "a widget", "k": 1e400}',
    b'{"q": "a widget", "k": [10]}',
    b'{"q": "a widget", "k": true}',
    b'{"q": "a widget", "k": 2.5}',
    b'{"q": "a widget", "page": -1}',
    b'{"q": "a widget", "before": 20200101}',
    b'{"q": "a widget", "before": ["2020-01-01"]}',
    b'{"q": "a widget", "cpc": ["H04L", "G06F"]}',
    b'{"q": "a widget", "cpc": {"H04L": 1}}',
    b'{"q": "a widget", "origin": ["all"]}',
    b'{"q": "a widget", "elements": {"yes": 1}}',
    b'{"q": "a widget", "generator": ["x"]}',
    b'{"q": "a\\u0000widget"}',
    b'{"q": "a widget", "generator": "\\u0000"}',
    b'{"q": "\\ud800 widget"}',
    '{"q": "a widget", "mode": "\u00b2"}'.encode(),
    b"\xff\xfe{}",
]


@pytest.mark.django_db
def test_no_absurd_json_body_gets_a_server_error(client, settings, site):
    settings.SEARCH_RATE_LIMIT = 0
    client.raise_request_exception = False
    failures = []
    for body in ABSURD_BODIES:
        response = client.post("/api/search", body, content_type="application/json")
        payload = response.json()
        if response.status_code >= 500 or (
            response.status_code >= 400 and not payload.get("error")
        ):
            failures.append(f"{body[:60]!r}: {response.status_code} {payload}")
    assert not failures, "\n".join(failures)


# What a client can put where a page's path names a thing: the names of nothing, of other
# things, of files outside, and text no id is made of.
ABSURD_SEGMENTS = ["x", "0", "²", "%00", "%FF", "..%2F..%2Fetc%2Fpasswd", "a" * 300, "%C3%A9"]


@pytest.mark.django_db
def test_no_absurd_path_gets_a_server_error(client, settings, site):
    settings.SEARCH_RATE_LIMIT = 0
    client.raise_request_exception = False
    templates = [
        "/p/{}/",
        "/p/{}.json",
        "/p/{}.md",
        "/api/patents/{}",
        "/search/like/{}/",
        "/search/export.{}?q=widget",
        "/downloads/{}",
        "/sitemap-{}.xml",
        "/sitemap-patents.xml?p={}",
        "/api/{}",
    ]
    failures = []
    for template in templates:
        for segment in ABSURD_SEGMENTS:
            path = template.format(segment)
            response = client.get(path)
            if response.status_code >= 500:
                failures.append(f"{path[:80]}: {response.status_code}")
            elif path.startswith("/api/") and response.status_code >= 400:
                if response.json().get("status") != response.status_code:
                    failures.append(f"{path[:80]}: not the API's JSON error")
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_a_nul_anywhere_is_a_clear_400_on_every_database(client, site):
    """PostgreSQL stores no NUL: one in an id or a filter reached a lookup there and was a
    server error (SQLite took it). Refused before any view, on both."""
    client.raise_request_exception = False
    public_id = site[0].public_id
    pages = [
        client.get("/p/%00/"),
        client.get("/patents/", {"generator": "\x00"}),
        client.get("/search/", {"q": "a widget", "generator": "x\x00"}),
        client.post("/search/", {"q": "a widget", "generator": "\x00"}),
        client.get(f"/p/{public_id}/", {"claims_page\x00": "1"}),
    ]
    for response in pages:
        assert response.status_code == 400
        assert b'class="error"' in response.content and b"NUL" in response.content
    apis = [
        client.get("/api/patents/%00"),
        client.get("/api/search", {"q": "a widget", "generator": "\x00"}),
        client.post(
            "/api/search",
            b'{"q": "a widget", "generator": "\\u0000"}',
            content_type="application/json",
        ),
    ]
    for response in apis:
        assert response.status_code == 400
        assert "NUL" in response.json()["error"]
    assert client.get(f"/p/{public_id}/").status_code == 200
