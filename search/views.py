import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from allthepatents.api import ApiBodyError, api_error, api_methods, json_body_parse
from patents.feeds import PatentFeed
from patents.models import Patent
from patents.presentation import display_title
from patents.selectors import patent_claims_page, patent_get
from patents.serializers import patent_serialize, reference_serialize
from patents.vocabulary import GENERATED, MODES, ORIGIN_ALL, ORIGINS, REFERENCE
from search.elements import claim_elements, element_charts, element_combinations
from search.exports import export_bibtex, export_csv, export_ris, export_row
from search.params import SearchParamError, SearchParams, search_params_parse
from search.ratelimit import rate_limit_check
from search.selectors import origin_other_count, search_patents, stored_query_text
from search.services import stored_query_save
from search.text import highlight, snippet_words

_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def json_safe_response(data, status=200) -> HttpResponse:
    """JSON whose text can never be read as HTML, even by a sniffing client."""
    body = json.dumps(data, ensure_ascii=False).translate(_JSON_ESCAPES)
    return HttpResponse(body, status=status, content_type="application/json; charset=utf-8")


def _claim_json(claim, score=None):
    if claim is None:
        return None
    data = {"number": claim.number, "text": claim.text, "depends_on": claim.depends_on}
    if score is not None:
        data["score"] = round(score, 4)
    return data


def _hit_json(hit, request):
    p = hit.patent
    data = {
        "public_id": p.public_id,
        "title": p.title,
        "display_title": display_title(p),
        "url": request.build_absolute_uri(p.get_absolute_url()),
        "origin": p.origin,
        "score": round(hit.score, 6),
        "snippet": hit.snippet,
        "matched_claim": _claim_json(hit.matched_claim, hit.claim_score),
        "parent_claim": _claim_json(hit.parent_claim),
    }
    if p.origin == Patent.Origin.REFERENCE:
        data["reference"] = reference_serialize(p)
    else:
        data["published_at"] = p.published_at.isoformat()
    return data


# A GET request line must stay under gunicorn's 4,094 bytes (limit_request_line) with room
# for the path and the filters; longer queries go through a stored query id.
MAX_QUERY_STRING = 2000
SEARCH_FIELDS = (
    "q",
    "k",
    "before",
    "after",
    "filed_before",
    "filed_after",
    "origin",
    "mode",
    "cpc",
)


def _search_data(request):
    """The search's parameters from a GET (with ``qid`` for a stored long query) or a POST."""
    source = request.POST if request.method == "POST" else request.GET
    data = {key: source.get(key, "") for key in (*SEARCH_FIELDS, "generator", "page")}
    qid = request.GET.get("qid", "")
    if request.method == "GET" and qid and not data["q"]:
        text = stored_query_text(key=qid)
        if text is None:
            raise SearchParamError("that stored query does not exist; paste the claim again")
        data["q"] = text
    return data


def _linkable_query(params, data, *, qid: str = "") -> str:
    query = QueryDict(mutable=True)
    if qid:
        query["qid"] = qid
    else:
        query["q"] = params.q
    for key in SEARCH_FIELDS[1:] + ("generator",):
        if data.get(key):
            query[key] = data[key]
    return query.urlencode()


def _charts(params, result) -> dict:
    elements = claim_elements(params.q)
    if len(elements) < 2 or not result.hits:
        return {}
    return element_charts(elements, [h.patent for h in result.hits])


def _chart_rows_html(chart):
    return [
        {
            "row": r,
            "element_html": highlight(r.element, r.shared_terms),
            "passage_html": highlight(snippet_words(r.passage, 700), r.shared_terms),
        }
        for r in chart.rows
    ]


