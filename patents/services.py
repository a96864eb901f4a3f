"""Writes for patents: publishing, withdrawing, the ledger and the JSON Lines importer."""

import datetime as dt
import gzip
import hashlib
import json
import logging
import secrets
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from patents.ledger import (
    GENESIS_HASH,
    ledger_append,
    ledger_heads_document,
    ledger_time_text,
)
from patents.models import Claim, LedgerEntry, Patent
from patents.nearcopy import bands_store
from patents.text import (
    claim_find_dependency,
    claim_split_number,
    content_hash,
    control_chars_strip,
    cpc_codes_text,
)

logger = logging.getLogger(__name__)

PUBLIC_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: read aloud safely
PUBLIC_ID_LENGTH = 10

# Called with the list of newly published patent ids, after the transaction commits.
# The search app registers its indexer here (see search/apps.py).
_publish_hooks: list[Callable[[list[int]], None]] = []
_withdraw_hooks: list[Callable[[list[int]], None]] = []


def publish_hook_register(fn: Callable[[list[int]], None]) -> None:
    if fn not in _publish_hooks:
        _publish_hooks.append(fn)


def withdraw_hook_register(fn: Callable[[list[int]], None]) -> None:
    if fn not in _withdraw_hooks:
        _withdraw_hooks.append(fn)


def _run_hooks(hooks, ids: list[int]) -> None:
    for hook in hooks:
        try:
            hook(ids)
        except Exception:  # a failing hook must never undo a publication
            logger.exception("patent hook %s failed for %d patents", hook, len(ids))


