"""The dates of every indexed vector's patent, by vector id, so that a date filter is
applied inside the FAISS search instead of after it.

A date filter that keeps a tenth of a million patents used to search the index ten times
deeper than asked, then check each candidate's patent in the database: 353 ms at the 95th
percentile (`bench/million.py api`). With this table the filter becomes a bitmap of vector
ids that FAISS tests while it scans, so the search asks for what it would without a filter.

The table (``vector-dates-*.npy`` in INDEX_DIR, named by ``vector-dates.json``): three int32
rows indexed by vector id: the publication day (a generated invention's publication, a
reference patent's own date, as ``patents_matching`` compares them), the filing day, and
the origin. It is a pre-filter only: the database remains the judge of every candidate
(status, CPC, generator), so a vector the table does not know yet (published since it was
written) is let through, never dropped. A vector's patent never changes, and neither do
the dates the importer gives a patent, so the table grows by the rows added since it was
written; a rebuild writes it whole.

Beside it, the same three rows indexed by patent id (``patents_file`` in the json), for the
candidates of both engines: with a filter of dates and origin alone, a candidate whose
patent the table knows is decided here instead of fetching its row (a tenth of a million
patents kept by a date filter cost 79 ms a query in ``patents_passing``). Withdrawn patents
leave the vector map and the keyword rows, so a candidate of either engine is published.
"""

import datetime as dt
import json
import logging
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

META = "vector-dates.json"
MISSING = -(2**31)  # no date: fails every bound
ORIGIN_CODES = {"generated": 1, "reference": 2}
EPOCH = dt.date(1970, 1, 1)
CHUNK = 200_000


def _folder() -> Path:
    path = Path(settings.INDEX_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def _meta_read() -> dict | None:
    try:
        return json.loads((_folder() / META).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("vector dates: %s unreadable; date filters run after the search", META)
        return None


def _rows(after_id: int):
    """(vector id, publication day, filing day, origin code, patent id) of every vector
    row past ``after_id``, by id, in chunks (a million patents have 8.5 million rows)."""
    from search.models import IndexedVector

    last = after_id
    while True:
        chunk = list(
            IndexedVector.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list(
                "pk",
                "patent__origin",
                "patent__source_date",
                "patent__published_at",
                "patent__filing_date",
                "patent_id",
            )[:CHUNK]
        )
        if not chunk:
            return
        out = []
        for pk, origin, source_date, published_at, filing_date, patent_id in chunk:
            if origin == "reference":
                published = day_number(source_date) if source_date else MISSING
            else:
                published = (
                    day_number(published_at.astimezone(dt.UTC).date()) if published_at else MISSING
                )
            filed = day_number(filing_date) if filing_date else MISSING
            out.append((pk, published, filed, ORIGIN_CODES.get(origin, 0), patent_id))
        yield out
        last = chunk[-1][0]


def _table_empty(size: int):
    import numpy as np

    table = np.full((3, size), MISSING, dtype="int32")
    table[2] = 0  # origin 0: not known
    return table


def _table_put(table, ids, values):
    """``table`` with ``values`` (rows of three) at columns ``ids``, grown when they reach
    past its end."""
    top = int(ids.max())
    size = 0 if table is None else table.shape[1]
    if top >= size:
        grown = _table_empty(max(top + 1, int(size * 1.25)))
        if table is not None:
            grown[:, :size] = table
        table = grown
    table[:, ids] = values.T.astype("int32")
    return table


def _npy_write(folder: Path, prefix: str, table) -> str:
    import numpy as np

    name = f"{prefix}-{int(time.time())}-{uuid.uuid4().hex[:8]}.npy"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, table)
    tmp.replace(folder / name)
    return name


def vector_dates_refresh(*, full: bool = False) -> dict:
    """Brings the tables up to the last vector row: the rows added since they were written,
    or every row (``full``: a rebuilt index, or no table yet). The caller holds the index's
    writer lock."""
    import numpy as np

    folder = _folder()
    meta = None if full else _meta_read()
    table = patents = None
    through = 0
    if meta:
        try:
            table = np.load(folder / meta["file"])
            through = int(meta["through"])
            if table.shape != (3, int(meta["size"])):
                raise ValueError(f"shape {table.shape}")
            if meta.get("patents_file"):
                patents = np.load(folder / meta["patents_file"])
                if patents.shape != (3, int(meta["patents_size"])):
                    raise ValueError(f"shape {patents.shape}")
            else:
                # Written before the table by patent existed: written again whole.
                table, through = None, 0
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("vector dates unreadable (%s): written again whole", exc)
            table, patents, through = None, None, 0
    added = 0
    for chunk in _rows(through):
        values = np.asarray(chunk, dtype="int64")
        table = _table_put(table, values[:, 0], values[:, 1:4])
        patents = _table_put(patents, values[:, 4], values[:, 1:4])
        through = int(values[-1, 0])
        added += len(chunk)
    if table is None:
        table = _table_empty(1)
    if patents is None:
        patents = _table_empty(1)
    if meta and not added and not full and meta.get("patents_file"):
        return meta
    name = _npy_write(folder, "vector-dates", table)
    patents_name = _npy_write(folder, "patent-dates", patents)
    new_meta = {
        "file": name,
        "through": through,
        "size": int(table.shape[1]),
        "patents_file": patents_name,
        "patents_size": int(patents.shape[1]),
    }
    meta_tmp = folder / f".{META}.{uuid.uuid4().hex}.tmp"
    meta_tmp.write_text(json.dumps(new_meta))
    meta_tmp.replace(folder / META)
    # Readers that mapped the old files keep their pages until they move to the new ones.
    for stale in [*folder.glob("vector-dates-*.npy"), *folder.glob("patent-dates-*.npy")]:
        if stale.name not in (name, patents_name):
            stale.unlink(missing_ok=True)
    return new_meta


# --- readers ------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: dict = {
    "seen": None,
    "stamp": None,
    "table": None,
    "through": 0,
    "bitmaps": {},
    "patents": None,
    "row_bitmaps": {},
    "counts": {},
}
BITMAPS_KEPT = 16