def _page_context(request, params, result, *, base_query: str):
    charts = _charts(params, result)
    hits = [
        {
            "hit": h,
            "snippet_html": highlight(h.snippet, result.terms),
            "claim_html": highlight(snippet_words(h.matched_claim.text, 600), result.terms)
            if h.matched_claim
            else "",
            "parent_html": highlight(snippet_words(h.parent_claim.text, 300), result.terms)
            if h.parent_claim
            else "",
            "chart": charts.get(h.patent.pk),
            "chart_rows": _chart_rows_html(charts[h.patent.pk]) if h.patent.pk in charts else [],
        }
        for h in result.hits
    ]
    other = None
    if not hits and params.page == 1 and params.filters.origin != "all":
        count = origin_other_count(params.q, filters=params.filters)
        if count:
            other_origin = REFERENCE if params.filters.origin == GENERATED else GENERATED
            query = QueryDict(base_query, mutable=True)
            query["origin"] = other_origin
            other = {"count": count, "origin": other_origin, "query": query.urlencode()}
    combos = []
    if params.page == 1 and charts:
        elements = claim_elements(params.q)
        for a, b, combo in _combinations(params, elements):
            combos.append(
                {
                    "a": a,
                    "b": b,
                    "covered": combo["covered"],
                    "elements": combo["elements"],
                    "rows": [
                        {
                            "row": r,
                            "patent": a if who == a.pk else b,
                            "element_html": highlight(r.element, r.shared_terms),
                            "passage_html": highlight(
                                snippet_words(r.passage, 500), r.shared_terms
                            ),
                        }
                        for who, r in combo["rows"]
                    ],
                }
            )
    return {
        "combinations": combos,
        "result": result,
        "hits": hits,
        "page": params.page,
        "k": params.k,
        "first_rank": (params.page - 1) * params.k + 1,
        "has_next": result.total > params.page * params.k,
        "base_query": base_query,
        "next_page": params.page + 1,
        "prev_page": params.page - 1,
        "other_origin": other,
    }


def _search_page_limited(request, context, wait: int):
    context["error"] = f"Too many searches from your address; try again in {wait} s."
    response = render(request, "search/search.html", context, status=429)
    response["Retry-After"] = str(wait)
    return response


@require_http_methods(["GET", "POST"])
def search_page(request):
    source = request.POST if request.method == "POST" else request.GET
    context = {"params": source, "max_chars": settings.SEARCH_MAX_QUERY_CHARS}
    wants_search = source.get("q", "").strip() or source.get("search") or source.get("qid")
    if not wants_search:
        return render(request, "search/search.html", context)
    try:
        data = _search_data(request)
        params = search_params_parse(data)
    except SearchParamError as exc:
        context["error"] = str(exc)
        return render(request, "search/search.html", context, status=400)
    if request.method == "POST":
        # Post/redirect/get: the result page is a plain GET that can be linked and reloaded;
        # a query too long for a URL is stored and named by a short id.
        link = _linkable_query(params, data)
        if len(link) > MAX_QUERY_STRING:
            # Storing costs the site a row: limited per client before anything is kept.
            wait = rate_limit_check(request) or rate_limit_check(
                request,
                scope="stored-query",
                limit=settings.SEARCH_STORED_QUERIES_PER_HOUR,
                window=3600,
            )
            if wait:
                return _search_page_limited(request, context, wait)
            link = _linkable_query(params, data, qid=stored_query_save(text=params.q))
        return HttpResponseRedirect(f"{reverse('search')}?{link}", status=303)
    wait = rate_limit_check(request)
    if wait:
        return _search_page_limited(request, context, wait)
    result = search_patents(params.q, filters=params.filters, k=params.k, page=params.page)
    base = request.GET.copy()
    base.pop("page", None)
    context["params"] = {**data, "q": params.q}
    context.update(_page_context(request, params, result, base_query=base.urlencode()))
    return render(request, "search/search.html", context)


@require_http_methods(["GET"])
def search_like(request, public_id):
    """More like this: a search with the patent's first claim (or its abstract), over
    every origin, as a linkable result page."""
    patent = patent_get(public_id=public_id)
    if patent is None or patent.is_withdrawn:
        raise Http404("no such invention")
    first = patent.claims.order_by("number").first()
    text = (first.text if first else "") or patent.abstract or patent.title
    query = QueryDict(mutable=True)
    if len(text) > MAX_QUERY_STRING // 3:
        query["qid"] = stored_query_save(text=text[: settings.SEARCH_MAX_QUERY_CHARS])
    else:
        query["q"] = text
    query["origin"] = "all"
    return HttpResponseRedirect(f"{reverse('search')}?{query.urlencode()}")


EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "ris": "application/x-research-info-systems; charset=utf-8",
    "bib": "application/x-bibtex; charset=utf-8",
}


# What a workbench search counts as against the rate limit: element charts embed every
# element and compare it with every result's passages; combinations search 30 deep.
ELEMENTS_COST, COMBINATIONS_COST = 4, 8


def _wants(data, key: str) -> bool:
    return str(data.get(key, "")).lower() in ("1", "true", "yes", "on")