def public_id_new() -> str:
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def _public_ids_unused(n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:
        candidates = {public_id_new() for _ in range(n - len(ids))} - ids
        taken = set(
            Patent.objects.filter(public_id__in=candidates).values_list("public_id", flat=True)
        )
        ids |= candidates - taken
    return list(ids)


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
        if not text:
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


@transaction.atomic
def patent_publish(
    *,
    title: str,
    abstract: str,
    claims: list[dict],
    raw_text: str = "",
    provenance: dict | None = None,
    job=None,
    published_at: dt.datetime | None = None,
) -> Patent:
    """Publishes one generated invention: row, claims, ledger entry, then the index hook.
    Raises RecordError when the text is over a size limit (nothing is written)."""
    claims = claims_normalise(claims)
    record_limits_check(title=title.strip(), abstract=abstract.strip(), claims=claims)
    provenance = provenance or {}
    now = published_at or timezone.now()
    patent = Patent.objects.create(
        public_id=_public_ids_unused(1)[0],
        origin=Patent.Origin.GENERATED,
        title=title.strip(),
        abstract=abstract.strip(),
        raw_text=raw_text,
        content_hash=content_hash(title=title, abstract=abstract, claims=claims),
        published_at=now,
        generator_model=provenance.get("generator_model", ""),
        generator_revision=provenance.get("generator_revision", ""),
        mode=provenance.get("mode", ""),
        prompt=provenance.get("prompt", ""),
        sampling_params=provenance.get("sampling_params", {}),
        seed=provenance.get("seed"),
        job=job,
    )
    Claim.objects.bulk_create(Claim(patent=patent, **c) for c in claims)
    # In the same transaction: a published patent is never missing from near-copy checks.
    bands_store([patent])
    ledger_append(patent=patent, kind=LedgerEntry.Kind.PUBLISH, recorded_at=now)
    ids = [patent.pk]
    transaction.on_commit(lambda: _run_hooks(_publish_hooks, ids))
    return patent


@transaction.atomic
def patent_withdraw(*, patent: Patent, reason: str) -> Patent:
    """Withdraws an invention: it stays as a tombstone, and the ledger records it."""
    if patent.is_withdrawn:
        return patent
    now = timezone.now()
    updated = Patent.objects.filter(pk=patent.pk, status=Patent.Status.PUBLISHED).update(
        status=Patent.Status.WITHDRAWN, withdrawn_at=now, withdrawal_reason=reason.strip()
    )
    patent.refresh_from_db()
    if updated and patent.origin == Patent.Origin.GENERATED:
        ledger_append(patent=patent, kind=LedgerEntry.Kind.WITHDRAW, recorded_at=now)
    ids = [patent.pk]
    transaction.on_commit(lambda: _run_hooks(_withdraw_hooks, ids))
    return patent


# --- Import of reference patents from JSON Lines ----------------------------------------


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    bad: list[tuple[int | str, str]] = field(default_factory=list)
    lines: int = 0
    broken: str = ""  # why the input ended early (truncated or corrupt file), if it did

    def summary(self) -> str:
        return (
            f"imported {self.imported}, skipped {self.skipped_existing} already present, "
            f"{len(self.bad)} bad lines"
            + (f"; STOPPED EARLY: {self.broken}" if self.broken else "")
        )


class RecordError(ValueError):
    pass


def record_limits_check(*, title: str, abstract: str, claims: list[dict]) -> None:
    """Raises RecordError naming the first size limit a record breaks (RECORD_MAX_*)."""
    from django.conf import settings

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


def _reference_batch_write(parsed: list[dict], report: ImportReport) -> list[int]:
    """Writes one batch in one transaction: all of a patent or none of it."""
    ids = [p["source_id"] for p in parsed]
    existing = set(Patent.objects.filter(source_id__in=ids).values_list("source_id", flat=True))
    fresh = []
    for p in parsed:
        if p["source_id"] in existing:
            report.skipped_existing += 1
            continue
        existing.add(p["source_id"])
        fresh.append(p)
    if not fresh:
        return []
    now = timezone.now()
    public_ids = _public_ids_unused(len(fresh))
    with transaction.atomic():
        patents = [
            Patent(
                public_id=public_ids[i],
                origin=Patent.Origin.REFERENCE,
                title=p["title"],
                abstract=p["abstract"],
                content_hash=content_hash(
                    title=p["title"], abstract=p["abstract"], claims=p["claims"]
                ),
                published_at=(
                    dt.datetime.combine(p["source_date"], dt.time(), tzinfo=dt.UTC)
                    if p["source_date"]
                    else now
                ),
                source_id=p["source_id"],
                source_date=p["source_date"],
                filing_date=p["filing_date"],
                source_meta=p["source_meta"],
                cpc_codes=cpc_codes_text(p["source_meta"].get("cpc")),
            )
            for i, p in enumerate(fresh)
        ]
        Patent.objects.bulk_create(patents)
        # bulk_create sets pks on PostgreSQL and SQLite >= 3.35; re-read to be portable.
        pk_by_source = dict(
            Patent.objects.filter(source_id__in=[p["source_id"] for p in fresh]).values_list(
                "source_id", "pk"
            )
        )
        Claim.objects.bulk_create(
            Claim(patent_id=pk_by_source[p["source_id"]], **c) for p in fresh for c in p["claims"]
        )
        new_ids = list(pk_by_source.values())
        bands_store(Patent.objects.filter(pk__in=new_ids).prefetch_related("claims"))
        transaction.on_commit(lambda: _run_hooks(_publish_hooks, new_ids))
    report.imported += len(fresh)
    return new_ids


def _import_in_batches(records: Iterable[dict], report: ImportReport, batch_size: int) -> None:
    batch: list[dict] = []
    for record in records:
        batch.append(record)
        if len(batch) >= batch_size:
            _reference_batch_write(batch, report)
            batch = []
    if batch:
        _reference_batch_write(batch, report)


def reference_import_records(
    records: Iterable[tuple[int, str]],
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Imports reference patents from numbered JSON lines; idempotent by source id."""
    report = ImportReport()

    def parsed():
        line_no = 0
        iterator = iter(records)
        while True:
            try:
                line_no, line = next(iterator)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error, UnicodeError) as exc:
                # A truncated or corrupt file: keep what came before, say where it broke.
                report.broken = (
                    f"the file breaks after line {line_no:,}: "
                    f"{type(exc).__name__}: {exc or 'unexpected end of data'}"
                )
                report.bad.append((f"after line {line_no}", report.broken))
                return
            report.lines += 1
            if progress:
                progress(1)
            if not line.strip():
                continue
            try:
                yield reference_record_parse(json.loads(line))
            except json.JSONDecodeError as exc:
                report.bad.append((line_no, f"invalid JSON: {exc.msg}"))
            except RecordError as exc:
                report.bad.append((line_no, str(exc)))

    _import_in_batches(parsed(), report, batch_size)
    return report


# --- Dumps ------------------------------------------------------------------------------------


def dump_export(
    *, out_dir: Path, today: dt.date | None = None, progress: Callable[[int], None] | None = None
) -> dict:
    """Writes a dated dump that anyone can check without this software:

    - ``allthepatents-DATE.jsonl.gz``: every published generated invention up to the head;
    - ``allthepatents-DATE.ledger.jsonl.gz``: the ledger from the genesis to the head;
    - ``allthepatents-DATE.manifest.json``: counts, SHA-256 of both files, the chain head
      and its position, and the daily heads (with their timestamp tokens);
    - ``verify_dump.py``: the standalone verifier (standard-library Python only)."""
    today = today or timezone.now().date()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"allthepatents-{today.isoformat()}"
    name, ledger_name = f"{stem}.jsonl.gz", f"{stem}.ledger.jsonl.gz"
    head = LedgerEntry.objects.order_by("-id").first()
    head_hash, head_id = (head.entry_hash, head.pk) if head else (GENESIS_HASH, 0)
    patents = (
        Patent.objects.filter(
            origin=Patent.Origin.GENERATED,
            status=Patent.Status.PUBLISHED,
            ledger_entries__id__lte=head_id,
        )
        .distinct()
        .order_by("published_at", "id")
    )
    count = 0
    tmp = out_dir / f".{name}.tmp"
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for patent in patents.iterator(chunk_size=500):
            fh.write(json.dumps(patent_as_record(patent), ensure_ascii=False) + "\n")
            count += 1
            if progress:
                progress(1)
    entries = 0
    ledger_tmp = out_dir / f".{ledger_name}.tmp"
    with gzip.open(ledger_tmp, "wt", encoding="utf-8") as fh:
        for entry in LedgerEntry.objects.filter(id__lte=head_id).order_by("id").iterator(2000):
            entries += 1
            fh.write(json.dumps(ledger_entry_as_record(entry, position=entries)) + "\n")
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    ledger_digest = hashlib.sha256(ledger_tmp.read_bytes()).hexdigest()
    tmp.replace(out_dir / name)
    ledger_tmp.replace(out_dir / ledger_name)
    verifier = Path(__file__).with_name("verify_dump.py")
    (out_dir / "verify_dump.py").write_bytes(verifier.read_bytes())
    manifest = {
        "file": name,
        "count": count,
        "sha256": digest,
        "ledger_file": ledger_name,
        "ledger_entries": entries,
        "ledger_sha256": ledger_digest,
        "chain_head": head_hash,
        "chain_head_entry": head_id,
        "chain_position": entries,
        "verifier": "verify_dump.py",
        "verifier_sha256": hashlib.sha256(verifier.read_bytes()).hexdigest(),
        "heads": ledger_heads_document()["heads"],
        "created_at": timezone.now().isoformat(),
    }
    (out_dir / f"{name}.manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def ledger_entry_as_record(entry: LedgerEntry, *, position: int) -> dict:
    return {
        "position": position,
        "kind": entry.kind,
        "public_id": entry.public_id,
        "content_hash": entry.content_hash,
        "recorded_at": ledger_time_text(entry.recorded_at),
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }


def patent_as_record(patent: Patent) -> dict:
    claims = [
        {"number": c.number, "text": c.text, "depends_on": c.depends_on}
        for c in patent.claims.order_by("number")
    ]
    return {
        "public_id": patent.public_id,
        "title": patent.title,
        "abstract": patent.abstract,
        "claims": claims,
        "published_at": ledger_time_text(patent.published_at),
        "content_hash": patent.content_hash,
        "provenance": patent_provenance(patent),
    }


def patent_provenance(patent: Patent) -> dict:
    return {
        "generator_model": patent.generator_model,
        "generator_revision": patent.generator_revision,
        "mode": patent.mode,
        "sampling_params": patent.sampling_params,
        "seed": patent.seed,
        "job": patent.job_id,
    }


def uspto_import_paths(
    paths: list[Path], *, batch_size: int = 500, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Imports USPTO full-text files (XML, weekly zips) as reference patents, streaming."""
    from patents.uspto import DocumentError, uspto_document_parse, uspto_documents

    report = ImportReport()

    def documents(path):
        location = "the start"
        iterator = uspto_documents(path)
        while True:
            try:
                location, text = next(iterator)
            except StopIteration:
                return
            except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                report.broken = f"{path.name} breaks after {location}: {type(exc).__name__}: {exc}"
                report.bad.append((f"{path.name}:{location}", report.broken))
                return
            yield location, text

    def parsed():
        for path in paths:
            for location, text in documents(path):
                report.lines += 1
                if progress:
                    progress(1)
                try:
                    yield reference_record_parse(uspto_document_parse(text))
                except (DocumentError, RecordError) as exc:
                    report.bad.append((f"{path.name}:{location}", str(exc)))

    _import_in_batches(parsed(), report, batch_size)
    return report
