"""The site as a crawler (and a visitor clicking through) meets it: from the home page, every
link, stylesheet, script and image the pages name is followed, and each answers. A link to a
missing page, a filter or pagination link that breaks, a page that errors only when reached
with the query its own links build: none of these shows when pages are asked one by one.
Every page and feed reached must also show the site's untrusted texts inert."""

from collections import deque
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import override_settings

from generation.contributions import contributor_create
from generation.verdicts import REVIEWERS_GROUP, verdict_set
from patents.importing import reference_import_records
from patents.services import patent_withdraw
from search.services import search_index_rebuild
from search.store import reader_reset
from tests.factories import patent_published
from tests.helpers import ROOT
from tests.patents.test_public_site import HOSTILE

FIXTURE = ROOT / "tests" / "fixtures" / "patents-40.jsonl"
# Enough for every kind of page this site has, several times over; a crawl that reaches it
# is following a link pattern without end (each page linking to a new query), which fails.
PAGE_LIMIT = 1500
# Pages whose links a crawl does not follow (it fetches them): a search's results link to
# more searches (each result's claims, each page of each), without end; the start searches
# are followed, so every kind of link a result has is fetched once.
NOT_FOLLOWED = ("/search/",)
# What the untrusted texts below would put into a page or a feed if they went out unescaped.
RAW_MARKUP = ("<script>alert", "<img src=x onerror", "<svg onload", 'href="javascript:')
# Signing out is a form that posts; a crawl that followed it would crawl on signed out.
NOT_FETCHED = ("/accounts/logout/", "/admin/logout/")


