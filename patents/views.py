import datetime as dt
import json
import re
from xml.sax.saxutils import escape as xml_escape

from django.conf import settings
from django.contrib import messages
from django.contrib.sitemaps import Sitemap
from django.contrib.sites.shortcuts import get_current_site
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import http_date
from django.views.decorators.http import require_GET, require_safe

from allthepatents.downloads import file_download_response
from allthepatents.kept import kept
from allthepatents.pagination import KeysFirstPaginator
from patents.dumps import DUMP_VERIFIER
from patents.feeds import PatentFeed
from patents.ledger import ledger_daily_heads, ledger_heads_document
from patents.models import Patent
from patents.presentation import (
    canonical_url,
    citation_bibtex,
    citation_plain,
    claim_html,
    cpc_suggest,
    patent_jsonld,
    patent_markdown,
)
from patents.selectors import (
    dumps_list,
    generated_today_count,
    generator_models_published,
    ledger_id_span,
    patent_claims_page,
    patent_counts,
    patent_get,
    patent_latest_published_at,
    patent_neighbours,
    patent_random_public_id,
    patents_browse,
    patents_browse_count,
    patents_in_ledger_order,
    patents_latest,
)
from patents.serializers import patent_serialize
from patents.vocabulary import MODES

PER_PAGE = 20
DUMP_NAME_RE = re.compile(
    r"^(allthepatents-\d{4}-\d{2}-\d{2}(\.ledger)?\.jsonl\.gz(\.manifest\.json)?|verify_dump\.py)$"
)


@require_GET
def home(request):
    return render(
        request,
        "home.html",
        {
            "counts": patent_counts(),
            "today": generated_today_count(),
            "latest": patents_latest(limit=10),
        },
    )


@require_GET
def browse(request):
    generator = request.GET.get("generator", "")[:300]
    mode = request.GET.get("mode", "")
    if mode and mode not in MODES:
        return HttpResponseBadRequest("mode must be top-down or bottom-up")
    on = None
    if request.GET.get("date"):
        try:
            on = dt.date.fromisoformat(request.GET["date"])
        except ValueError:
            return render(
                request, "patents/browse.html", {"error": "date must be YYYY-MM-DD"}, status=400
            )
    origin = request.GET.get("origin") or Patent.Origin.GENERATED
    if origin not in Patent.Origin.values:
        return HttpResponseBadRequest("origin must be generated or reference")
    # A day's count is a range of the index; the others are the writes' tallies.
    count = None if on else patents_browse_count(origin=origin, generator=generator, mode=mode)
    paginator = KeysFirstPaginator(
        patents_browse(origin=origin, generator=generator, mode=mode, on=on),
        PER_PAGE,
        count=count,
    )
    try:
        page = paginator.page(request.GET.get("page") or 1)
    except PageNotAnInteger:
        raise Http404("page must be a number") from None
    except EmptyPage:
        raise Http404("no such page") from None
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "patents/browse.html",
        {
            "page": page,
            "generators": generator_models_published(),
            "generator": generator,
            "mode": mode,
            "origin": origin,
            "date": request.GET.get("date", ""),
            "base_query": query.urlencode(),
        },
    )


@require_GET
def random_patent(request):
    public_id = patent_random_public_id()
    if public_id is None:
        messages.info(request, "No inventions are published yet, so there is none to pick.")
        return redirect("browse")
    return redirect("patent", public_id=public_id)


def _page_number(request, name: str) -> int:
    """A 1-based page number from the query; anything else is page 1."""
    raw = request.GET.get(name, "")
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 1


def _patent_or_404(public_id: str, *, with_claims: bool = True) -> Patent:
    patent = patent_get(public_id=public_id, with_claims=with_claims)
    if patent is None:
        raise Http404("no invention with that id")
    return patent


@require_GET
def patent_detail(request, public_id):
    patent = _patent_or_404(public_id, with_claims=False)
    if patent.is_withdrawn:
        return render(
            request,
            "patents/tombstone.html",
            {"patent": patent, "canonical": canonical_url(patent)},
            status=410,
        )
    claims_page = patent_claims_page(patent=patent, page=_page_number(request, "claims_page"))
    # Ten nearest references: the page lists five, the CPC suggestion counts all ten.
    references = patent_neighbours(patent, k=10, origin=Patent.Origin.REFERENCE)
    return render(
        request,
        "patents/detail.html",
        {
            "patent": patent,
            "claims": [
                {
                    "claim": c,
                    "html": claim_html(c.text, numbers=claims_page.page_of, page=claims_page.page),
                }
                for c in claims_page.claims
            ],
            "claims_page": claims_page,
            "citation": citation_plain(patent),
            "bibtex": citation_bibtex(patent),
            "jsonld": patent_jsonld(patent),
            "canonical": canonical_url(patent),
            "similar": patent_neighbours(patent, k=10, origin=Patent.Origin.GENERATED),
            "references": references[:5],
            "suggested_cpc": cpc_suggest(references)
            if patent.origin == Patent.Origin.GENERATED
            else [],
            "suggested_from": len(references),
            "sampling": json.dumps(patent.sampling_params, sort_keys=True),
        },
    )


