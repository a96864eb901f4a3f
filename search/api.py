"""The JSON API: search (with element charts and combinations) and one invention."""

from django.views.decorators.csrf import csrf_exempt

from allthepatents.api import (
    ApiBodyError,
    api_error,
    api_methods,
    json_body_parse,
    json_safe_response,
)
from patents.models import Patent
from patents.presentation import display_title
from patents.selectors import patent_claims_page, patent_get
from patents.serializers import patent_serialize, reference_serialize
from search.params import SearchParamError
from search.requests import request_wants, search_request_checked
from search.selectors import search_workbench
from search.services import search_tally_record


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


def _combinations_json(pairs):
    out = []
    for a, b, combo in pairs:
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
    params, error = search_request_checked(request, data)
    if error:
        return error
    want_elements = request_wants(data, "elements")
    want_combinations = request_wants(data, "combinations")
    bench = search_workbench(
        params, charts=want_elements or want_combinations, combinations=want_combinations
    )
    result, elements, charts = bench.result, bench.elements, bench.charts
    if params.page == 1:
        search_tally_record(result=result, filters=params.filters)
    combinations = _combinations_json(bench.combinations) if want_combinations else []
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
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0):
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
