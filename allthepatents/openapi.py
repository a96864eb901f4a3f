"""The API's OpenAPI document, composed from the paths each app writes for its own
endpoints (search/, patents/ and generation/openapi.py)."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from allthepatents.api import api_methods


def openapi_document() -> dict:
    from generation import openapi as generation_api
    from patents import openapi as patents_api
    from search import openapi as search_api

    return {
        "openapi": "3.0.3",
        "info": {"title": "All the Patents API", "version": "1"},
        "paths": {**search_api.PATHS, **patents_api.PATHS, **generation_api.PATHS},
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                    "required": ["error", "status"],
                },
                **search_api.SCHEMAS,
                **patents_api.SCHEMAS,
            },
            "securitySchemes": generation_api.SECURITY_SCHEMES,
        },
    }


@csrf_exempt
@api_methods("GET")
def api_openapi(request):
    return JsonResponse(openapi_document())
