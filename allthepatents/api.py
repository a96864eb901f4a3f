"""The JSON API's common ground, for every app's endpoints under /api/: the error shape,
the method check, the body parser, and a middleware that keeps Django's own answers (a
CSRF refusal, a body over the size limit, a 500) inside the JSON contract there."""

import json
from functools import wraps
from urllib.parse import urlencode

from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

API_PREFIX = "/api/"
# Deeper JSON is no search and no work unit: refuse it before anything walks it.
MAX_JSON_DEPTH = 20


class ApiBodyError(ValueError):
    """The request body is not a JSON object the API can take; the message says why."""


class ApiParamError(ValueError):
    """A query parameter the endpoint cannot take; the message says which and why."""


def api_page_params(request, *, maximum: int) -> tuple[int, int]:
    """``after`` (a key, 0: from the first; the previous page's ``next`` carries it) and
    ``limit`` (1 to ``maximum``, which is also the default) of a keyset-paged endpoint."""
    try:
        after = int(request.GET.get("after") or 0)
        limit = int(request.GET.get("limit") or maximum)
    except ValueError:
        raise ApiParamError("after and limit must be whole numbers") from None
    # Past 2**63 no key of either database can be: PostgreSQL refused the lookup.
    if not 0 <= after < 2**63 or not 1 <= limit <= maximum:
        raise ApiParamError(f"after must be 0 or more, limit from 1 to {maximum}")
    return after, limit


def api_next_url(view_name: str, *, after: int | None, limit: int) -> str | None:
    """The URL of the page after ``after`` (None: there is none)."""
    if after is None:
        return None
    return f"{reverse(view_name)}?{urlencode({'after': after, 'limit': limit})}"


def api_error(message: str, status: int = 400, **headers) -> JsonResponse:
    response = JsonResponse({"error": message, "status": status}, status=status)
    for key, value in headers.items():
        response[key.replace("_", "-")] = value
    return response


def api_methods(*methods):
    """Like require_http_methods, but answers 405 in the API's JSON error format. HEAD is
    allowed wherever GET is."""
    allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method not in allowed:
                response = api_error(
                    f"method {request.method} not allowed; use {' or '.join(methods)}", 405
                )
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _refuse_constant(name: str):
    raise ApiBodyError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ApiBodyError(f"{text[:20]} is too large a number")
    return value


def json_body_parse(raw: bytes) -> dict:
    """The body as a JSON object, or ApiBodyError: not UTF-8, not JSON, not an object,
    NaN or Infinity, nested deeper than MAX_JSON_DEPTH, or a string holding a lone
    surrogate or a NUL (no database or page can store one)."""
    try:
        data = json.loads(raw or b"{}", parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiBodyError(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ApiBodyError):
            raise
        raise ApiBodyError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiBodyError("the body must be a JSON object")
    _walk(data)
    return data


def _walk(data) -> None:
    """Depth and text checks without recursion (a deep value must not blow the stack)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiBodyError(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _text_check(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _text_check(value)


def _text_check(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiBodyError("a string holds a lone surrogate (\\ud800-\\udfff)") from None
    if "\x00" in text:  # PostgreSQL stores none: a lookup with one was a server error
        raise ApiBodyError("a string holds a NUL character (\\u0000)")


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class ApiJsonErrorsMiddleware:
    """Under /api/, an error answered by anything but the API's own views (the CSRF
    failure page, a 400 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE, a 500) is answered
    in the API's JSON error shape, with the same status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not _is_json(response)
        ):
            reason = getattr(response, "reason_phrase", "") or "error"
            replaced = api_error(
                f"{reason.lower()} ({request.method} {request.path})", response.status_code
            )
            for header in ("Allow", "Retry-After"):
                if header in response:
                    replaced[header] = response[header]
            return replaced
        return response


_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def json_safe_response(data, status=200) -> HttpResponse:
    """JSON whose text can never be read as HTML, even by a sniffing client."""
    body = json.dumps(data, ensure_ascii=False).translate(_JSON_ESCAPES)
    return HttpResponse(body, status=status, content_type="application/json; charset=utf-8")


@csrf_exempt
def api_not_found(request, rest=""):
    return api_error(f"no API endpoint at {request.path}", 404)
