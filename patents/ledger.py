"""The publication ledger: a hash chain over every publication and withdrawal.

An entry's hash covers the previous entry's hash, the kind, the public id, the content hash
and the time, which is the publication (or withdrawal) time the page shows. ``ledger_verify``
checks the chain, every entry against its patent, and every generated patent against
exactly one entry of each kind it needs; ``ledger_heads_check`` checks heads that third
parties saved (``/ledger/heads.json``, dump manifests) against the chain, so that a chain
cut short, or rewritten from some point on, is caught from outside. With ``LEDGER_TSA_URL``
each daily head is also sent to an RFC 3161 time-stamping authority.
"""

import base64
import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import CharField, Count, F, Max, Min
from django.db.models.functions import Greatest, Least, Substr, TruncDate
from django.utils import timezone

from patents.models import LedgerDay, LedgerEntry, LedgerTimestamp, Patent
from patents.text import content_hash

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
HEADS_FORMAT = "allthepatents-ledger-heads/1"


def ledger_time_text(moment: dt.datetime) -> str:
    """The time as hashed: UTC, ISO 8601 with microseconds when there are any."""
    return moment.astimezone(dt.UTC).isoformat()


def ledger_entry_hash(
    *, prev_hash: str, public_id: str, content_hash: str, kind: str, recorded_at: dt.datetime
) -> str:
    material = "\n".join([prev_hash, kind, public_id, content_hash, ledger_time_text(recorded_at)])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def ledger_append(*, patent: Patent, kind: str, recorded_at: dt.datetime) -> LedgerEntry:
    """Appends one entry; the unique ``prev_hash`` makes a concurrent append retry."""
    for _attempt in range(20):
        last = LedgerEntry.objects.order_by("-id").first()
        prev = last.entry_hash if last else GENESIS_HASH
        entry = LedgerEntry(
            kind=kind,
            patent=patent,
            public_id=patent.public_id,
            content_hash=patent.content_hash,
            recorded_at=recorded_at,
            prev_hash=prev,
            entry_hash=ledger_entry_hash(
                prev_hash=prev,
                public_id=patent.public_id,
                content_hash=patent.content_hash,
                kind=kind,
                recorded_at=recorded_at,
            ),
        )
        try:
            with transaction.atomic():
                entry.save()
                _ledger_day_count(entry)
            return entry
        except IntegrityError:
            continue
    raise RuntimeError("could not append to the ledger: too much contention")


def _ledger_day_count(entry: LedgerEntry) -> None:
    """Counts ``entry`` in its UTC day's row, in the entry's own transaction. Appends are
    one at a time already (the unique ``prev_hash``), so the day's row adds no waiting; a
    first entry of a day that meets another's row retries with the chain."""
    day = entry.recorded_at.astimezone(dt.UTC).date()
    counted = LedgerDay.objects.filter(day=day).update(
        count=F("count") + 1,
        first_id=Least(F("first_id"), entry.pk),
        last_id=Greatest(F("last_id"), entry.pk),
    )
    if not counted:
        LedgerDay.objects.create(day=day, count=1, first_id=entry.pk, last_id=entry.pk)


# --- verification ------------------------------------------------------------------------


@dataclass
class LedgerProblem:
    entry_id: int | None
    public_id: str
    why: str

    def __str__(self):
        if not (self.entry_id or self.public_id):
            return self.why  # the chain's or the kept days' as a whole
        where = f"ledger entry {self.entry_id}" if self.entry_id else "patent"
        return f"{where} ({self.public_id}): {self.why}"


def _patent_time(patent: Patent, kind: str):
    return patent.published_at if kind == LedgerEntry.Kind.PUBLISH else patent.withdrawn_at