def _tables():
    """(the table by vector id mapped read-only, the last vector id it covers, the table by
    patent id or None), or (None, 0, None). A query asks several times: the json is read
    again only when a stat says it was replaced."""
    import numpy as np

    from search.store import file_stamp

    seen = file_stamp(Path(settings.INDEX_DIR) / META)
    with _cache_lock:
        if seen is not None and _cache["seen"] == seen:
            return _cache["table"], _cache["through"], _cache["patents"]
    meta = _meta_read()
    if not meta:
        return None, 0, None
    stamp = (meta.get("file"), meta.get("through"), meta.get("size"), meta.get("patents_file"))
    with _cache_lock:
        if _cache["stamp"] == stamp:
            _cache["seen"] = seen
            return _cache["table"], _cache["through"], _cache["patents"]
        table, through, patents = None, 0, None
        try:
            table = np.load(_folder() / meta["file"], mmap_mode="r")
            through = int(meta["through"])
            if table.shape != (3, int(meta["size"])):
                raise ValueError(f"shape {table.shape}")
            if meta.get("patents_file"):
                patents = np.load(_folder() / meta["patents_file"], mmap_mode="r")
                if patents.shape != (3, int(meta["patents_size"])):
                    raise ValueError(f"shape {patents.shape}")
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("vector dates unusable (%s): date filters run after search", exc)
            table, through, patents = None, 0, None
        _cache.update(
            seen=seen,
            stamp=stamp,
            table=table,
            through=through,
            patents=patents,
            bitmaps={},
            row_bitmaps={},
            counts={},
        )
        return table, through, patents


def _table():
    table, through, _ = _tables()
    return table, through


def has_date_bounds(filters) -> bool:
    return any((filters.before, filters.after, filters.filed_before, filters.filed_after))


def vector_dates_allowed(filters, *, last_id: int):
    """A bitmap (little-endian bits, by vector id, up to ``last_id``) of the vectors whose
    patents may pass ``filters``' dates and origin, for ``faiss.IDSelectorBitmap``; None
    when there is no table. Ids past the table's end are let through."""
    table, through = _table()
    if table is None:
        return None
    return _bitmap(filters, table, through, last_id)[0]


