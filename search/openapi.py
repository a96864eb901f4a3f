"""OpenAPI paths and schemas of search's endpoints (/api/search, /api/patents/{id});
allthepatents/openapi.py composes the document."""

from django.conf import settings

from patents.vocabulary import GENERATED, MODES, ORIGIN_ALL, ORIGINS

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
        "reference patents with a code under any of them; at most 10",
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
    "minLength": 1,
    "maxLength": settings.SEARCH_MAX_QUERY_CHARS,  # what this site takes, not the default
    "pattern": "\\S",  # blank text is refused (400): there is nothing to search for
    "description": "words, a claim, or a description. With GET the whole request line "
    "must stay within what the server takes (4 KB under `make run`): POST anything long",
}
_SEARCH_RESPONSES = {
    "200": {
        "description": "results, best first",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}},
    },
    "400": {
        "description": "bad parameters, among them a date range that holds no day "
        "(`after` not earlier than `before`, `filed_after` not earlier than `filed_before`)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "429": {"description": "rate limited; see Retry-After"},
}

PATHS = {
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
}

SCHEMAS = {
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
