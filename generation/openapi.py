"""OpenAPI paths of generation's endpoints: the contributors' work-unit API
(/api/contribute/*: generation/contributions.py) and the examiners' verdicts
(/api/verdicts); allthepatents/openapi.py composes the document."""


def _contribute_op(
    summary: str,
    request_schema: dict,
    ok: tuple[int, str],
    refusals: dict[int, str] | None = None,
    *,
    body_required: bool = True,
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
                "required": body_required,
                "content": {"application/json": {"schema": request_schema}},
            },
            "responses": responses,
        }
    }


_UNIT_REF = {
    "type": "object",
    "properties": {"unit": {"type": "string", "minLength": 1}},
    "required": ["unit"],
}
# The contributors' work-unit API (#18): generation/contributions.py.
PATHS = {
    "/api/contribute/lease": _contribute_op(
        "Lease a work unit: job, sample indexes, prompts, seeds, sampling settings, the "
        "model the job runs, the precision to sample in, lease_seconds",
        {"type": "object"},
        (200, "a unit, or {unit: null, retry_after} when there is none"),
        {429: "too many units leased at once"},
        body_required=False,  # it takes no parameters: an empty POST leases
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
        "A submission's state: pending, accepted (recorded, published, rejected) or refused (why)",
        {
            "type": "object",
            "properties": {"contribution": {"type": "integer"}},
            "required": ["contribution"],
        },
        (200, "{contribution, status, error, recorded, published, rejected}"),
        {404: "no such submission of yours"},
    ),
    "/api/contribute/release": _contribute_op(
        "Give a unit back (stopping cleanly)", _UNIT_REF, (200, "{released: bool}")
    ),
    "/api/verdicts": {
        "get": {
            "summary": "Examiners' verdicts on generated inventions, a page at a time in the "
            "order given (who gave each is not published; /stats/verdicts.csv has them all)",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "default": 0},
                    "description": "the previous page's `next` carries it; 0: from the first",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
                },
            ],
            "responses": {
                "200": {
                    "description": "`verdicts` (public_id, generator_model, mode, verdict, "
                    "note, updated_at) and `next`, the URL of the next page or null",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "verdicts": {"type": "array", "items": {"type": "object"}},
                                    "next": {"type": "string", "nullable": True},
                                },
                                "required": ["verdicts", "next"],
                            }
                        }
                    },
                },
                "400": {
                    "description": "after or limit out of range",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    },
}
SECURITY_SCHEMES = {
    "contributorToken": {"type": "http", "scheme": "bearer", "description": "atp_… token"}
}
