"""Writes for patents: publishing and withdrawing (each with its ledger entry), public ids,
and the hooks that tell the search index. Importing lives in ``patents.importing``, record
validation in ``patents.records``, dumps in ``patents.dumps``."""

import datetime as dt
import logging
import secrets
from collections.abc import Callable

from django.db import connection, transaction

from allthepatents.clock import db_now
from patents.ledger import ledger_append
from patents.models import Claim, LedgerEntry, Patent, PatentTally, ReferenceAreaTally
from patents.nearcopy import bands_store
from patents.records import claims_normalise, record_limits_check
from patents.text import content_hash, cpc_subclasses

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


def publish_hooks_run(ids: list[int]) -> None:
    """Tells the publish hooks (the search index) about ``ids``; call after commit."""
    _run_hooks(_publish_hooks, ids)


def _run_hooks(hooks, ids: list[int]) -> None:
    for hook in hooks:
        try:
            hook(ids)
        except Exception:  # a failing hook must never undo a publication
            logger.exception("patent hook %s failed for %d patents", hook, len(ids))


def public_id_new() -> str:
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def patent_ids_unused(n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:
        candidates = {public_id_new() for _ in range(n - len(ids))} - ids
        taken = set(
            Patent.objects.filter(public_id__in=candidates).values_list("public_id", flat=True)
        )
        ids |= candidates - taken
    return list(ids)


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
    # The shared clock: a worker whose own clock ran behind would date prior art before it
    # existed, one ahead after the head a time-stamping authority signed.
    now = published_at or db_now()
    patent = Patent.objects.create(
        public_id=patent_ids_unused(1)[0],
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
        contributor=provenance.get("contributor", ""),
        job=job,
    )
    Claim.objects.bulk_create(Claim(patent=patent, **c) for c in claims)
    # In the same transaction: a published patent is never missing from near-copy checks.
    bands_store([patent])
    ledger_append(patent=patent, kind=LedgerEntry.Kind.PUBLISH, recorded_at=now)
    patent_tally_add(origin=patent.origin, generator_model=patent.generator_model, mode=patent.mode)
    ids = [patent.pk]
    transaction.on_commit(lambda: publish_hooks_run(ids))
    return patent


@transaction.atomic
def patent_withdraw(*, patent: Patent, reason: str) -> Patent:
    """Withdraws an invention: it stays as a tombstone, and the ledger records it."""
    if patent.is_withdrawn:
        return patent
    now = db_now()
    updated = Patent.objects.filter(pk=patent.pk, status=Patent.Status.PUBLISHED).update(
        status=Patent.Status.WITHDRAWN, withdrawn_at=now, withdrawal_reason=reason.strip()
    )
    patent.refresh_from_db()
    if updated and patent.origin == Patent.Origin.GENERATED:
        ledger_append(patent=patent, kind=LedgerEntry.Kind.WITHDRAW, recorded_at=now)
    if updated:
        patent_tally_add(
            origin=patent.origin, generator_model=patent.generator_model, mode=patent.mode, n=-1
        )
        if patent.origin == Patent.Origin.REFERENCE:
            reference_area_tally_add(counts=dict.fromkeys(cpc_subclasses(patent.cpc_codes), -1))
    ids = [patent.pk]
    transaction.on_commit(lambda: _run_hooks(_withdraw_hooks, ids))
    return patent


# --- tallies -------------------------------------------------------------------------------


def _counts_add(model, key: tuple[str, ...], rows: list[tuple]) -> None:
    """Adds each row's last value to the count of the row's key (the rest), creating the
    row where there is none: one upsert a row, so that two writers meeting at a new key
    neither lose a count nor fail (SQLite 3.24+ and PostgreSQL both take it)."""
    if not rows:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    marks = ", ".join(["%s"] * (len(key) + 1))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(key)}, count) VALUES ({marks}) "  # noqa: S608 (the model's table and columns, values bound)
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET count = {table}.count + excluded.count",
            rows,
        )


def patent_tally_add(*, origin: str, generator_model: str = "", mode: str = "", n: int = 1) -> None:
    """Adds ``n`` (negative: takes away) to the published patents of that origin, model and
    mode, in the caller's transaction: the write that publishes or withdraws them. Publishing
    already waits its turn at the ledger, which it appends to first: the tally's row lock
    adds no waiting."""
    if n:
        _counts_add(
            PatentTally, ("origin", "generator_model", "mode"), [(origin, generator_model, mode, n)]
        )


def reference_area_tally_add(*, counts: dict[str, int]) -> None:
    """Adds each count (negative: takes away) to the reference patents of its CPC subclass,
    in the caller's transaction, in a fixed order so that two imports meeting at the same
    areas wait for each other instead of deadlocking."""
    _counts_add(ReferenceAreaTally, ("cpc",), [(cpc, n) for cpc, n in sorted(counts.items()) if n])


@transaction.atomic
def patent_tallies_rebuild() -> int:
    """Counts the published patents again into the tallies, and the references by CPC
    subclass (a scan of every patent); returns how many tallies there are. For ``manage.py
    patent_tallies rebuild`` after rows were written around the services (a bulk load, a
    restored backup)."""
    from patents.selectors import patent_tallies_counted, reference_areas_counted

    rows = patent_tallies_counted()
    PatentTally.objects.all().delete()
    PatentTally.objects.bulk_create(PatentTally(**r) for r in rows)
    areas = reference_areas_counted()
    ReferenceAreaTally.objects.all().delete()
    ReferenceAreaTally.objects.bulk_create(
        ReferenceAreaTally(cpc=cpc, count=n) for cpc, n in areas.items()
    )
    return len(rows) + len(areas)