def vector_dates_share(filters) -> float | None:
    """The share of the table's vectors whose patents pass ``filters``' dates and origin
    (None without a table): what a filter of those alone keeps, without counting patents
    in SQL."""
    table, through = _table()
    if table is None or not (has_date_bounds(filters) or filters.origin in ORIGIN_CODES):
        return None
    known = sum(_origin_count(table, through, code) for code in ORIGIN_CODES.values())
    return _kept_count(filters, table, through) / max(known, 1)


def patent_dates_passing(filters, patent_ids) -> tuple[set[int], list[int]] | None:
    """(the ids whose patents pass ``filters``, the ids the table by patent does not know),
    for candidates of the search indexes (so published); None when the table cannot decide
    (none written, or the filter narrows by more than dates and origin: the caller checks
    the database). A patent's dates never change once imported or published, so a known
    patent's row is final."""
    import numpy as np

    if filters.generator or filters.mode or filters.cpc:
        return None
    _, _, patents = _tables()
    if patents is None:
        return None
    ids = np.fromiter((int(i) for i in patent_ids), dtype="int64")
    inside = (ids >= 0) & (ids < patents.shape[1])
    rows = np.asarray(patents[:, ids[inside]])
    published, filed, origin = rows[0], rows[1], rows[2]
    keep = origin != 0
    known_ids = ids[inside][keep]
    _keep_narrow(filters, keep, published, filed, origin)
    known = set(known_ids.tolist())
    unknown = [int(i) for i in ids.tolist() if i not in known]
    return set(ids[inside][keep].tolist()), unknown


def _bitmap(filters, table, through: int, last_id: int):
    """(the bitmap up to ``last_id``, how many of the table's vectors it keeps), cached per
    filter: a query's own date makes each filter new, but its pages ask again."""
    import numpy as np

    key = (*_filter_key(filters), last_id)
    with _cache_lock:
        cached = _cache["bitmaps"].get(key)
    if cached is not None:
        return cached
    known = min(through + 1, table.shape[1], last_id + 1)
    keep = np.ones(max(last_id + 1, 1), dtype=bool)
    part = keep[:known]
    _keep_narrow(filters, part, table[0, :known], table[1, :known], table[2, :known])
    value = (np.packbits(keep, bitorder="little"), int(np.count_nonzero(part)))
    _bitmap_keep("bitmaps", key, value)
    return value


def _bitmap_keep(kind: str, key, value) -> None:
    """Caches a bitmap, the oldest of ``kind`` going when BITMAPS_KEPT are held."""
    with _cache_lock:
        bitmaps = _cache[kind]
        if len(bitmaps) >= BITMAPS_KEPT:
            bitmaps.pop(next(iter(bitmaps)))
        bitmaps[key] = value


def _kept_count(filters, table, through: int) -> int:
    """How many of the table's vectors pass ``filters``' dates and origin, without a bitmap
    (a query's share is asked before its search, which makes the bitmap it needs in the
    index's row order): where the filter bounds one date column, a difference of two
    cumulative counts by day per origin (``_day_counts``); else the bitmap's count."""
    one = _one_column(filters)
    if one is not None:
        column, low, high = one
        codes = [ORIGIN_CODES[filters.origin]] if filters.origin in ORIGIN_CODES else [1, 2]
        total = 0
        for code in codes:
            if column is None:
                total += _origin_count(table, through, code)
            else:
                total += _between(*_day_counts(table, through, column, code), low, high)
        return total
    return _bitmap(filters, table, through, through)[1]


def _one_column(filters):
    """(column, lowest day kept, first day past) when the filter bounds one date column
    (0: publication, 1: filing; a bound left open is None), (None, None, None) when it
    bounds none, None when it bounds both."""
    published = (filters.after, filters.before)
    filed = (filters.filed_after, filters.filed_before)
    if any(published) and any(filed):
        return None
    bounds, column = (published, 0) if any(published) else (filed, 1)
    if not any(bounds):
        return None, None, None
    low, high = (day_number(d) if d else None for d in bounds)
    return column, low, high


