import json

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from patents.models import Patent
from patents.selectors import patent_get
from patents.services import patent_provenance
from search.params import SearchParamError, search_params_parse
from search.ratelimit import rate_limit_check
from search.selectors import search_patents
from search.text import highlight

_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def json_safe_response(data, status=200) -> HttpResponse:
    """JSON whose text can never be read as HTML, even by a sniffing client."""
    body = json.dumps(data, ensure_ascii=False).translate(_JSON_ESCAPES)
    return HttpResponse(body, status=status, content_type="application/json; charset=utf-8")


def _hit_json(hit, request):
    p = hit.patent
    return {
        "public_id": p.public_id,
        "title": p.title,
        "url": request.build_absolute_uri(p.get_absolute_url()),
        "origin": p.origin,
        "published_at": p.published_at.isoformat(),
        "score": round(hit.score, 6),
        "snippet": hit.snippet,
        "matched_claim": (
            {
                "number": hit.matched_claim.number,
                "text": hit.matched_claim.text,
                "score": None if hit.claim_score is None else round(hit.claim_score, 4),
            }
            if hit.matched_claim
            else None
        ),
    }


def _error(message, status=400, **headers):
    response = JsonResponse({"error": message, "status": status}, status=status)
    for key, value in headers.items():
        response[key.replace("_", "-")] = value
    return response


@require_GET
def search_page(request):
    context = {"params": request.GET, "max_chars": settings.SEARCH_MAX_QUERY_CHARS}
    if not request.GET.get("q", "").strip() and not request.GET.get("search"):
        return render(request, "search/search.html", context)
    try:
        params = search_params_parse(request.GET)
    except SearchParamError as exc:
        context["error"] = str(exc)
        return render(request, "search/search.html", context, status=400)
    result = search_patents(params.q, filters=params.filters, k=params.k, page=params.page)
    hits = [
        {
            "hit": h,
            "snippet_html": highlight(h.snippet, result.terms),
            "claim_html": highlight(h.matched_claim.text[:600], result.terms)
            if h.matched_claim
            else "",
        }
        for h in result.hits
    ]
    query = request.GET.copy()
    query.pop("page", None)
    context.update(
        result=result,
        hits=hits,
        page=params.page,
        k=params.k,
        has_next=result.total > params.page * params.k,
        base_query=query.urlencode(),
        next_page=params.page + 1,
        prev_page=params.page - 1,
    )
    return render(request, "search/search.html", context)


@require_GET
def api_search(request):
    wait = rate_limit_check(request)
    if wait:
        return _error("too many requests; slow down", 429, Retry_After=str(wait))
    try:
        params = search_params_parse(request.GET)
    except SearchParamError as exc:
        return _error(str(exc))
    result = search_patents(params.q, filters=params.filters, k=params.k, page=params.page)
    return json_safe_response(
        {
            "query": params.q,
            "k": params.k,
            "page": params.page,
            "total": result.total,
            "engine": result.engine,
            "notice": result.notice,
            "results": [_hit_json(h, request) for h in result.hits],
        }
    )


def patent_json(patent: Patent, request) -> dict:
    data = {
        "public_id": patent.public_id,
        "url": request.build_absolute_uri(patent.get_absolute_url()),
        "status": patent.status,
        "origin": patent.origin,
        "title": patent.title,
        "abstract": patent.abstract,
        "claims": [
            {"number": c.number, "text": c.text, "depends_on": c.depends_on}
            for c in patent.claims.all()
        ],
        "published_at": patent.published_at.isoformat(),
        "content_hash": patent.content_hash,
    }
    if patent.origin == Patent.Origin.GENERATED:
        data["provenance"] = patent_provenance(patent)
    else:
        data["source"] = {
            "id": patent.source_id,
            "date": patent.source_date.isoformat() if patent.source_date else None,
            **patent.source_meta,
        }
    if patent.is_withdrawn:
        data = {k: data[k] for k in ("public_id", "url", "status", "published_at", "content_hash")}
        data["withdrawn_at"] = patent.withdrawn_at.isoformat() if patent.withdrawn_at else None
    return data


@require_GET
def api_patent(request, public_id):
    patent = patent_get(public_id=public_id)
    if patent is None:
        return _error(f"no invention with id {public_id!r}", 404)
    return json_safe_response(patent_json(patent, request))


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "All the Patents API", "version": "1"},
    "paths": {
        "/api/search": {
            "get": {
                "summary": "Hybrid (semantic + keyword) search over published inventions",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 20000},
                        "description": "words, a claim, or a description",
                    },
                    {
                        "name": "k",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "schema": {"type": "string", "format": "date"},
                        "description": "published strictly before this date (e.g. a priority date)",
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string", "format": "date"},
                    },
                    {
                        "name": "origin",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": ["generated", "reference", "all"],
                            "default": "generated",
                        },
                    },
                    {"name": "generator", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "mode",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["top-down", "bottom-up"]},
                    },
                ],
                "responses": {
                    "200": {"description": "results"},
                    "400": {
                        "description": "bad parameters",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                    "429": {"description": "rate limited; see Retry-After"},
                },
            }
        },
        "/api/patents/{public_id}": {
            "get": {
                "summary": "One invention",
                "parameters": [
                    {
                        "name": "public_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "the invention"},
                    "404": {"description": "unknown id"},
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
            }
        }
    },
}


@require_GET
def api_openapi(request):
    return JsonResponse(OPENAPI)


def api_not_found(request, rest=""):
    raise Http404
