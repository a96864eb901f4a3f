"""What a search request asks for, shared by the pages, the exports, the alert feed and the
JSON API: its parameters (from a GET, a POST or a stored query's id), what it costs against
the rate limit, and the rate-limited search itself."""

from django.http import QueryDict

from allthepatents.api import api_error
from allthepatents.ratelimit import rate_limit_check
from search.params import SearchParamError, search_params_parse
from search.selectors import search_patents, stored_query_text

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


def request_search_data(request):
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


def search_linkable_query(params, data, *, qid: str = "") -> str:
    """The query string that asks for this search again: the text (or a stored query's id)
    and the filters given, nothing else."""
    query = QueryDict(mutable=True)
    if qid:
        query["qid"] = qid
    else:
        query["q"] = params.q
    for key in SEARCH_FIELDS[1:] + ("generator",):
        if data.get(key):
            query[key] = data[key]
    return query.urlencode()


# What a workbench search counts as against the rate limit: element charts embed every
# element and compare it with every result's passages; combinations search 30 deep.
ELEMENTS_COST, COMBINATIONS_COST = 4, 8


def request_wants(data, key: str) -> bool:
    return str(data.get(key, "")).lower() in ("1", "true", "yes", "on")


def search_request_checked(request, data):
    """Rate limit (charged by what the request asks for), then the parameters from
    ``data``: (params, None), or (None, the JSON error response)."""
    cost = 1
    if request_wants(data, "elements") or request_wants(data, "combinations"):
        cost += ELEMENTS_COST
    if request_wants(data, "combinations"):
        cost += COMBINATIONS_COST
    wait = rate_limit_check(request, cost=cost)
    if wait:
        return None, api_error("too many requests; slow down", 429, Retry_After=str(wait))
    try:
        return search_params_parse(data), None
    except SearchParamError as exc:
        return None, api_error(str(exc))


def search_limited(request, data):
    """``search_request_checked``, then the search: (params, result, None), or (None,
    None, the JSON error response)."""
    params, error = search_request_checked(request, data)
    if error:
        return None, None, error
    result = search_patents(params.q, filters=params.filters, k=params.k, page=params.page)
    return params, result, None


def search_for_result_page(request):
    """A result page's search from its GET (``q`` or ``qid``), rate-limited: (data, params,
    result, None), or (None, None, None, the JSON error response)."""
    try:
        data = request_search_data(request)
    except SearchParamError as exc:
        return None, None, None, api_error(str(exc))
    params, result, error = search_limited(request, data)
    return data, params, result, error