def ledger_verify(
    *,
    heads: dict[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, LedgerProblem | None]:
    """Checks the whole ledger; returns (entries checked, first problem or None).

    Forward: the chain links, each entry's hash, and each entry against its patent (public
    id, content hash recomputed from the text, and the time the page shows). Backward: every
    published or withdrawn generated patent has exactly one publish entry, and a withdrawn
    one exactly one withdraw entry. ``heads`` ({position: entry hash}, saved by someone
    else) must each be in the chain at that position. Then the days the public heads are read
    from (``LedgerDay``), against the entries, and the timestamp tokens."""
    prev = GENESIS_HASH
    checked = 0
    seen: dict[tuple[int, str], int] = {}
    heads = dict(heads or {})
    for position, entry, claims in _entries_with_claims():
        patent = entry.patent

        def problem(why, entry=entry, checked=checked):
            return checked, LedgerProblem(entry.pk, entry.public_id, why)

        if entry.prev_hash != prev:
            return problem("previous-hash link broken (an entry was removed or reordered)")
        expected = ledger_entry_hash(
            prev_hash=prev,
            public_id=entry.public_id,
            content_hash=entry.content_hash,
            kind=entry.kind,
            recorded_at=entry.recorded_at,
        )
        if expected != entry.entry_hash:
            return problem("entry hash does not match its fields")
        if position in heads and heads.pop(position) != entry.entry_hash:
            return problem(f"a saved head says position {position} holds another entry")
        if entry.public_id != patent.public_id:
            return problem("public id changed")
        actual = content_hash(title=patent.title, abstract=patent.abstract, claims=claims)
        if actual != entry.content_hash or patent.content_hash != entry.content_hash:
            return problem("content changed since publication")
        shown = _patent_time(patent, entry.kind)
        if shown is None or ledger_time_text(shown) != ledger_time_text(entry.recorded_at):
            return problem(
                f"the {'publication' if entry.kind == 'publish' else 'withdrawal'} time shown "
                f"({ledger_time_text(shown) if shown else 'none'}) is not the one recorded "
                f"({ledger_time_text(entry.recorded_at)})"
            )
        key = (patent.pk, entry.kind)
        if key in seen:
            return problem(f"a second {entry.kind} entry for the same invention")
        seen[key] = entry.pk
        prev = entry.entry_hash
        checked += 1
        if progress:
            progress(1)
    if heads:
        position = min(heads)
        return checked, LedgerProblem(
            None,
            "",
            f"a saved head at position {position} ({heads[position][:16]}…) is beyond the "
            f"chain's {checked} entries: the chain was cut short",
        )
    generated = Patent.objects.filter(origin=Patent.Origin.GENERATED).values_list(
        "pk", "public_id", "status"
    )
    for pk, public_id, status in generated.iterator(chunk_size=2000):
        if (pk, LedgerEntry.Kind.PUBLISH) not in seen:
            return checked, LedgerProblem(None, public_id, "published but has no ledger entry")
        if status == Patent.Status.WITHDRAWN and (pk, LedgerEntry.Kind.WITHDRAW) not in seen:
            return checked, LedgerProblem(None, public_id, "withdrawn but has no ledger entry")
        if status == Patent.Status.PUBLISHED and (pk, LedgerEntry.Kind.WITHDRAW) in seen:
            return checked, LedgerProblem(
                seen[(pk, LedgerEntry.Kind.WITHDRAW)],
                public_id,
                "withdrawn in the ledger but shown as published",
            )
    days = ledger_days_problem()
    if days:
        return checked, LedgerProblem(None, "", days)
    for stamp in LedgerTimestamp.objects.select_related("entry").order_by("id"):
        why = ledger_timestamp_problem(stamp)
        if why:
            return checked, LedgerProblem(stamp.entry_id, stamp.entry.public_id, why)
    return checked, None


def _entries_with_claims(chunk: int = 2000):
    """(position, entry with its patent, the patent's claims) in chain order, two queries
    per ``chunk`` entries instead of one per entry."""
    from patents.models import Claim

    position, last_id = 0, 0
    while True:
        entries = list(
            LedgerEntry.objects.filter(id__gt=last_id)
            .order_by("id")
            .select_related("patent")[:chunk]
        )
        if not entries:
            return
        claims: dict[int, list[dict]] = {}
        rows = Claim.objects.filter(patent_id__in={e.patent_id for e in entries}).order_by(
            "patent_id", "number"
        )
        for row in rows.values("patent_id", "number", "text", "depends_on"):
            claims.setdefault(row.pop("patent_id"), []).append(row)
        for entry in entries:
            position += 1
            yield position, entry, claims.get(entry.patent_id, [])
        last_id = entries[-1].pk


# --- heads ---------------------------------------------------------------------------------


def _utc_day(field: str):
    """A timestamp column's UTC day, for grouping. SQLite stores UTC as text, "YYYY-MM-DD
    HH:MM:SS...": its first ten characters are the day, read in C, where TruncDate calls
    into Python for every row (3.7 s against 0.4 s for a million ledger entries)."""
    if connection.vendor == "sqlite":
        return Substr(field, 1, 10, output_field=CharField())
    return TruncDate(field, tzinfo=dt.UTC)


def ledger_days_counted(*, through: int | None = None) -> list[dict]:
    """Per UTC day, in date order: its entries' count, lowest and highest id, counted from
    the entries (up to ``through``). A scan of every entry: what ``LedgerDay`` keeps."""
    entries = LedgerEntry.objects.all()
    if through is not None:
        entries = entries.filter(id__lte=through)
    rows = list(
        entries.annotate(day=_utc_day("recorded_at"))
        .values("day")
        .annotate(count=Count("id"), first_id=Min("id"), last_id=Max("id"))
        .order_by("day")
    )
    for r in rows:
        if isinstance(r["day"], str):
            r["day"] = dt.date.fromisoformat(r["day"])
    return rows


def ledger_days_kept() -> list[dict]:
    """What ``ledger_days_counted`` counts, as the appends kept it: a row a day."""
    return list(LedgerDay.objects.order_by("day").values("day", "count", "first_id", "last_id"))


@transaction.atomic
def ledger_days_rebuild() -> int:
    """The kept days counted again from the entries (after a bulk load of entries, or where
    ``ledger verify`` found them wrong); returns how many days there are."""
    rows = ledger_days_counted()
    LedgerDay.objects.all().delete()
    LedgerDay.objects.bulk_create(LedgerDay(**r) for r in rows)
    return len(rows)


def ledger_days_problem() -> str:
    """Where the kept days differ from the entries' own count, the first such day, in words;
    "" when they agree."""
    kept = {r["day"]: r for r in ledger_days_kept()}
    counted = {r["day"]: r for r in ledger_days_counted()}
    for day in sorted(kept.keys() | counted.keys()):
        if kept.get(day) != counted.get(day):
            return (
                f"the daily heads' count for {day} ({_day_said(kept.get(day))}) is not its "
                f"entries' ({_day_said(counted.get(day))}); `manage.py ledger days` counts "
                "them again"
            )
    return ""


def _day_said(row: dict | None) -> str:
    return f"{row['count']} entries, #{row['first_id']}-#{row['last_id']}" if row else "none"


def ledger_daily_heads(*, through: int | None = None) -> list[dict]:
    """Per UTC day, newest first: the day's last entry, its position in the chain (entries
    from the genesis up to and including it), its hash, and its timestamp token if any.
    ``through``: the heads of the chain as it stood at that entry (a dump's), counted from
    the entries; without it, from the days the appends keep."""
    rows = ledger_days_counted(through=through) if through is not None else ledger_days_kept()
    positions = _head_positions(rows)
    heads = dict(
        LedgerEntry.objects.filter(id__in=[r["last_id"] for r in rows]).values_list(
            "id", "entry_hash"
        )
    )
    stamps = {
        s.entry_id: s
        for s in LedgerTimestamp.objects.filter(entry_id__in=[r["last_id"] for r in rows])
    }
    out = []
    for r, position in zip(rows, positions, strict=True):
        stamp = stamps.get(r["last_id"])
        out.append(
            {
                "date": r["day"],
                "count": r["count"],
                "position": position,
                "last_entry": r["last_id"],
                "head": heads.get(r["last_id"], ""),
                "timestamp": (
                    {
                        "token": base64.b64encode(bytes(stamp.token)).decode("ascii"),
                        "tsa": stamp.tsa_url,
                        "stamped_at": stamp.stamped_at.isoformat(),
                    }
                    if stamp
                    else None
                ),
            }
        )
    return list(reversed(out))


def _head_positions(days: list[dict]) -> list[int]:
    """The chain position of each day's last entry (``days`` in date order, with each day's
    count, first and last id). Times are not always in chain order: two workers publishing
    at midnight may commit in the other order than their clocks read, and workers on other
    machines have their own clocks. A day's entries then interleave with its neighbours',
    and the running count of entries by date is not the position of the day's last entry.
    Where the days before and after a head lie wholly on either side of it in the chain,
    the running count is its position; elsewhere the entries between it and the last such
    head are counted (a range of ids, about a day's worth)."""
    later_first: list[int | None] = [None] * len(days)  # the lowest id of any later day
    lowest = None
    for i in range(len(days) - 1, -1, -1):
        later_first[i] = lowest
        first = days[i]["first_id"]
        lowest = first if lowest is None else min(lowest, first)
    positions: list[int | None] = []
    running, highest = 0, 0
    for day, after in zip(days, later_first, strict=True):
        running += day["count"]
        last = day["last_id"]
        highest = max(highest, last)
        exact = highest == last and (after is None or after > last)
        positions.append(running if exact else None)
    anchors = [(d["last_id"], p) for d, p in zip(days, positions, strict=True) if p is not None]
    for i, day in enumerate(days):
        if positions[i] is None:
            last = day["last_id"]
            # The genesis is position 0, before every id.
            anchor_id, anchor_position = max(
                ((k, p) for k, p in anchors if k < last), default=(0, 0)
            )
            between = LedgerEntry.objects.filter(id__gt=anchor_id, id__lte=last).count()
            positions[i] = anchor_position + between
    return positions


def ledger_heads_document(*, through: int | None = None) -> dict:
    """What /ledger/heads.json serves and every dump manifest carries (``through`` its
    chain's last entry)."""
    return {
        "format": HEADS_FORMAT,
        "site": settings.SITE_URL,
        "generated_at": timezone.now().isoformat(),
        "heads": [
            {**h, "date": h["date"].isoformat() if h["date"] else None}
            for h in ledger_daily_heads(through=through)
        ],
    }


class HeadsFileError(ValueError):
    pass


def ledger_heads_parse(data) -> dict[int, str]:
    """{position: hash} from a saved heads document, a dump manifest, or a list of heads."""
    if isinstance(data, dict) and "heads" in data:
        items = data["heads"]
    elif isinstance(data, dict) and "chain_head" in data:
        items = [{"position": data.get("chain_position"), "head": data["chain_head"]}]
    else:
        items = data
    if not isinstance(items, list):
        raise HeadsFileError("expected a heads document, a dump manifest or a list of heads")
    heads = {}
    for item in items:
        try:
            position, head = int(item["position"]), str(item["head"])
        except (KeyError, TypeError, ValueError):
            raise HeadsFileError(f"a head without position and hash: {item!r}"[:200]) from None
        if position > 0:
            heads[position] = head
    return heads


# --- trusted timestamps (RFC 3161) -----------------------------------------------------------


def _tsa_certificate() -> bytes:
    """The pinned TSA certificate, or b"": then the certificate a token carries is used,
    which checks the token's integrity (imprint, nonce, signature) but not who signed it."""
    path = settings.LEDGER_TSA_CERT
    return path.read_bytes() if path else b""


def ledger_timestamp_problem(stamp: LedgerTimestamp) -> str:
    """Why a stored token does not prove its head (empty when it does)."""
    import rfc3161ng

    try:
        ok = rfc3161ng.check_timestamp(
            bytes(stamp.token),
            certificate=_tsa_certificate(),
            data=stamp.entry.entry_hash.encode("ascii"),
            hashname="sha256",
        )
    except Exception as exc:  # pyasn1 and cryptography raise many kinds for a bad token
        return f"timestamp token does not verify: {type(exc).__name__}: {exc}"[:300]
    return "" if ok else "timestamp token does not verify"


class TsaError(RuntimeError):
    """No usable token: the TSA is down, slow, refusing, or answered something else."""


# A timestamp reply is a few kilobytes; one that keeps coming is not a reply.
_TSA_MAX_REPLY = 1 << 20


def _tsa_post(body: bytes, *, deadline: float) -> bytes:
    """POSTs a query and reads the reply, all of it within ``deadline`` seconds: a TSA that
    trickles a byte every few seconds held a worker for 300 s under a per-read timeout."""
    import time
    import urllib.error
    import urllib.request

    ends = time.monotonic() + deadline
    request = urllib.request.Request(  # noqa: S310 (an operator's setting)
        settings.LEDGER_TSA_URL,
        data=body,
        headers={"Content-Type": "application/timestamp-query"},
    )
    try:
        with urllib.request.urlopen(request, timeout=deadline) as response:  # noqa: S310
            chunks, size = [], 0
            while chunk := response.read1(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > _TSA_MAX_REPLY:
                    raise TsaError("the reply is larger than any timestamp")
                if time.monotonic() > ends:
                    raise TsaError(f"the reply took longer than {deadline:g} s")
            return b"".join(chunks)
    except (urllib.error.URLError, OSError) as exc:
        raise TsaError(f"did not answer: {exc}") from exc


def ledger_timestamp_request(data: bytes) -> bytes:
    """A token for ``data`` from LEDGER_TSA_URL, checked before it is kept, pinned
    certificate or not: it must be granted, stamp this data's SHA-256, carry the nonce this
    request sent, and be signed by the certificate (the pinned one, else the one in it)."""
    import hashlib
    import secrets

    import rfc3161ng
    from pyasn1.codec.der import encoder

    digest = hashlib.sha256(data).digest()
    nonce = secrets.randbits(63)
    query = rfc3161ng.encode_timestamp_request(
        rfc3161ng.make_timestamp_request(
            digest=digest, hashname="sha256", include_tsa_certificate=True, nonce=nonce
        )
    )
    raw = _tsa_post(query, deadline=settings.LEDGER_TSA_TIMEOUT)
    try:
        reply = rfc3161ng.decode_timestamp_response(raw)
        status = int(reply["status"]["status"])
        if status not in (0, 1):  # granted, granted with modifications
            raise TsaError(f"the TSA refused the request (status {status})")
        token = reply.time_stamp_token
        rfc3161ng.check_timestamp(
            token, certificate=_tsa_certificate(), digest=digest, hashname="sha256", nonce=nonce
        )
    except TsaError:
        raise
    except Exception as exc:  # pyasn1, cryptography and rfc3161ng raise many kinds
        raise TsaError(f"the reply is no token for this head: {type(exc).__name__}: {exc}") from exc
    return encoder.encode(token)


def _entries_due(now: dt.datetime) -> list[LedgerEntry]:
    """Closed days' heads without a token, and the newest entry when the newest token is
    older than LEDGER_TSA_INTERVAL: a day's work is stamped within the interval."""
    today = now.astimezone(dt.UTC).date()
    due_ids = [
        h["last_entry"]
        for h in ledger_daily_heads()
        if h["timestamp"] is None and h["date"] is not None and h["date"] < today
    ]
    latest = LedgerEntry.objects.order_by("-id").first()
    if latest is not None and not LedgerTimestamp.objects.filter(entry=latest).exists():
        newest = LedgerTimestamp.objects.order_by("-stamped_at").first()
        interval = dt.timedelta(seconds=settings.LEDGER_TSA_INTERVAL)
        if newest is None or now - newest.stamped_at >= interval:
            due_ids.append(latest.pk)
    return list(LedgerEntry.objects.filter(pk__in=set(due_ids)).order_by("id"))


def ledger_timestamp_heads(*, now: dt.datetime | None = None) -> dict:
    """Sends due heads to LEDGER_TSA_URL and stores the tokens that check out
    (``ledger_timestamp_request``). A TSA that is down, slow or answers something else is
    logged and left for the next call; publishing never waits on it."""
    if not settings.LEDGER_TSA_URL:
        return {"stamped": 0, "failed": 0, "skipped": "LEDGER_TSA_URL is not set"}
    now = now or timezone.now()
    stamped = failed = 0
    for entry in _entries_due(now):
        try:
            token = ledger_timestamp_request(entry.entry_hash.encode("ascii"))
        except TsaError as exc:
            failed += 1
            logger.warning(
                "TSA %s: no token for head %s: %s", settings.LEDGER_TSA_URL, entry.pk, exc
            )
            break  # the TSA is down or refusing: try again on the next call
        LedgerTimestamp.objects.get_or_create(
            entry=entry,
            defaults={"token": token, "tsa_url": settings.LEDGER_TSA_URL, "stamped_at": now},
        )
        stamped += 1
    return {"stamped": stamped, "failed": failed}


def ledger_timestamp_soon(patent_ids: list[int]) -> None:
    """The publish hook: enqueue one timestamp run a minute (when a TSA is configured).
    A dead broker or cache loses nothing: the next publication or `ledger timestamp` runs
    it, and every run stamps all that is due."""
    if not settings.LEDGER_TSA_URL:
        return
    from django.core.cache import cache

    from allthepatents.celery import task_send
    from patents.tasks import ledger_timestamp_task

    try:
        if cache.add("ledger-timestamp-enqueued", 1, timeout=60):
            task_send(ledger_timestamp_task, countdown=5)
    except Exception as exc:
        logger.warning("could not enqueue ledger timestamps: %s", exc)
