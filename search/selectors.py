"""Reads for search. The FAISS index arrives with issue #4; until then: keyword only."""


def index_health() -> dict:
    return {"ok": None, "state": "not built", "detail": "dense index not configured yet"}
