"""Search's pages: the search page, "more like this", the exports and the printable
report. The JSON API is search/api.py, the alert feed search/feeds.py."""

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from allthepatents.ratelimit import rate_limit_check
from patents.selectors import patent_get
from patents.vocabulary import GENERATED, REFERENCE
from search.elements import claim_elements, element_charts
from search.exports import export_bibtex, export_csv, export_ris, export_row
from search.params import SearchParamError, search_params_parse
from search.requests import (
    MAX_QUERY_STRING,
    request_search_data,
    search_for_result_page,
    search_linkable_query,
)
from search.selectors import origin_other_count, search_workbench
from search.services import search_tally_record, stored_query_save
from search.text import highlight, snippet_words


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


def _page_context(request, params, bench, *, base_query: str):
    result, charts = bench.result, bench.charts
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
        for a, b, combo in bench.combinations:
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
        data = request_search_data(request)
        params = search_params_parse(data)
    except SearchParamError as exc:
        context["error"] = str(exc)
        return render(request, "search/search.html", context, status=400)
    if request.method == "POST":
        # Post/redirect/get: the result page is a plain GET that can be linked and reloaded;
        # a query too long for a URL is stored and named by a short id.
        link = search_linkable_query(params, data)
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
            link = search_linkable_query(params, data, qid=stored_query_save(text=params.q))
        return HttpResponseRedirect(f"{reverse('search')}?{link}", status=303)
    wait = rate_limit_check(request)
    if wait:
        return _search_page_limited(request, context, wait)
    bench = search_workbench(params, charts=True, combinations=True)
    if params.page == 1:
        search_tally_record(result=bench.result, filters=params.filters)
    base = request.GET.copy()
    base.pop("page", None)
    context["params"] = {**data, "q": params.q}
    context.update(_page_context(request, params, bench, base_query=base.urlencode()))
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
    _data, params, result, error = search_for_result_page(request)
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
    data, params, result, error = search_for_result_page(request)
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