@require_GET
def patent_download(request, public_id, fmt):
    patent = _patent_or_404(public_id)
    if patent.is_withdrawn:
        raise Http404("withdrawn")
    if fmt == "md":
        response = HttpResponse(
            patent_markdown(patent), content_type="text/markdown; charset=utf-8"
        )
    else:
        response = HttpResponse(
            json.dumps(patent_serialize(patent), ensure_ascii=False, indent=2),
            content_type="application/json; charset=utf-8",
        )
    response["Content-Disposition"] = f'attachment; filename="{patent.public_id}.{fmt}"'
    return response


@require_GET
def ledger(request):
    return render(request, "patents/ledger.html", {"heads": kept(ledger_daily_heads)})


@require_GET
def ledger_heads_json(request):
    """The daily heads, for third parties to archive (and check with `ledger verify
    --heads` or the dumps' verify_dump.py)."""
    response = JsonResponse(kept(ledger_heads_document), json_dumps_params={"indent": 1})
    response["Cache-Control"] = "public, max-age=60"
    return response


@require_GET
def downloads(request):
    return render(request, "patents/downloads.html", {"dumps": dumps_list(settings.EXPORT_DIR)})


@require_safe
def download_file(request, name):
    if not DUMP_NAME_RE.match(name):
        raise Http404("no such file")
    path = settings.EXPORT_DIR / name
    if name == "verify_dump.py" and not path.is_file():
        # The page links to it before the first dump is written.
        return file_download_response(request, DUMP_VERIFIER, name=name)
    return file_download_response(request, path, name=name, accel_path=name)


@require_GET
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page says: point them at the icon."""
    from django.templatetags.static import static

    return redirect(static("favicon.svg"), permanent=True)


@require_GET
def robots(request):
    lines = [
        "User-agent: *",
        "Disallow: /admin/",
        "Disallow: /api/",
        f"Sitemap: {settings.SITE_URL}/sitemap.xml",
        "",
    ]
    return HttpResponse("\n".join(lines), content_type="text/plain")


class LedgerRangePaginator(Paginator):
    """Sitemap files cut by ledger entry: file n lists the inventions whose publication
    entry's id is in the n-th range of ``per_page`` ids from the first entry's, still
    published. A range of the primary key whatever n is, where cutting by position skipped
    every key before the file (a million at the last file of a million inventions, for each
    file a crawler reads)."""

    def __init__(self, per_page: int):
        super().__init__([], per_page)
        first, last = ledger_id_span()
        self.base = max(first - 1, 0)
        self.count = last - self.base  # Paginator.count is a cached_property: its value

    def page(self, number):
        number = self.validate_number(number)
        after = self.base + (number - 1) * self.per_page
        found = patents_in_ledger_order(
            after=after, through=after + self.per_page, fields=("public_id", "published_at")
        )
        return self._get_page(list(found), number, self)


class PatentSitemap(Sitemap):
    """Every published invention, in the order of publication (new ones join the last
    file; a file changes only where an invention in it is withdrawn); /sitemap.xml is an
    index of the files."""

    changefreq = "never"
    limit = 5000

    @property
    def paginator(self):
        return LedgerRangePaginator(self.limit)

    def lastmod(self, obj):
        return obj.published_at

    def get_latest_lastmod(self):
        # Django's own calls lastmod() on every item: a million rows for the index page.
        return patent_latest_published_at()

    def location(self, obj):
        return obj.get_absolute_url()


SITEMAPS = {"patents": PatentSitemap}
_URLSET = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
)


@require_safe
def sitemap_file(request, section):
    """One sitemap file (``?p=N``), written line by line: the XML Django's sitemap view
    renders through its template took a second for a file's 5,000 URLs, so a crawler
    reading the files of ten million inventions (2,000 of them) took half an hour of a
    web process. The same XML, less the blank lines; the same 404s and headers."""
    if section not in SITEMAPS:
        raise Http404(f"no sitemap {section!r}")
    sitemap = SITEMAPS[section]()
    try:
        items = sitemap.paginator.page(request.GET.get("p", 1)).object_list
    except PageNotAnInteger:
        raise Http404("p must be a number") from None
    except EmptyPage:
        raise Http404("no such sitemap file") from None
    origin = f"{request.scheme}://{get_current_site(request).domain}"
    lines, newest = [_URLSET], None
    for item in items:
        lastmod = sitemap.lastmod(item)
        newest = lastmod if newest is None or lastmod > newest else newest
        lines.append(
            f"<url><loc>{xml_escape(origin + sitemap.location(item))}</loc>"
            f"<lastmod>{timezone.localtime(lastmod):%Y-%m-%d}</lastmod>"
            f"<changefreq>{sitemap.changefreq}</changefreq></url>\n"
        )
    lines.append("</urlset>\n")
    response = HttpResponse("".join(lines), content_type="application/xml")
    if newest is not None:  # for ConditionalGetMiddleware's 304, as Django's view sets it
        response["Last-Modified"] = http_date(newest.timestamp())
    response["X-Robots-Tag"] = "noindex, noodp, noarchive"
    return response


class LatestFeed(PatentFeed):
    title = "All the Patents: new inventions"
    link = "/patents/"

    def subtitle(self):
        heads = kept(ledger_daily_heads)
        text = "Machine-generated inventions published as prior art."
        if heads:
            h = heads[0]
            text += (
                f" Ledger head {h['head']} at position {h['position']} "
                f"({h['date']:%Y-%m-%d}); all heads: {settings.SITE_URL}/ledger/heads.json"
            )
        return text

    def items(self):
        return patents_latest(limit=50)


def page_not_found(request, exception=None):
    return render(request, "404.html", status=404)