def _limited_search(request, data):
    """Rate limit (charged by what the request asks for), parameters from ``data``, search:
    (params, result, None), or (None, None, the JSON error response)."""
    cost = 1
    if _wants(data, "elements") or _wants(data, "combinations"):
        cost += ELEMENTS_COST
    if _wants(data, "combinations"):
        cost += COMBINATIONS_COST
    wait = rate_limit_check(request, cost=cost)
    if wait:
        return None, None, api_error("too many requests; slow down", 429, Retry_After=str(wait))
    try:
        params = search_params_parse(data)
    except SearchParamError as exc:
        return None, None, api_error(str(exc))
    result = search_patents(params.q, filters=params.filters, k=params.k, page=params.page)
    return params, result, None


def _result_page_search(request):
    """A result page's search from its GET (``q`` or ``qid``), rate-limited: (data, params,
    result, None), or (None, None, None, the JSON error response)."""
    try:
        data = _search_data(request)
    except SearchParamError as exc:
        return None, None, None, api_error(str(exc))
    params, result, error = _limited_search(request, data)
    return data, params, result, error


def _export_rows(request, params, result) -> list[dict]:
    first = (params.page - 1) * params.k + 1
    return [
        export_row(h.patent, score=h.score, rank=first + n, request=request)
        for n, h in enumerate(result.hits)
    ]


@require_http_methods(["GET"])
def search_export(request, fmt):
    """The result page's hits as CSV, RIS or BibTeX, for an examiner's file."""
    if fmt not in EXPORT_TYPES:
        raise Http404("unknown export format")
    _data, params, result, error = _result_page_search(request)
    if error:
        return error
    rows = _export_rows(request, params, result)
    body = {"csv": export_csv, "ris": export_ris, "bib": export_bibtex}[fmt](rows)
    response = HttpResponse(body, content_type=EXPORT_TYPES[fmt])
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="search-{stamp}.{fmt}"'
    return response


@require_http_methods(["GET"])
def search_report(request):
    """A printable search report for an examiner's file: the query in full, its filters,
    the time of the search, and for each result its id, dates, content hash, URL, score and
    element table. Plain HTML with print styles (the browser's "Save as PDF" makes the PDF;
    no maintained Python library renders one without a browser engine or system libraries).
    """
    data, params, result, error = _result_page_search(request)
    if error:
        return error
    charts = _charts(params, result)
    rows = [
        {
            **row,
            "chart": charts.get(row["patent"].pk),
            "chart_rows": _chart_rows_html(charts[row["patent"].pk])
            if row["patent"].pk in charts
            else [],
        }
        for row in _export_rows(request, params, result)
    ]
    filters = [
        (label, data.get(key))
        for key, label in (
            ("origin", "Origin"),
            ("before", "Published before"),
            ("after", "Published after"),
            ("filed_before", "Filed before"),
            ("filed_after", "Filed after"),
            ("mode", "Mode"),
            ("generator", "Generator"),
            ("cpc", "CPC"),
        )
        if data.get(key)
    ]
    base = request.GET.copy()
    base.pop("page", None)
    context = {
        "query": params.q,
        "elements": claim_elements(params.q),
        "filters": filters or [("Origin", "generated (default)")],
        "searched_at": timezone.now(),
        "rows": rows,
        "result": result,
        "page": params.page,
        "k": params.k,
        "embedding_model": settings.EMBEDDING_MODEL,
        "results_url": f"{reverse('search')}?{base.urlencode()}",
    }
    return render(request, "search/report.html", context)


@dataclass(frozen=True)
class _Alert:
    """One request's alert: its parameters and the cache key of their results (the feed
    instance is shared by every request, so nothing of a request is kept on it)."""

    params: SearchParams
    cache_key: str
    ids: list | None  # the cached results, None on a miss


class _AlertLimited(Exception):
    def __init__(self, wait: int):
        self.wait = wait


