"""The FAISS store: the index files named by the manifest, replaced atomically.

Layout in INDEX_DIR: ``manifest.json`` (format version, embedding model, dimension, vector
count, index type, last vector id, file name, size and checksum) and the index file it
names; with an IVF index also a ``delta`` file (exact, small): the vectors added since the
main file was written, so that publishing to a large index writes what it adds, not the
whole index again. Writers take ``.lock``; they write a new file, then replace the manifest
(an atomic rename), then remove the file it no longer names. Readers stat the manifest on
each search and reload when it changed, so web processes pick up a new index without a
restart; a new delta reloads only the delta.
"""

import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from allthepatents.files import file_sha256, file_write_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexUnavailable(RuntimeError):
    """No usable dense index: missing, corrupt, or built for another model or dimension."""

    def __init__(self, state: str, detail: str):
        super().__init__(f"{state}: {detail}")
        self.state = state
        self.detail = detail


@dataclass
class LoadedIndex:
    """The index the manifest names: the main file (mapped, for readers) and, when the main
    one is IVF, the delta file of the vectors added since the main file was written (exact,
    small, read whole). Search both through ``search``; the main file alone is ``index``."""

    index: object  # faiss.Index
    manifest: dict
    stamp: tuple
    delta: object | None = None
    _tables: list | None = None

    @property
    def segments(self) -> list:
        return [s for s in (self.index, self.delta) if s is not None]

    @property
    def ntotal(self) -> int:
        return sum(int(s.ntotal) for s in self.segments)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    def search(self, vectors, k: int, *, allowed=None):
        """(scores, ids) of the best ``k`` over every segment, as one faiss search gives.
        ``allowed``: a bitmap of vector ids (``search.vector_dates``) that the search keeps
        to while it scans."""
        return segments_search(self.segments, vectors, k, allowed=allowed)

    def reconstruct(self, vector_id: int):
        """The stored vector of ``vector_id``; KeyError when the index does not hold it.
        One lookup in each segment's id map (an invention page asks for one vector; the
        sorted tables of ``vectors_of`` would sort every id of the index first)."""
        for segment in reversed(self.segments):  # the delta first: its copy is the newest
            try:
                return segment.reconstruct(int(vector_id))
            except RuntimeError:  # faiss: the id is not in this segment
                continue
        raise KeyError(vector_id)

    def vectors_of(self, wanted):
        """(a mask of the ``wanted`` ids the index holds, their stored vectors in that
        order): zero-copy lookups in sorted views of each segment, for exact scoring of a
        filtered subset (every index kind)."""
        import numpy as np

        wanted = np.asarray(wanted, dtype="int64")
        if self._tables is None:
            tables = []
            for segment in self.segments:
                ids, matrix = stored_vectors(segment)
                order = np.argsort(ids, kind="stable")
                tables.append((ids[order], order, matrix))
            self._tables = tables
        present = np.zeros(len(wanted), dtype=bool)
        rows = np.zeros((len(wanted), self.dimension), dtype="float32")
        # The delta last: a vector re-added there after a merge is its newest copy.
        for sorted_ids, order, matrix in self._tables:
            if not len(sorted_ids):
                continue
            pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
            here = sorted_ids[pos] == wanted
            rows[here] = matrix[order[pos[here]]]
            present |= here
        return present, rows[present]


def segments_search(segments: list, vectors, k: int, *, allowed=None):
    """Searches each segment (``index_search``) and keeps the best ``k`` by score."""
    import numpy as np

    live = [s for s in segments if s.ntotal > 0]
    if len(live) <= 1:
        return index_search(live[0] if live else segments[0], vectors, k, allowed=allowed)
    found = [index_search(s, vectors, min(k, int(s.ntotal)), allowed=allowed) for s in live]
    scores = np.concatenate([f[0] for f in found], axis=1)
    ids = np.concatenate([f[1] for f in found], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, best, axis=1), np.take_along_axis(ids, best, axis=1)


def stored_vectors(index):
    """(ids in row order, the full-precision vector matrix): zero-copy views of what an
    id-mapped index stores, whatever its kind (flat, HNSW's storage, IVF's re-rank copy)."""
    import faiss
    import numpy as np

    base = faiss.downcast_index(index.index)
    flat = faiss.downcast_index(
        getattr(base, "refine_index", None) or getattr(base, "storage", None) or base
    )
    n, d = int(flat.ntotal), int(flat.d)
    matrix = (
        faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
        if n
        else np.zeros((0, d), dtype="float32")
    )
    return faiss.vector_to_array(index.id_map).astype("int64"), matrix