class _Links(HTMLParser):
    ATTRS = {"a": "href", "link": "href", "script": "src", "img": "src", "iframe": "src"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        wanted = self.ATTRS.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.links.append(value)


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


def _local(url: str) -> str | None:
    """The site's own address of ``url`` (path and query), or None for another site's (the
    USPTO's pages, a hub's) and for what is not a page (mailto:, javascript:)."""
    parts = urlsplit(urldefrag(url)[0])
    if parts.scheme not in ("", "http") or parts.netloc not in ("", "testserver"):
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _crawl(client, starts: list[str], *, follow_admin: bool = False) -> tuple[dict, list]:
    """Breadth first over the site's own addresses. Returns {url: status} and, for each
    answer of 400 or more, where the crawl found the link."""
    seen: dict[str, int] = {}
    found_on: dict[str, str] = {url: "(start)" for url in starts}
    queue = deque(starts)
    broken = []
    while queue:
        url = queue.popleft()
        if url in seen or url.startswith(NOT_FETCHED):
            continue
        assert len(seen) < PAGE_LIMIT, f"more than {PAGE_LIMIT} pages: links without end?"
        if url.startswith(settings.STATIC_URL):
            # Served by WhiteNoise from collected files in production; here, from the
            # finders: is the file there to be collected?
            seen[url] = 200 if finders.find(urlsplit(url).path[len(settings.STATIC_URL) :]) else 404
            if seen[url] == 404:
                broken.append(f"{url} -> 404 (linked from {found_on.get(url)})")
            continue
        response = client.get(url)
        status = response.status_code
        if status in (301, 302):
            target = _local(urljoin(url, response["Location"]))
            if target:
                found_on.setdefault(target, url)
                queue.append(target)
        seen[url] = status
        if status >= 400:
            broken.append(f"{url} -> {status} (linked from {found_on.get(url)})")
            continue
        content_type = response.get("Content-Type", "")
        if getattr(response, "streaming", False):
            continue
        if "html" in content_type or "xml" in content_type:
            body = response.content.decode()
            for marker in RAW_MARKUP:
                if marker in body:
                    broken.append(f"{url}: untrusted text unescaped ({marker!r})")
        if "text/html" not in content_type:
            continue
        if url.startswith("/admin/"):
            # Its lists' sort orders, filters and facets are fetched, each once, but not
            # followed: more combinations, all Django's own.
            if not follow_admin or "?" in url:
                continue
        elif url.startswith(NOT_FOLLOWED) and url not in starts:
            continue
        for link in _links(response.content.decode()):
            local = _local(urljoin(url, link))
            if local and local not in seen:
                found_on.setdefault(local, url)
                queue.append(local)
    return seen, broken


@pytest.fixture
def lived_in_site(db, tmp_path, settings, memo_embeddings, django_user_model):
    """A site as it is after some use: inventions of two models and modes, one withdrawn,
    forty references, the index, a dump, a reviewer's verdict; and untrusted text where a
    model, a contributor or a reviewer can put it (an invention's every field and its model's
    name, a contributor's name, a verdict's note), which every page must show inert."""
    settings.EXPORT_DIR = tmp_path / "dumps"
    settings.SEARCH_RATE_LIMIT = 0
    settings.PUBLIC_FIGURES_SECONDS = 0
    with override_settings(INDEX_DIR=tmp_path / "index"):
        reader_reset()
        inventions = [patent_published(n=n) for n in range(1, 5)]
        inventions.append(
            patent_published(
                n=5, provenance={"generator_model": "other/model", "mode": "bottom-up", "seed": 5}
            )
        )
        hostile = patent_published(
            **HOSTILE,
            provenance={
                "generator_model": "<svg onload=alert(8)>",
                "mode": "top-down",
                "seed": 6,
                "contributor": "<script>alert('who')</script>",
            },
        )
        contributor_create(name="<img src=x onerror=alert(9)>")
        patent_withdraw(patent=inventions[1], reason="requested by operator")
        reference_import_records(enumerate(FIXTURE.read_text().splitlines(), start=1))
        search_index_rebuild()
        call_command("export_dump", "--no-progress")
        from django.contrib.auth.models import Group

        reviewer = django_user_model.objects.create_user("reviewer", password="x-long-pass-42")
        reviewer.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
        verdict_set(patent=inventions[0], reviewer=reviewer, verdict="relevant", note="seen")
        verdict_set(
            patent=hostile, reviewer=reviewer, verdict="nonsense", note="<script>alert(10)</script>"
        )
        yield inventions
    reader_reset()


@pytest.mark.django_db
def test_every_link_a_visitor_can_follow_answers(client, lived_in_site):
    client.raise_request_exception = False
    withdrawn = lived_in_site[1]
    starts = ["/", "/search/?q=a+widget+with+a+rotating+brush", "/robots.txt"]
    seen, broken = _crawl(client, starts)
    # The withdrawn invention's page is a tombstone (410), which the ledger may link to;
    # nothing else is missing.
    broken = [b for b in broken if not b.startswith(f"/p/{withdrawn.public_id}/ -> 410")]
    assert not broken, f"{len(broken)} broken of {len(seen)}:\n" + "\n".join(broken[:40])
    reached = set(seen)
    # The crawl reached every kind of page: each invention, a reference, the search and its
    # exports, the ledger, the downloads, the feeds, the stats.
    for invention in lived_in_site[:1] + lived_in_site[2:]:
        assert f"/p/{invention.public_id}/" in reached, invention.public_id
    for prefix in ("/search/export.", "/search/report/", "/search/like/", "/ledger/", "/stats/"):
        assert any(u.startswith(prefix) for u in reached), prefix
    for exact in ("/downloads/", "/contributors/", "/feed.atom"):
        assert exact in reached, exact
    assert any(u.startswith("/static/") for u in reached), "no stylesheet or script"


@pytest.mark.django_db
def test_every_link_staff_can_follow_answers(admin_client, lived_in_site):
    """The same crawl signed in as staff: the coverage page, and every admin page (lists,
    their filters, each object, its history, the site's own admin views)."""
    admin_client.raise_request_exception = False
    withdrawn = lived_in_site[1]
    seen, broken = _crawl(admin_client, ["/", "/admin/", "/coverage/"], follow_admin=True)
    broken = [b for b in broken if not b.startswith(f"/p/{withdrawn.public_id}/ -> 410")]
    assert not broken, f"{len(broken)} broken of {len(seen)}:\n" + "\n".join(broken[:40])
    admin_pages = [u for u in seen if u.startswith("/admin/")]
    assert len(admin_pages) > 10, admin_pages