class SearchAlertFeed(PatentFeed):
    """Alerts without an account: newly published inventions that match a search above
    SEARCH_ALERT_MIN_SIMILARITY (cosine), newest first. Cached per query and filters for
    SEARCH_ALERT_CACHE_SECONDS, so a poll is a cache read; a miss is one search, and is
    charged to the client's search rate limit."""

    link = "/search/"

    def __call__(self, request, *args, **kwargs):
        try:
            return super().__call__(request, *args, **kwargs)
        except _AlertLimited as exc:
            response = HttpResponse(
                f"Too many searches; try again in {exc.wait} s.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(exc.wait)
            return response

    def get_object(self, request):
        try:
            params = search_params_parse(_search_data(request))
        except SearchParamError as exc:
            raise Http404(str(exc)) from None
        # Keyed by what the search is, not by the URL: extra parameters (?x=1, ?x=2, ...)
        # must not make every poll a new search.
        what = json.dumps([params.q, repr(params.filters)], ensure_ascii=False)
        key = "alert:" + hashlib.sha256(what.encode("utf-8", "replace")).hexdigest()
        try:
            ids = cache.get(key)
        except Exception:  # a dead cache: compute every time
            ids = None
        if ids is None:
            wait = rate_limit_check(request)
            if wait:
                raise _AlertLimited(wait)
        return _Alert(params=params, cache_key=key, ids=ids)

    def title(self, alert):
        return f"All the Patents: new inventions like “{alert.params.q[:80]}”"

    def subtitle(self, alert):
        return (
            "Generated inventions published as prior art that match this search "
            f"(similarity at least {settings.SEARCH_ALERT_MIN_SIMILARITY})."
        )

    def items(self, alert):
        ids = alert.ids
        if ids is None:
            result = search_patents(alert.params.q, filters=alert.params.filters, k=50)
            ids = [
                h.patent.pk
                for h in result.hits
                if h.dense_score is not None
                and h.dense_score >= settings.SEARCH_ALERT_MIN_SIMILARITY
            ]
            try:
                cache.set(alert.cache_key, ids, timeout=settings.SEARCH_ALERT_CACHE_SECONDS)
            except Exception:  # noqa: S110 (no cache: the next poll searches again)
                pass
        return list(
            Patent.objects.filter(pk__in=ids, status=Patent.Status.PUBLISHED).order_by(
                "-published_at"
            )[:30]
        )


COMBINATION_DEPTH = 30


def _combinations(params, elements):
    """Pairs among the top 30 that together meet the most elements (when no single one
    meets them all): [(patent a, patent b, combination dict)]."""
    if len(elements) < 2:
        return []
    top = search_patents(params.q, filters=params.filters, k=COMBINATION_DEPTH)
    patents = {h.patent.pk: h.patent for h in top.hits}
    combos = element_combinations(element_charts(elements, list(patents.values())))
    return [(patents[c["patents"][0]], patents[c["patents"][1]], c) for c in combos]


def _combinations_json(params, elements, request):
    out = []
    for a, b, combo in _combinations(params, elements):
        out.append(
            {
                "results": [a.public_id, b.public_id],
                "covered": combo["covered"],
                "elements": combo["elements"],
                "rows": [
                    {
                        "element": r.element,
                        "public_id": (a if who == a.pk else b).public_id,
                        "passage": r.passage_label,
                        "text": r.passage,
                        "score": round(r.score, 4),
                        "covered": r.covered,
                    }
                    for who, r in combo["rows"]
                ],
            }
        )
    return out


def _api_data(request):
    if request.method in ("GET", "HEAD"):
        return request.GET
    if request.content_type != "application/json":
        raise SearchParamError("POST a JSON object with Content-Type: application/json")
    try:
        return json_body_parse(request.body)
    except ApiBodyError as exc:
        raise SearchParamError(str(exc)) from None


@csrf_exempt  # JSON only, no cookie authentication: nothing for a forged request to use
@api_methods("GET", "POST")
def api_search(request):
    try:
        data = _api_data(request)  # the JSON body is parsed once
    except SearchParamError as exc:
        return api_error(str(exc))
    params, result, error = _limited_search(request, data)
    if error:
        return error
    charts = {}
    elements = []
    want_elements = _wants(data, "elements")
    want_combinations = _wants(data, "combinations")
    combinations = []
    if want_elements or want_combinations:
        elements = claim_elements(params.q)
        charts = element_charts(elements, [h.patent for h in result.hits])
    if want_combinations:
        combinations = _combinations_json(params, elements, request)
    results = []
    for h in result.hits:
        row = _hit_json(h, request)
        if elements:
            chart = charts.get(h.patent.pk)
            row["elements"] = chart.as_json() if chart else None
        results.append(row)
    return json_safe_response(
        {
            "query": params.q,
            **({"query_elements": elements} if elements else {}),
            "k": params.k,
            "page": params.page,
            "total": result.total,
            "total_exact": result.total_exact,
            "engine": result.engine,
            "notice": result.notice,
            "results": results,
            **({"combinations": combinations} if want_combinations else {}),
        }
    )


def patent_json(patent: Patent, request) -> dict:
    return patent_serialize(patent, url=request.build_absolute_uri(patent.get_absolute_url()))


@csrf_exempt  # JSON only: a wrong method gets the API's 405, not the CSRF page
@api_methods("GET")
def api_patent(request, public_id):
    """One invention, its claims PATENT_CLAIMS_PER_PAGE at a time (``?claims_page=N``);
    ``claims_next`` links the next page, and the download (``/p/<id>.json``) is whole."""
    patent = patent_get(public_id=public_id, with_claims=False)
    if patent is None:
        return api_error(f"no invention with id {public_id!r}", 404)
    raw = request.GET.get("claims_page", "1")
    if not (raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0):
        return api_error("claims_page must be a positive integer", 400)
    page = patent_claims_page(patent=patent, page=int(raw))
    if int(raw) > page.page:
        return api_error(f"claims_page {raw} is past the last page, {page.pages}", 404)
    data = patent_serialize(
        patent,
        url=request.build_absolute_uri(patent.get_absolute_url()),
        claims=page.claims,
    )
    if "claims" in data:  # a withdrawn invention's tombstone has none
        following = page.page + 1 if page.page < page.pages else None
        data.update(
            claims_total=page.total,
            claims_page=page.page,
            claims_pages=page.pages,
            claims_next=request.build_absolute_uri(f"?claims_page={following}")
            if following
            else None,
        )
    return json_safe_response(data)


_DATE = {"type": "string", "format": "date"}
_FILTERS = {
    "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
    "page": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
    "before": {
        **_DATE,
        "description": "published strictly before this date (a priority date); a reference "
        "by its own publication date, and an undated reference never passes",
    },
    "after": {**_DATE, "description": "published on or after this date"},
    "filed_before": {**_DATE, "description": "filed strictly before (references)"},
    "filed_after": {**_DATE, "description": "filed on or after (references)"},
    "origin": {
        "type": "string",
        "enum": [*ORIGINS, ORIGIN_ALL],
        "default": GENERATED,
    },
    "generator": {"type": "string"},
    "mode": {"type": "string", "enum": list(MODES)},
    "cpc": {
        "type": "string",
        "description": "CPC codes or prefixes, space- or comma-separated (H04L, A61B5/02): "
        "reference patents with a code under any of them",
    },
    "combinations": {
        "type": "boolean",
        "description": "add up to 3 pairs of results (from the top 30) that together meet "
        "the most elements, for a claim no single result meets",
    },
    "elements": {
        "type": "boolean",
        "description": "add, per result, the claim-element table: the passage (abstract or "
        "claim) that best meets each element of the query, with its similarity",
    },
}
_Q = {
    "type": "string",
    "maxLength": 20000,
    "description": "words, a claim, or a description (POST for anything long)",
}
_SEARCH_RESPONSES = {
    "200": {
        "description": "results, best first",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}},
    },
    "400": {
        "description": "bad parameters",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "429": {"description": "rate limited; see Retry-After"},
}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "All the Patents API", "version": "1"},
    "paths": {
        "/api/search": {
            "get": {
                "summary": "Hybrid (semantic + keyword) search; filters act inside retrieval",
                "parameters": [
                    {"name": "q", "in": "query", "required": True, "schema": _Q},
                    *[
                        {"name": name, "in": "query", "schema": schema}
                        for name, schema in _FILTERS.items()
                    ],
                ],
                "responses": _SEARCH_RESPONSES,
            },
            "post": {
                "summary": "The same search with the query in a JSON body (long claims)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["q"],
                                "properties": {"q": _Q, **_FILTERS},
                            }
                        }
                    },
                },
                "responses": _SEARCH_RESPONSES,
            },
        },
        "/api/patents/{public_id}": {
            "get": {
                "summary": "One invention, or a reference patent with its own number and dates",
                "parameters": [
                    {
                        "name": "public_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "claims_page",
                        "in": "query",
                        "description": "claims come PATENT_CLAIMS_PER_PAGE (100) at a time; "
                        "claims_total, claims_pages and claims_next say what is left",
                        "schema": {"type": "integer", "minimum": 1, "default": 1},
                    },
                ],
                "responses": {
                    "200": {"description": "the invention"},
                    "400": {
                        "description": "claims_page is not a positive integer",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                    "404": {
                        "description": "unknown id",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
            },
            "Reference": {
                "type": "object",
                "properties": {
                    "number": {"type": "string"},
                    "kind": {"type": "string", "nullable": True},
                    "label": {"type": "string"},
                    "publication_date": {**_DATE, "nullable": True},
                    "filing_date": {**_DATE, "nullable": True},
                    "cpc": {"type": "array", "items": {"type": "string"}},
                    "official_url": {"type": "string", "nullable": True},
                },
            },
            "Hit": {
                "type": "object",
                "properties": {
                    "public_id": {"type": "string"},
                    "title": {"type": "string"},
                    "display_title": {"type": "string"},
                    "url": {"type": "string"},
                    "origin": {"type": "string", "enum": list(ORIGINS)},
                    "published_at": {
                        "type": "string",
                        "format": "date-time",
                        "description": "generated inventions only",
                    },
                    "reference": {"$ref": "#/components/schemas/Reference"},
                    "score": {"type": "number"},
                    "snippet": {"type": "string"},
                    "matched_claim": {"type": "object", "nullable": True},
                    "parent_claim": {"type": "object", "nullable": True},
                },
            },
            "Results": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "total": {"type": "integer"},
                    "total_exact": {
                        "type": "boolean",
                        "description": "false: at least this many (a candidate list was full)",
                    },
                    "engine": {"type": "string", "enum": ["hybrid", "keyword"]},
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                },
            },
        }
    },
}


