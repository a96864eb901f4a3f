"""A patent as JSON, written once: the dumps and the download (``patent_serialize``) and the
API (``patent_serialize(url=...)``) share the fields, the claims and the provenance or
reference block, and differ only where their readers need it (the dump's times are the
ledger's text, which verify_dump.py compares; the API adds the URL, status and origin)."""

from patents.ledger import ledger_time_text
from patents.models import LedgerEntry, Patent
from patents.presentation import official_url, reference_number


def claims_serialize(patent: Patent, claims=None) -> list[dict]:
    # Sorted in Python so that a prefetched claim set is used as it is.
    chosen = sorted(patent.claims.all(), key=lambda c: c.number) if claims is None else claims
    return [{"number": c.number, "text": c.text, "depends_on": c.depends_on} for c in chosen]


def patent_provenance(patent: Patent) -> dict:
    """How a generated invention was made: model, revision, mode, sampling, seed, job."""
    return {
        "generator_model": patent.generator_model,
        "generator_revision": patent.generator_revision,
        "mode": patent.mode,
        "sampling_params": patent.sampling_params,
        "seed": patent.seed,
        "job": patent.job_id,
        "contributor": patent.contributor or None,
    }


def reference_serialize(patent: Patent) -> dict:
    """A reference patent as the document it is: number, kind, its own dates kept apart."""
    meta = patent.source_meta or {}
    return {
        "number": patent.source_id,
        "kind": meta.get("kind") or None,
        "label": reference_number(patent),
        "publication_date": patent.source_date.isoformat() if patent.source_date else None,
        "filing_date": patent.filing_date.isoformat() if patent.filing_date else None,
        "cpc": meta.get("cpc", []),
        "ipc": meta.get("ipc", []),
        "citations": meta.get("citations", []),
        "official_url": official_url(patent) or None,
        "source": meta.get("source", ""),
    }


def patent_serialize(patent: Patent, *, url: str | None = None, claims=None) -> dict:
    """Without ``url``: the record of the dumps and the JSON download (times as the ledger
    writes them). With ``url``: the API's shape, which adds url, status and origin, gives
    ISO times, leaves a reference patent's import time out (its own dates are in
    ``reference``), and reduces a withdrawn invention to its tombstone. ``claims``: the
    claims to write (a page of them), else all."""
    generated = patent.origin == Patent.Origin.GENERATED
    data = {"public_id": patent.public_id}
    if url is not None:
        data.update(url=url, status=patent.status, origin=patent.origin)
    data.update(
        title=patent.title,
        abstract=patent.abstract,
        claims=claims_serialize(patent, claims),
        published_at=(
            ledger_time_text(patent.published_at)
            if url is None
            else patent.published_at.isoformat()
        ),
        content_hash=patent.content_hash,
    )
    if generated:
        data["provenance"] = patent_provenance(patent)
    else:
        data["reference"] = reference_serialize(patent)
        if url is not None:
            data.pop("published_at")  # this site's import time, not the document's date
    if url is not None and patent.is_withdrawn:
        data = {k: data[k] for k in ("public_id", "url", "status", "content_hash")}
        data["published_at"] = patent.published_at.isoformat()
        data["withdrawn_at"] = patent.withdrawn_at.isoformat() if patent.withdrawn_at else None
    return data


def ledger_entry_serialize(entry: LedgerEntry) -> dict:
    """An entry of the chain as the dumps' ledger file and the API give it: what its hash
    covers (the time as the ledger writes it), and the hash."""
    return {
        "kind": entry.kind,
        "public_id": entry.public_id,
        "content_hash": entry.content_hash,
        "recorded_at": ledger_time_text(entry.recorded_at),
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }
