"""Dated dumps that anyone can check without this software (``manage.py export_dump``)."""

import datetime as dt
import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from django.utils import timezone

from patents.ledger import GENESIS_HASH, ledger_heads_document, ledger_time_text
from patents.models import LedgerEntry, Patent
from patents.serializers import patent_serialize


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
            fh.write(json.dumps(patent_serialize(patent), ensure_ascii=False) + "\n")
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
        # The heads of the chain it holds: workers publish on while a dump is written.
        "heads": ledger_heads_document(through=head_id)["heads"],
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