def _day_counts(table, through: int, column: int, code: int):
    """(the first day, the cumulative count of the table's vectors of origin ``code`` by
    day of ``column``, undated ones left out), cached until the table changes: one pass
    over the column (8.5 million days: tens of ms) where a bitmap a query cost 13 ms."""
    import numpy as np

    key = ("days", column, code)
    with _cache_lock:
        cached = _cache["counts"].get(key)
    if cached is not None:
        return cached
    known = min(through + 1, table.shape[1])
    days = np.asarray(table[column, :known])
    days = days[(np.asarray(table[2, :known]) == code) & (days != MISSING)]
    start = int(days.min()) if len(days) else 0
    counts = np.bincount(days - start) if len(days) else np.zeros(1, dtype="int64")
    value = (start, np.concatenate([[0], np.cumsum(counts)]))
    with _cache_lock:
        _cache["counts"][key] = value
    return value


def _origin_count(table, through: int, code: int) -> int:
    import numpy as np

    key = ("origin", code)
    with _cache_lock:
        cached = _cache["counts"].get(key)
    if cached is None:
        known = min(through + 1, table.shape[1])
        cached = int(np.count_nonzero(np.asarray(table[2, :known]) == code))
        with _cache_lock:
            _cache["counts"][key] = cached
    return cached


def _between(start: int, cumulative, low, high) -> int:
    """How many of the counted days are in [low, high) (None: open)."""

    def below(day):  # days counted before ``day``
        return int(cumulative[min(max(day - start, 0), len(cumulative) - 1)])

    upper = int(cumulative[-1]) if high is None else below(high)
    lower = 0 if low is None else below(low)
    return max(0, upper - lower)


def _keep_narrow(filters, keep, published, filed, origin) -> None:
    """Clears in ``keep`` the rows whose dates or origin fail ``filters``."""
    if filters.before:
        keep &= published < day_number(filters.before)
    if filters.after:
        keep &= published >= day_number(filters.after)
    if filters.before or filters.after:
        keep &= published != MISSING
    if filters.filed_before:
        keep &= (filed < day_number(filters.filed_before)) & (filed != MISSING)
    if filters.filed_after:
        keep &= filed >= day_number(filters.filed_after)
    if filters.origin in ORIGIN_CODES:
        keep &= origin == ORIGIN_CODES[filters.origin]


def _filter_key(filters) -> tuple:
    return (
        filters.before,
        filters.after,
        filters.filed_before,
        filters.filed_after,
        filters.origin,
    )


class DatesAllowed:
    """What a filter's dates and origin keep, for ``search.store.index_search``: ``ids``,
    the bitmap by vector id; ``rows(segment)``, the same in the row order of an IVF
    segment, so that its scan tests a row's bit directly. Through ``ids`` each scanned row
    was first translated to its vector id by the segment's id map: 36 of the 47 ms FAISS
    took a filtered query at a million patents (`bench/million_fastscan.py`)."""

    def __init__(self, filters, *, last_id: int):
        self.filters = filters
        self.last_id = last_id
        self._ids = None

    @property
    def ids(self):
        """The bitmap by vector id, made when a segment asks for it (an exact segment, or
        an IVF one without the table by row)."""
        if self._ids is None:
            self._ids = vector_dates_allowed(self.filters, last_id=self.last_id)
        return self._ids

    def rows(self, segment):
        """The packed bitmap by row of ``segment`` (an ``IndexIDMap`` over IVF lists), or
        None (no table). Rows whose vector the table does not know are let through, as
        ids past its end are."""
        import numpy as np

        table, through, _ = _tables()
        if table is None:
            return None
        key = (*_filter_key(self.filters), id(segment), _cache["stamp"])
        with _cache_lock:
            cached = _cache["row_bitmaps"].get(key)
        if cached is not None:
            return cached
        keep = _rows_order(segment, table, through).keep(self.filters)
        value = np.packbits(keep, bitorder="little")
        _bitmap_keep("row_bitmaps", key, value)
        return value


