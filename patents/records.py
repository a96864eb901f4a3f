"""Reference records: validating one record of the shared JSON Lines format (or a USPTO
document parsed into it), numbering claims, size limits, and reading JSON Lines files.

No database access: ``search_eval``, ``train_embedder`` and the importers share it.
"""

import datetime as dt
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from patents.text import (
    claim_find_dependency,
    claim_is_placeholder,
    claim_split_number,
    control_chars_strip,
)


def claims_normalise(claims: Iterable) -> list[dict]:
    """Accepts strings (``"2. The x of claim 1"``) or dicts, returns numbered claim dicts."""
    out: list[dict] = []
    for position, item in enumerate(claims, start=1):
        if isinstance(item, dict):
            number = int(item.get("number") or position)
            text = control_chars_strip(str(item.get("text", "")))[0].strip()
            depends_on = item.get("depends_on")
        else:
            parsed_number, text = claim_split_number(control_chars_strip(str(item))[0])
            number = parsed_number or position
            depends_on = None
        if not text or claim_is_placeholder(text):
            continue
        if depends_on is None:
            depends_on = claim_find_dependency(text)
        if depends_on is not None and depends_on >= number:
            depends_on = None
        out.append({"number": number, "text": text, "depends_on": depends_on})
    # Renumber duplicates defensively: claim numbers are unique per patent.
    seen: set[int] = set()
    for c in out:
        while c["number"] in seen:
            c["number"] += 1
        seen.add(c["number"])
    return out


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    bad: list[tuple[int | str, str]] = field(default_factory=list)
    lines: int = 0
    broken: str = ""  # why the input ended early (truncated or corrupt file), if it did
    bands_index_seconds: float | None = None  # the near-copy index built at the end, if it was
    # PostgreSQL's planner statistics refreshed at the end, if they were.
    analyze_seconds: float | None = None

    def summary(self) -> str:
        return (
            f"imported {self.imported}, skipped {self.skipped_existing} already present, "
            f"{len(self.bad)} bad lines"
            + (
                f" (near-copy index built in {self.bands_index_seconds:.1f} s)"
                if self.bands_index_seconds is not None
                else ""
            )
            + (
                f" (statistics refreshed in {self.analyze_seconds:.1f} s)"
                if self.analyze_seconds is not None
                else ""
            )
            + (f"; STOPPED EARLY: {self.broken}" if self.broken else "")
        )


class RecordError(ValueError):
    pass


def record_limits_check(*, title: str, abstract: str, claims: list[dict]) -> None:
    """Raises RecordError naming the first size limit a record breaks (RECORD_MAX_*)."""
    if len(title) > settings.RECORD_MAX_TITLE_CHARS:
        raise RecordError(
            f"title is {len(title):,} characters; the limit is {settings.RECORD_MAX_TITLE_CHARS:,}"
        )
    if len(abstract) > settings.RECORD_MAX_ABSTRACT_CHARS:
        raise RecordError(
            f"abstract is {len(abstract):,} characters; "
            f"the limit is {settings.RECORD_MAX_ABSTRACT_CHARS:,}"
        )
    if len(claims) > settings.RECORD_MAX_CLAIMS:
        raise RecordError(f"{len(claims):,} claims; the limit is {settings.RECORD_MAX_CLAIMS:,}")
    for claim in claims:
        if len(claim["text"]) > settings.RECORD_MAX_CLAIM_CHARS:
            raise RecordError(
                f"claim {claim['number']} is {len(claim['text']):,} characters; "
                f"the limit is {settings.RECORD_MAX_CLAIM_CHARS:,}"
            )
    total = len(title) + len(abstract) + sum(len(c["text"]) for c in claims)
    if total > settings.RECORD_MAX_TOTAL_CHARS:
        raise RecordError(
            f"the record is {total:,} characters in all; "
            f"the limit is {settings.RECORD_MAX_TOTAL_CHARS:,}"
        )


def _expect_str(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    return control_chars_strip(value)[0].strip()


def _expect_str_list(record: dict, key: str) -> list[str]:
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"field {key!r} must be a list of strings")
    return [control_chars_strip(v)[0] for v in value]


def reference_record_parse(record) -> dict:
    """Validates one JSON object of the shared format; raises RecordError saying why."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    source_id = record.get("id")
    if isinstance(source_id, int) and not isinstance(source_id, bool):
        source_id = str(source_id)
    if not isinstance(source_id, str) or not source_id.strip():
        raise RecordError("missing or invalid 'id'")
    source_id = source_id.strip()
    if len(source_id) > 64:
        raise RecordError("'id' longer than 64 characters")
    title = _expect_str(record, "title")
    abstract = _expect_str(record, "abstract")
    raw_claims = record.get("claims") or []
    if not isinstance(raw_claims, list) or not all(
        isinstance(c, str) or (isinstance(c, dict) and isinstance(c.get("text"), str))
        for c in raw_claims
    ):
        raise RecordError("field 'claims' must be a list of strings")
    if len(raw_claims) > settings.RECORD_MAX_CLAIMS:
        raise RecordError(
            f"{len(raw_claims):,} claims; the limit is {settings.RECORD_MAX_CLAIMS:,}"
        )
    claims = claims_normalise(raw_claims)
    if not (title or abstract or claims):
        raise RecordError("record has none of title, abstract and claims")
    record_limits_check(title=title, abstract=abstract, claims=claims)
    raw_date = _expect_str(record, "date")
    date_type = _expect_str(record, "date_type").lower()
    source_date = filing_date = None
    if raw_date:
        try:
            day = dt.date.fromisoformat(raw_date[:10])
        except ValueError:
            raise RecordError(f"bad date {raw_date!r}") from None
        # The shared format says what its date is; a filing date is no publication date.
        if date_type == "filing":
            filing_date = day
        else:
            source_date = day
    raw_filing = record.get("filing_date")
    if isinstance(raw_filing, str) and raw_filing.strip() and filing_date is None:
        try:
            filing_date = dt.date.fromisoformat(raw_filing.strip()[:10])
        except ValueError:
            raise RecordError(f"bad filing_date {raw_filing!r}") from None
    meta = {key: _expect_str_list(record, key) for key in ("cpc", "ipc", "citations")}
    source = record.get("source")
    if isinstance(source, list):
        source = "; ".join(str(x) for x in source if isinstance(x, str))
    meta["source"] = control_chars_strip(source)[0] if isinstance(source, str) else ""
    meta["kind"] = _expect_str(record, "kind") if isinstance(record.get("kind"), str) else ""
    meta["claims_complete"] = bool(record.get("claims_complete"))
    if filing_date:
        meta["filing_date"] = filing_date.isoformat()
    return {
        "source_id": source_id,
        "title": title,
        "abstract": abstract,
        "claims": claims,
        "source_date": source_date,
        "filing_date": filing_date,
        "source_meta": meta,
    }


def jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        yield from enumerate(fh, start=1)
