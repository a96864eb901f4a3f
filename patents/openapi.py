"""The OpenAPI paths of the patents app's endpoint (/api/ledger); allthepatents/openapi.py
composes the document."""

from patents.api import LEDGER_PAGE_MAX

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

PATHS = {
    "/api/ledger": {
        "get": {
            "summary": "The publication ledger, entry by entry in the chain's order, each "
            "publication with its invention: what a mirror follows from a dump's head",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "default": 0},
                    "description": "an entry id (a dump's manifest has its head's as "
                    "`chain_head_entry`; the previous page's `next` carries it); 0: from "
                    "the genesis",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": LEDGER_PAGE_MAX,
                        "default": LEDGER_PAGE_MAX,
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "`entries` and `next`, the URL of the next page, or null "
                    "when this page reached the head (poll again after the last entry's id)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "entries": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/LedgerEntry"},
                                    },
                                    "next": {"type": "string", "nullable": True},
                                },
                                "required": ["entries", "next"],
                            }
                        }
                    },
                },
                "400": {"description": "after or limit out of range", "content": _ERROR},
                "429": {
                    "description": "more entries asked for in the window than "
                    "LEDGER_API_RATE_LIMIT (each request counts its limit); see Retry-After",
                    "content": _ERROR,
                },
            },
        }
    },
}

SCHEMAS = {
    "LedgerEntry": {
        "type": "object",
        "description": "entry_hash = SHA-256 of prev_hash, kind, public_id, content_hash "
        "and recorded_at joined by newlines; prev_hash is the entry before's entry_hash "
        "(64 zeros before the first)",
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["publish", "withdraw"]},
            "public_id": {"type": "string"},
            "content_hash": {"type": "string"},
            "recorded_at": {"type": "string"},
            "prev_hash": {"type": "string"},
            "entry_hash": {"type": "string"},
            "invention": {
                "type": "object",
                "nullable": True,
                "description": "publication entries only: the invention as the dumps hold "
                "it, whose content hash is the entry's; null once withdrawn",
            },
        },
        "required": [
            "id",
            "kind",
            "public_id",
            "content_hash",
            "recorded_at",
            "prev_hash",
            "entry_hash",
        ],
    }
}