def index_dir() -> Path:
    path = Path(settings.INDEX_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def writer_lock(timeout: float = 600):
    from filelock import FileLock

    return FileLock(str(index_dir() / ".lock"), timeout=timeout)


def file_stamp(path) -> tuple | None:
    """Which version of ``path`` is on disk now, from a stat alone (None: no file): the
    index's small files are replaced by a rename, so the stamp changes with each write
    (a new inode) even within one tick of the file system's clock."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def manifest_stamp() -> tuple | None:
    """Which manifest is on disk now (``file_stamp``): it changes with each index or delta
    written."""
    return file_stamp(index_dir() / MANIFEST)


def manifest_read() -> dict | None:
    path = index_dir() / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexUnavailable("corrupt", f"manifest unreadable: {exc}") from exc


def index_kind_for(count: int) -> str:
    """Exact below SEARCH_IVF_THRESHOLD vectors, IVF with an exact re-rank above."""
    return "ivf" if count >= settings.SEARCH_IVF_THRESHOLD else "flat"


def ivf_lists_for(count: int) -> int:
    """About sqrt(n) / 2 inverted lists, a power of two: 1,024 for the 5.6 million vectors
    that `bench/scale.py` measured (recall@10 0.992 against exact at nprobe 64; at 8.5 M
    vectors 64 gave 0.983 and 96 gives 0.992, `bench/million_recall.py`)."""
    wanted = max(1, math.isqrt(max(count, 1)) // 2)
    return min(65_536, max(64, 1 << (wanted.bit_length() - 1)))


def index_kind(index) -> str:
    import faiss

    base = faiss.downcast_index(index.index)
    if hasattr(base, "refine_index"):
        return "ivf"
    return "hnsw" if hasattr(base, "hnsw") else "flat"


def _owned(outer, inner):
    """``outer`` frees ``inner`` with itself: SWIG would otherwise free ``inner`` when its
    Python name goes, under an index still using it."""
    outer.own_fields = True
    inner.this.disown()
    return outer


# Fewer training vectors than this (a tiny index past a test's threshold) train 8-bit
# scalar codes instead: 4-bit product codes need 16 vectors a centroid, and at that size
# the scan's speed does not matter.
FASTSCAN_MIN_TRAINING = 256


def ivf_codes(index) -> str:
    """How an IVF index's lists hold their vectors: ``pq4fs`` (4-bit fast-scan product
    codes) or ``sq8`` (8-bit scalar codes, the kind built before fast-scan); "" if not IVF."""
    import faiss

    if index_kind(index) != "ivf":
        return ""
    base = faiss.downcast_index(faiss.downcast_index(index.index).base_index)
    return "pq4fs" if isinstance(base, faiss.IndexIVFPQFastScan) else "sq8"


def index_new(dimension: int, *, kind: str = "flat", training=None):
    """An empty id-mapped index. ``ivf``: inverted lists of 4-bit fast-scan product codes
    (two dimensions a code) trained on ``training`` (a sample of the vectors it will hold),
    wrapped in an exact re-rank over a full-precision copy, so the top results are scored
    exactly and a filtered subset can still be ranked exactly (``stored_vectors``).

    Fast-scan against the 8-bit scalar codes it replaced, at 8.5 million vectors on the
    same lists (bench/million_fastscan.py): the same recall at the same lists scanned, a
    list scanned 4-6 times faster, and a quarter of the code bytes (96 a vector); so twice
    the lists are scanned for less time than before (SEARCH_IVF_NPROBE)."""
    import faiss
    import numpy as np

    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if kind != "ivf":
        raise ValueError(f"unknown index kind {kind!r}")
    if training is None or len(training) == 0:
        raise ValueError("an IVF index needs training vectors")
    lists = ivf_lists_for(len(training))
    # 64 vectors a list train the centroids well; more only costs time.
    step = max(1, len(training) // (lists * 64))
    sample = np.ascontiguousarray(training[::step], dtype="float32")
    lists = min(lists, len(sample))
    quantizer = faiss.IndexFlatIP(dimension)
    if len(sample) >= FASTSCAN_MIN_TRAINING:
        codes = dimension // 2 if dimension % 2 == 0 else dimension
        ivf = faiss.IndexIVFPQFastScan(
            quantizer, dimension, lists, codes, 4, faiss.METRIC_INNER_PRODUCT
        )
    else:
        ivf = faiss.IndexIVFScalarQuantizer(
            quantizer, dimension, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    _owned(ivf, quantizer)
    ivf.train(sample)
    refine = _owned(faiss.IndexRefineFlat(ivf), ivf)
    return _owned(faiss.IndexIDMap2(refine), refine)


def index_search(index, vectors, k: int, *, allowed=None):
    """``index.search`` with the IVF settings of this process (SEARCH_IVF_NPROBE lists
    scanned, at least SEARCH_IVF_RERANK candidates re-scored exactly), passed per call so
    that threads sharing the index never see each other's depth. ``allowed``: a bitmap of
    the vector ids to keep to (little-endian bits), tested inside the scan, or an object
    with that bitmap as ``ids`` and ``rows(index)`` giving it in the row order of an IVF
    index (``search.vector_dates.DatesAllowed``)."""
    import faiss

    base = faiss.downcast_index(index.index)
    if not hasattr(base, "refine_index"):
        if allowed is None or hasattr(base, "hnsw"):
            # An ID selector inside HNSW walks the graph through rejected nodes and loses
            # recall where a filter is narrow: an HNSW index is filtered after the search.
            return index.search(vectors, k)
        selector = faiss.IDSelectorBitmap(getattr(allowed, "ids", allowed))
        params = faiss.SearchParameters()
        params.sel = selector  # the id map translates it to row numbers
        return index.search(vectors, k, params=params)
    lists = faiss.SearchParametersIVF()
    lists.nprobe = settings.SEARCH_IVF_NPROBE
    if allowed is not None:
        rows = allowed.rows(index) if hasattr(allowed, "rows") else None
        bitmap = rows if rows is not None else getattr(allowed, "ids", allowed)
        return _ivf_search_selected(
            index,
            base,
            vectors,
            k,
            faiss.IDSelectorBitmap(bitmap),
            lists,
            by_row=rows is not None,
        )
    params = faiss.IndexRefineSearchParameters()
    params.k_factor = max(1.0, settings.SEARCH_IVF_RERANK / max(k, 1))
    params.base_index_params = lists  # a pointer: ``lists`` stays alive until the search ends
    return index.search(vectors, k, params=params)


def _ivf_search_selected(index, refine, vectors, k: int, selector, lists, *, by_row: bool):
    """The IVF search with a selector: faiss's re-rank wrapper does not pass a selector on to
    the lists it wraps, so the lists are searched here (by row number: the selector is by
    row already, ``by_row``, or is translated through the id map) and their candidates
    re-scored exactly from the stored full-precision copy, as the wrapper would."""
    import faiss
    import numpy as np

    ivf = faiss.downcast_index(refine.base_index)
    translated = selector if by_row else faiss.IDSelectorTranslated(index.id_map, selector)
    lists.sel = translated  # ``translated`` and ``selector`` live until the search ends
    depth = int(min(ivf.ntotal, max(k, settings.SEARCH_IVF_RERANK)))
    _, rows = ivf.search(vectors, depth, params=lists)
    flat = faiss.downcast_index(refine.refine_index)
    n, d = int(flat.ntotal), int(flat.d)
    matrix = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    id_of = faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size())
    scores = np.full((len(vectors), k), -np.finfo("float32").max, dtype="float32")
    ids = np.full((len(vectors), k), -1, dtype="int64")
    for q, found in enumerate(rows):
        found = found[found >= 0]
        if not len(found):
            continue
        exact = matrix[found] @ np.asarray(vectors[q], dtype="float32")
        best = np.argsort(-exact, kind="stable")[:k]
        scores[q, : len(best)] = exact[best]
        ids[q, : len(best)] = id_of[found[best]]
    return scores, ids


def _file_name(prefix: str) -> tuple[str, Path]:
    """A fresh file name in the index folder, and the temporary path it is written at."""
    name = f"{prefix}-{int(time.time())}-{uuid.uuid4().hex[:8]}.faiss"
    return name, index_dir() / f".{name}.tmp"


def _file_write(index, prefix: str) -> tuple[str, dict]:
    import faiss

    name, tmp = _file_name(prefix)
    faiss.write_index(index, str(tmp))
    os.replace(tmp, index_dir() / name)
    return name, _file_entry(name, file_sha256(index_dir() / name))


def _file_entry(name: str, sha256: str) -> dict:
    return {"file": name, "file_size": (index_dir() / name).stat().st_size, "file_sha256": sha256}


def _unlink_replaced(before: dict, after: dict) -> None:
    """Removes the files ``before`` named that ``after`` no longer names (after the new
    manifest is in place: a reader holding the old names keeps its mapped pages)."""
    keep = {after.get("file"), (after.get("delta") or {}).get("file")}
    for name in (before.get("file"), (before.get("delta") or {}).get("file")):
        if name and name not in keep:
            try:
                (index_dir() / name).unlink()
            except FileNotFoundError:
                pass


def index_save(index, *, manifest: dict) -> dict:
    """Writes the main index under a fresh name, then points the manifest at it (with no
    delta: whatever a delta held is in ``index``)."""
    _, written = _file_write(index, "vectors")
    return _main_manifest_write(written, manifest=manifest, count=int(index.ntotal))


def _main_manifest_write(written: dict, *, manifest: dict, count: int) -> dict:
    """Points the manifest at a new main file (``written``: its entry) with no delta, and
    removes the files the old manifest named."""
    old = manifest_safe() or {}
    manifest = {
        **{k: v for k, v in manifest.items() if k != "delta"},
        "format_version": FORMAT_VERSION,
        **written,
        "count": count,
        "saved_at": time.time(),
    }
    file_write_atomic(index_dir() / MANIFEST, json.dumps(manifest, indent=2).encode())
    _unlink_replaced(old, manifest)
    return manifest


def delta_save(delta, *, manifest: dict) -> dict:
    """Writes the delta (the vectors added since the main file) under a fresh name and
    points the manifest at it, keeping the main file: publishing to a large index writes
    what it adds, not the whole index again. ``manifest``: the fields the caller sets
    (``last_vector_id``, ``documents_through``, ...) over the current manifest's."""
    current = manifest_read()
    if not current or not current.get("file"):
        raise IndexUnavailable("missing", "a delta needs a main index to go with")
    _, written = _file_write(delta, "delta")
    main_count = int(current["count"]) - int((current.get("delta") or {}).get("count", 0))
    saved = {
        **current,
        **{k: v for k, v in manifest.items() if k not in ("file", "file_size", "file_sha256")},
        "delta": {**written, "count": int(delta.ntotal)},
        "count": main_count + int(delta.ntotal),
        "saved_at": time.time(),
    }
    file_write_atomic(index_dir() / MANIFEST, json.dumps(saved, indent=2).encode())
    _unlink_replaced(current, saved)
    return saved


