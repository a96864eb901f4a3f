"""Dated dumps that anyone can check without this software (``manage.py export_dump``)."""

import datetime as dt
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from allthepatents.files import file_sha256, file_write_atomic
from patents.ledger import GENESIS_HASH, ledger_heads_document
from patents.models import LedgerEntry
from patents.selectors import patents_in_ledger_order
from patents.serializers import ledger_entry_serialize, patent_serialize

logger = logging.getLogger(__name__)
DUMP_VERIFIER = Path(__file__).with_name("verify_dump.py")


def _utc_today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def _dump_files(day: str) -> tuple[str, str, str]:
    """The files of a day's dump (``day`` YYYY-MM-DD): its inventions, its ledger and its
    manifest (written last)."""
    name = f"allthepatents-{day}.jsonl.gz"
    return name, f"allthepatents-{day}.ledger.jsonl.gz", f"{name}.manifest.json"


def dump_export(
    *, out_dir: Path, today: dt.date | None = None, progress: Callable[[int], None] | None = None
) -> dict:
    """Writes a dated dump that anyone can check without this software:

    - ``allthepatents-DATE.jsonl.gz``: every published generated invention up to the head,
      in the order of their publication entries (so that the verifier checks the two files
      side by side, in memory that does not grow with them);
    - ``allthepatents-DATE.ledger.jsonl.gz``: the ledger from the genesis to the head;
    - ``allthepatents-DATE.manifest.json``: counts, SHA-256 of both files, the chain head
      and its position, and the daily heads (with their timestamp tokens);
    - ``verify_dump.py``: the standalone verifier (standard-library Python only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name, ledger_name, manifest_name = _dump_files((today or _utc_today()).isoformat())
    head = LedgerEntry.objects.order_by("-id").first()
    head_hash, head_id = (head.entry_hash, head.pk) if head else (GENESIS_HASH, 0)
    count = 0
    # Temporary names of this process's own: two exports of one day (a command and the
    # daily task) must not write into each other's files.
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for patent in patents_in_ledger_order(through=head_id, claims=True):
            fh.write(json.dumps(patent_serialize(patent), ensure_ascii=False) + "\n")
            count += 1
            if progress:
                progress(1)
    entries = 0
    ledger_tmp = out_dir / f".{ledger_name}.{os.getpid()}.tmp"
    with gzip.open(ledger_tmp, "wt", encoding="utf-8") as fh:
        for entry in LedgerEntry.objects.filter(id__lte=head_id).order_by("id").iterator(2000):
            entries += 1
            fh.write(json.dumps({"position": entries, **ledger_entry_serialize(entry)}) + "\n")
    # Read back a block at a time: at ten million inventions a dump is gigabytes.
    digest, ledger_digest = file_sha256(tmp), file_sha256(ledger_tmp)
    tmp.replace(out_dir / name)
    ledger_tmp.replace(out_dir / ledger_name)
    verifier = DUMP_VERIFIER
    file_write_atomic(out_dir / "verify_dump.py", verifier.read_bytes())
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
        "order": "ledger",  # the inventions in the order of their publication entries
        "verifier": "verify_dump.py",
        "verifier_sha256": hashlib.sha256(verifier.read_bytes()).hexdigest(),
        # The heads of the chain it holds: workers publish on while a dump is written.
        "heads": ledger_heads_document(through=head_id)["heads"],
        "created_at": timezone.now().isoformat(),
    }
    # The manifest last, whole or not at all: /downloads/ lists a dump by its manifest.
    file_write_atomic(out_dir / manifest_name, json.dumps(manifest, indent=2).encode("utf-8"))
    return manifest


def dump_dated_today(*, out_dir: Path) -> bool:
    """Whether today's (UTC) dump is written: its manifest is its last file."""
    return (out_dir / _dump_files(_utc_today().isoformat())[2]).is_file()


def dumps_prune(*, out_dir: Path, keep: int) -> list[str]:
    """Deletes all but the newest ``keep`` dumps (0: keeps every one); returns the names of
    the dumps deleted. Each manifest goes first, so a dump is never listed without its
    files. Every newer dump holds everything an older one held but the inventions withdrawn
    since, and the ledger proves what was published when."""
    if keep <= 0 or not out_dir.exists():
        return []
    manifests = out_dir.glob("allthepatents-????-??-??.jsonl.gz.manifest.json")
    days = sorted((m.name[len("allthepatents-") :][:10] for m in manifests), reverse=True)
    deleted = []
    for day in days[keep:]:
        name, ledger_name, manifest_name = _dump_files(day)
        for file in (manifest_name, name, ledger_name):
            (out_dir / file).unlink(missing_ok=True)
        deleted.append(name)
    return deleted


def dump_export_daily() -> dict:
    """Today's dump, unless it is written already, then the old ones pruned to EXPORT_KEEP.
    What the worker runs once a day (``dump_export_soon``)."""
    out_dir = settings.EXPORT_DIR
    if dump_dated_today(out_dir=out_dir):
        return {"written": None, "pruned": []}
    manifest = dump_export(out_dir=out_dir)
    return {
        "written": manifest["file"],
        "pruned": dumps_prune(out_dir=out_dir, keep=settings.EXPORT_KEEP),
    }


def dump_export_soon(patent_ids: list[int]) -> None:
    """The publish and withdraw hook (with EXPORT_DAILY): the first change of a UTC day
    enqueues that day's dump, which holds everything published before it. At most one is
    enqueued an hour; a dead broker or cache loses nothing, the next change enqueues it."""
    if not settings.EXPORT_DAILY or dump_dated_today(out_dir=settings.EXPORT_DIR):
        return
    from django.core.cache import cache

    from allthepatents.celery import task_send

    try:
        if cache.add(f"dump-export-enqueued:{_utc_today()}", 1, 3600):
            task_send("patents.dump_export_daily")
    except Exception as exc:
        logger.warning("could not enqueue the daily dump: %s", exc)
