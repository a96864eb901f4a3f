from django.conf import settings
from django.shortcuts import render

from allthepatents.api import API_PREFIX, api_error

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class SecurityHeadersMiddleware:
    """A strict Content-Security-Policy (no inline script or style) and friends."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CSP)
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if not settings.DEBUG:
            response.setdefault("X-Content-Type-Options", "nosniff")
        return response


NUL_MESSAGE = "the request holds a NUL character (0x00), which no field of this site takes"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _holds_nul(request) -> bool:
    if "\x00" in request.path:
        return True
    fields = [request.GET]
    if request.method == "POST" and request.content_type in FORM_TYPES:
        fields.append(request.POST)
    return any(
        "\x00" in key or any("\x00" in value for value in values)
        for field in fields
        for key, values in field.lists()
    )


class NulRefusalMiddleware:
    """PostgreSQL stores no NUL in text, and a NUL in an address (an invention's id) or a
    field (a generator filter) reached a lookup there and was a server error. Refused here
    for every view at once: the site's 400 page, or the API's JSON error under /api/. (JSON
    bodies are checked where they are parsed, allthepatents.api.json_body_parse.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _holds_nul(request):
            if request.path.startswith(API_PREFIX):
                return api_error(NUL_MESSAGE, 400)
            return render(request, "400.html", {"message": NUL_MESSAGE}, status=400)
        return self.get_response(request)