MERGE_CHUNK = 100_000


def index_merge_streamed(delta, *, manifest: dict) -> dict | None:
    """Merges ``delta`` into the main IVF file without holding the main file's
    full-precision copy in memory, then points the manifest at the new file (as
    ``index_save``). Returns the manifest, or None when the main index is not an IVF with a
    re-rank copy (the caller merges in memory).

    Read whole, a million-patent main file (16.5 GB, 13 GB of it the re-rank rows) and
    its growth needed about twice its size: more than a 24 GB machine has, so the delta
    grew without end. Here the main file is mapped; the delta's vectors are added to the
    inverted lists in memory (the fast-scan codes, 0.8 GB at 8.5 million vectors) and to a
    stand-in for the re-rank copy that holds the delta's rows alone; FAISS serialises that,
    and the new file is written as those bytes with the main file's re-rank rows streamed
    in, from the mapping, ahead of the delta's: the bytes FAISS would write for the merged
    index (a test compares them): 3.8 GB of memory at a million patents, not 28."""
    import hashlib
    import struct

    import faiss
    import numpy as np

    current = manifest_read() or {}
    path, _ = _checked_file(current, "index")
    _checksum_check(current, path, "index")
    main = _read(path, "index", faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    refine = faiss.downcast_index(main.index)
    if not isinstance(main, faiss.IndexIDMap2) or not isinstance(refine, faiss.IndexRefine):
        return None
    flat = faiss.downcast_index(refine.refine_index)
    if not isinstance(flat, faiss.IndexFlat) or flat.code_size != 4 * flat.d:
        return None
    ids, matrix = stored_vectors(delta)
    matrix = np.ascontiguousarray(matrix, dtype="float32")
    old, added, d = int(flat.ntotal), len(ids), int(flat.d)
    stand_in = faiss.IndexFlat(d, flat.metric_type)
    refine.own_refine_index = False
    refine.refine_index = stand_in
    try:
        for start in range(0, added, MERGE_CHUNK):
            main.add_with_ids(matrix[start : start + MERGE_CHUNK], ids[start : start + MERGE_CHUNK])
        total = old + added
        # The adds counted the stand-in's rows alone; the file's headers count them all.
        stand_in.ntotal = refine.ntotal = main.ntotal = total
        blob = faiss.serialize_index(main)
    finally:
        refine.refine_index = flat
        refine.own_refine_index = True
    # From the end: the re-rank rows, the refine's k_factor (4 bytes), the id map's length
    # (8) and ids (8 each); before the rows, their length in 4-byte words (8).
    rows_end = len(blob) - 4 - 8 - 8 * total
    rows_start = rows_end - 4 * d * added
    (words,) = struct.unpack("<Q", blob[rows_start - 8 : rows_start].tobytes())
    if words != d * added or not np.array_equal(
        blob[rows_start:rows_end].view("float32"), matrix.ravel()
    ):
        raise IndexUnavailable("corrupt", "the merged index's layout is not the one expected")
    name, tmp = _file_name("vectors")
    digest = hashlib.sha256()
    mapped = faiss.rev_swig_ptr(flat.get_xb(), old * d).reshape(old, d) if old else None
    with open(tmp, "wb") as fh:

        def write(data) -> None:
            view = memoryview(np.ascontiguousarray(data)).cast("B")
            digest.update(view)
            fh.write(view)

        write(blob[: rows_start - 8])
        write(np.frombuffer(struct.pack("<Q", d * total), dtype="uint8"))
        step = max(1, (64 << 20) // (4 * d))
        for start in range(0, old, step):
            write(mapped[start : start + step])
        write(blob[rows_start:])
        fh.flush()
        os.fsync(fh.fileno())
    del mapped, flat, refine, main, blob
    os.replace(tmp, index_dir() / name)
    return _main_manifest_write(
        _file_entry(name, digest.hexdigest()), manifest=manifest, count=total
    )


def manifest_safe() -> dict | None:
    try:
        return manifest_read()
    except IndexUnavailable:
        return None


def _checked_file(entry: dict, what: str):
    """The path and stat of a file the manifest names, its size and checksum checked."""
    path = index_dir() / str(entry.get("file", ""))
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise IndexUnavailable("missing", f"{what} file {path.name} is gone") from None
    if stat.st_size != entry.get("file_size"):
        raise IndexUnavailable(
            "corrupt",
            f"{what} file is {stat.st_size} bytes, manifest says {entry.get('file_size')}",
        )
    return path, stat


# Files this process has read whole and found to match their checksum, by (path, inode,
# mtime, size, checksum): a worker publishing to a million-patent index would otherwise read
# its 16.5 GB main file again on every update (47.6 s for one invention). A write in place
# moves the mtime, so it is read again; bytes that rot without a write are caught by the
# next process that loads the file (every web and worker process checks once).
_verified: set = set()
_verified_lock = threading.Lock()
# File systems stamp mtimes from a coarse clock: a file changed within the same tick as its
# check could keep the stamp. Only files older than this are remembered.
VERIFIED_SETTLE_S = 2.0


def _verified_key(path: Path, expected: str):
    stat = path.stat()
    if time.time() - stat.st_mtime < VERIFIED_SETTLE_S:
        return None
    return (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size, expected)


def _checksum_check(entry: dict, path: Path, what: str) -> None:
    # Bytes changed in place (a bad disk, a stray write) keep the size and may still parse:
    # only the checksum tells. Indexes saved before checksums were kept have none.
    expected = entry.get("file_sha256")
    if not expected:
        return
    key = _verified_key(path, expected)
    if key is not None and key in _verified:
        return
    if file_sha256(path) != expected:
        raise IndexUnavailable(
            "corrupt", f"{what} file {path.name} does not match its checksum: rebuild it"
        )
    if key is not None:
        with _verified_lock:
            _verified.add(key)


def _read(path: Path, what: str, flags: int = 0):
    import faiss

    try:
        return faiss.read_index(str(path), flags)
    except Exception as exc:  # faiss raises RuntimeError with C++ messages
        raise IndexUnavailable("corrupt", f"cannot read {what} file: {exc}") from exc


def index_load_checked(
    *, model: str, dimension: int | None = None, mmap: bool = False, reuse=None
) -> LoadedIndex:
    """Loads the index the manifest names, checking everything the manifest promises.
    ``mmap`` (readers, SEARCH_INDEX_MMAP): the vectors stay in the file, mapped read-only,
    so every process of the machine shares one copy in the page cache instead of holding
    its own (1.5 KB a vector each). Writers read it whole: they add to it. ``reuse``: a
    LoadedIndex whose main file is still the one the manifest names (a reader whose delta
    changed): its main index is kept, not read and checksummed again."""
    import faiss

    manifest = manifest_read()
    if manifest is None:
        raise IndexUnavailable("missing", "no index has been built (search_index rebuild)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexUnavailable("mismatch", f"format version {manifest.get('format_version')}")
    if manifest.get("embedding_model") != model:
        raise IndexUnavailable(
            "mismatch", f"built with {manifest.get('embedding_model')!r}, site uses {model!r}"
        )
    if dimension is not None and manifest.get("dimension") != dimension:
        raise IndexUnavailable(
            "mismatch", f"dimension {manifest.get('dimension')} != model's {dimension}"
        )
    path, stat = _checked_file(manifest, "index")
    main_stamp = (manifest.get("file"), stat.st_mtime_ns, stat.st_size)
    if reuse is not None and reuse.stamp[:1] == (main_stamp,):
        index = reuse.index
    else:
        _checksum_check(manifest, path, "index")
        index = _read(
            path, "index", faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        )
    delta, delta_stamp = None, None
    if manifest.get("delta"):
        delta_path, delta_stat = _checked_file(manifest["delta"], "delta")
        _checksum_check(manifest["delta"], delta_path, "delta")
        delta = _read(delta_path, "delta")
        delta_stamp = (manifest["delta"]["file"], delta_stat.st_mtime_ns, delta_stat.st_size)
        if delta.d != index.d or delta.ntotal != manifest["delta"].get("count"):
            raise IndexUnavailable("corrupt", "delta file does not match its manifest")
    count = int(index.ntotal) + (int(delta.ntotal) if delta is not None else 0)
    if index.d != manifest.get("dimension") or count != manifest.get("count"):
        raise IndexUnavailable("corrupt", "index file does not match its manifest")
    # One thread, like torch: a second OpenMP thread measured slower (8.2 ms vs 6.5 ms for
    # a flat search of 62k vectors) and steals the core of the next process.
    faiss.omp_set_num_threads(settings.TORCH_THREADS)
    hnsw = getattr(faiss.downcast_index(getattr(index, "index", index)), "hnsw", None)
    if hnsw is not None:
        # An HNSW index from before IVF replaced it searches as it did until the next
        # update retypes it.
        hnsw.efSearch = 384
    if not hasattr(index, "id_map") or (delta is not None and not hasattr(delta, "id_map")):
        raise IndexUnavailable("corrupt", "index file is not an id-mapped index")
    return LoadedIndex(index=index, manifest=manifest, stamp=(main_stamp, delta_stamp), delta=delta)


def index_main_read(*, dimension: int):
    """The main index file read whole and checked (a writer merging its delta into it)."""
    manifest = manifest_read() or {}
    path, _ = _checked_file(manifest, "index")
    _checksum_check(manifest, path, "index")
    index = _read(path, "index")
    if index.d != dimension:
        raise IndexUnavailable("mismatch", f"dimension {index.d} != model's {dimension}")
    return index


# --- the reader's cache (one per process) --------------------------------------------------

_reader_lock = threading.Lock()
_reader: dict = {"loaded": None, "manifest_stamp": None}


def _stamp_now(manifest: dict) -> tuple:
    stamps = []
    for entry in (manifest, manifest.get("delta")):
        if not entry:
            stamps.append(None)
            continue
        st = (index_dir() / entry["file"]).stat()
        stamps.append((entry["file"], st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def index_for_search(*, model: str) -> LoadedIndex:
    """The current index, reloaded when the manifest on disk changed (the main file only
    when it is another one: a new delta reloads the delta)."""
    stamp = manifest_stamp()
    with _reader_lock:
        cached = _reader["loaded"]
        if stamp is not None and stamp == _reader["manifest_stamp"] and cached is not None:
            # Cheap check that the files we hold are still the ones on disk.
            try:
                if _stamp_now(cached.manifest) == cached.stamp:
                    return cached
            except FileNotFoundError:
                pass
        _reader["loaded"] = None
        _reader["manifest_stamp"] = stamp
        loaded = index_load_checked(model=model, mmap=settings.SEARCH_INDEX_MMAP, reuse=cached)
        _reader["loaded"] = loaded
        return loaded


def reader_reset() -> None:
    with _reader_lock:
        _reader.update(loaded=None, manifest_stamp=None)