def _contribute_op(
    summary: str, request_schema: dict, ok: tuple[int, str], refusals: dict[int, str] | None = None
) -> dict:
    """One work-unit endpoint: its success status and the refusals it really gives, besides
    the 400 and 401 every one of them can answer."""
    answers = {
        ok[0]: ok[1],
        400: "malformed request",
        401: "unknown, revoked or suspended token",
    }
    answers.update(refusals or {})
    responses = {str(code): {"description": why} for code, why in answers.items()}
    return {
        "post": {
            "summary": summary,
            "security": [{"contributorToken": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema}},
            },
            "responses": responses,
        }
    }


_UNIT_REF = {"type": "object", "properties": {"unit": {"type": "string"}}, "required": ["unit"]}
# The contributors' work-unit API (#18): generation/contributions.py.
OPENAPI["paths"].update(
    {
        "/api/contribute/lease": _contribute_op(
            "Lease a work unit: job, sample indexes, prompts, seeds, sampling settings, the "
            "model the job runs, the precision to sample in, lease_seconds",
            {"type": "object"},
            (200, "a unit, or {unit: null, retry_after} when there is none"),
            {429: "too many units leased at once"},
        ),
        "/api/contribute/submit": _contribute_op(
            "Submit a unit's sampled token ids (202): a worker proves each, then parses, gates, "
            "publishes",
            {
                **_UNIT_REF,
                "properties": {
                    **_UNIT_REF["properties"],
                    "samples": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "index": {"type": "integer"},
                                "token_ids": {"type": "array", "items": {"type": "integer"}},
                                "finished": {"type": "boolean"},
                            },
                            "required": ["index", "token_ids", "finished"],
                        },
                    },
                },
            },
            (202, "{contribution, status: pending}: ask /api/contribute/status"),
            {
                400: "malformed, or a sample cut short (neither finished nor the unit's "
                "budget long: the unit goes back to the pool and counts as a strike)",
                409: "the unit is not yours any more, or is being checked already",
                429: "too many submissions from this token (CONTRIBUTOR_SUBMITS_PER_MINUTE)",
                503: "the site cannot check submissions now (its task broker is down)",
            },
        ),
        "/api/contribute/renew": _contribute_op(
            "Keep a unit while generating it: renew well within lease_seconds",
            _UNIT_REF,
            (200, "{unit, expires_at}"),
            {409: "the unit is not yours any more, or is submitted already"},
        ),
        "/api/contribute/status": _contribute_op(
            "A submission's state: pending, accepted (recorded, published, rejected) or "
            "refused (why)",
            {"type": "object", "properties": {"contribution": {"type": "integer"}}},
            (200, "{contribution, status, error, recorded, published, rejected}"),
            {404: "no such submission of yours"},
        ),
        "/api/contribute/release": _contribute_op(
            "Give a unit back (stopping cleanly)", _UNIT_REF, (200, "{released: bool}")
        ),
    }
)
OPENAPI["components"]["securitySchemes"] = {
    "contributorToken": {"type": "http", "scheme": "bearer", "description": "atp_… token"}
}


@csrf_exempt
@api_methods("GET")
def api_openapi(request):
    return JsonResponse(OPENAPI)


@csrf_exempt
def api_not_found(request, rest=""):
    return api_error(f"no API endpoint at {request.path}", 404)