class _RowOrder:
    """A segment's dates table in its row order (row r: the vector ``id_map[r]``; origin
    0 where the table does not know the vector), and per date column the rows sorted by
    day, so that a bound on one column is a slice of them: a filter's bitmap is a scatter
    of the rows it keeps instead of comparisons over every row (32 ms a query at a million
    patents)."""

    def __init__(self, rows):
        self.rows = rows
        self._sorted: dict = {}
        self._origins: dict = {}
        unknown = rows[2] == 0
        self.unknown = unknown if unknown.any() else None

    def _column(self, column: int):
        import numpy as np

        if column not in self._sorted:
            order = np.argsort(self.rows[column], kind="stable").astype("int32")
            self._sorted[column] = (order, self.rows[column][order])
        return self._sorted[column]

    def _origin(self, code: int):
        if code not in self._origins:
            self._origins[code] = self.rows[2] == code
        return self._origins[code]

    def keep(self, filters):
        import numpy as np

        size = self.rows.shape[1]
        one = _one_column(filters)
        if one is None:
            keep = np.ones(size, dtype=bool)
            _keep_narrow(filters, keep, self.rows[0], self.rows[1], self.rows[2])
        else:
            column, low, high = one
            if column is None:
                keep = np.ones(size, dtype=bool)
            else:
                order, days = self._column(column)
                # Undated rows (MISSING, the smallest value) never pass a bound. The day is
                # searched as int32: a Python int made numpy copy the column to int64 first.
                low = MISSING + 1 if low is None else low
                first = int(np.searchsorted(days, np.int32(low), "left"))
                last = len(days) if high is None else int(np.searchsorted(days, np.int32(high)))
                keep = np.zeros(size, dtype=bool)
                keep[order[first : max(first, last)]] = True
            if filters.origin in ORIGIN_CODES:
                keep &= self._origin(ORIGIN_CODES[filters.origin])
        if self.unknown is not None:
            keep |= self.unknown
        return keep


def _rows_order(segment, table, through: int) -> _RowOrder:
    """The segment's ``_RowOrder``, made once per segment in this process (12 bytes a row
    and 8 per sorted column: 102 MB and 68 MB each at a million patents). A table that
    grew is read again only when it did not know some of the segment's vectors: the dates
    of a vector never change."""
    import faiss
    import numpy as np

    with _cache_lock:
        held = _row_orders.get(id(segment))
    if held is not None and held[0] is segment and (held[1].unknown is None or held[2] == through):
        return held[1]
    ids = faiss.rev_swig_ptr(segment.id_map.data(), segment.id_map.size())
    ids = np.asarray(ids, dtype="int64")
    known = (ids >= 0) & (ids <= min(through, table.shape[1] - 1))
    if known.all():
        rows = np.ascontiguousarray(table[:, ids])
    else:
        rows = _table_empty(len(ids))
        rows[:, known] = table[:, ids[known]]
    order = _RowOrder(rows)
    with _cache_lock:
        # Keeping the segment keeps its id from being reused by another while it is held.
        _row_orders.clear()
        _row_orders[id(segment)] = (segment, order, through)
    return order


# Kept across table changes (see ``_rows_order``); one segment, the IVF main file.
_row_orders: dict = {}


def vector_dates_warm(segments) -> bool:
    """Makes the row order of each IVF segment and its publication days sorted, so that a
    process's first date-filtered query does not pay for them (1.5 s at a million
    patents). Returns whether there was a table to do it with."""
    import faiss

    table, through, _ = _tables()
    if table is None:
        return False
    for segment in segments:
        if hasattr(faiss.downcast_index(segment.index), "refine_index"):
            _rows_order(segment, table, through)._column(0)
    return True


def vector_dates_selection(filters, *, last_id: int) -> DatesAllowed | None:
    """``vector_dates_allowed`` as a ``DatesAllowed``: the bitmap by vector id, and by row
    for the IVF segments that ask. None when there is no table."""
    table, _ = _table()
    return None if table is None else DatesAllowed(filters, last_id=last_id)


def vector_dates_reset() -> None:
    with _cache_lock:
        _cache.update(
            seen=None,
            stamp=None,
            table=None,
            through=0,
            patents=None,
            bitmaps={},
            row_bitmaps={},
            counts={},
        )
        _row_orders.clear()
