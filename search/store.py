"""The FAISS store: one index file named by the manifest, replaced atomically.

Layout in INDEX_DIR: ``manifest.json`` (format version, embedding model, dimension, vector
count, index type, last vector id, file name and size) and the index file it names.
Writers take ``.lock``; they write a new index file, then replace the manifest (an atomic
rename), then remove the old file. Readers stat the manifest on each search and reload
when it changed, so web processes pick up a new index without a restart.
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

from allthepatents.files import file_sha256

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
    index: object  # faiss.Index
    manifest: dict
    stamp: tuple
    _vectors: tuple | None = None

    def vectors(self):
        """(ids sorted, row of each sorted id, the vector matrix): a zero-copy view of the
        stored vectors, for exact scoring of a filtered subset (every index kind)."""
        if self._vectors is None:
            import numpy as np

            ids, matrix = stored_vectors(self.index)
            order = np.argsort(ids, kind="stable")
            self._vectors = (ids[order], order, matrix)
        return self._vectors


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


def manifest_read() -> dict | None:
    path = index_dir() / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexUnavailable("corrupt", f"manifest unreadable: {exc}") from exc


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def index_kind_for(count: int) -> str:
    """Exact below SEARCH_IVF_THRESHOLD vectors, IVF with an exact re-rank above."""
    return "ivf" if count >= settings.SEARCH_IVF_THRESHOLD else "flat"


def ivf_lists_for(count: int) -> int:
    """About sqrt(n) / 2 inverted lists, a power of two: 1,024 for the 5.6 million vectors
    that `bench/scale.py` measured (recall@10 0.992 against exact at nprobe 64)."""
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


def index_new(dimension: int, *, kind: str = "flat", training=None):
    """An empty id-mapped index. ``ivf``: 8-bit scalar-quantised inverted lists trained on
    ``training`` (a sample of the vectors it will hold), wrapped in an exact re-rank over a
    full-precision copy, so the top results are scored exactly and a filtered subset can
    still be ranked exactly (``stored_vectors``)."""
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
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, dimension, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    _owned(ivf, quantizer)
    ivf.train(sample)
    refine = _owned(faiss.IndexRefineFlat(ivf), ivf)
    return _owned(faiss.IndexIDMap2(refine), refine)


def index_search(index, vectors, k: int):
    """``index.search`` with the IVF settings of this process (SEARCH_IVF_NPROBE lists
    scanned, at least SEARCH_IVF_RERANK candidates re-scored exactly), passed per call so
    that threads sharing the index never see each other's depth."""
    import faiss
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype="float32")
    if index_kind(index) != "ivf":
        return index.search(vectors, k)
    lists = faiss.SearchParametersIVF()
    lists.nprobe = settings.SEARCH_IVF_NPROBE
    params = faiss.IndexRefineSearchParameters()
    params.k_factor = max(1.0, settings.SEARCH_IVF_RERANK / max(k, 1))
    params.base_index_params = lists  # a pointer: ``lists`` stays alive until the search ends
    return index.search(vectors, k, params=params)


def index_save(index, *, manifest: dict) -> dict:
    """Writes the index under a fresh name, then points the manifest at it."""
    import faiss

    folder = index_dir()
    name = f"vectors-{int(time.time())}-{uuid.uuid4().hex[:8]}.faiss"
    tmp = folder / f".{name}.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / name)
    old = (manifest_safe() or {}).get("file")
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "file": name,
        "file_size": (folder / name).stat().st_size,
        "file_sha256": file_sha256(folder / name),
        "count": int(index.ntotal),
        "saved_at": time.time(),
    }
    _atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    if old and old != name:
        try:
            (folder / old).unlink()
        except FileNotFoundError:
            pass
    return manifest


def manifest_safe() -> dict | None:
    try:
        return manifest_read()
    except IndexUnavailable:
        return None


def index_load_checked(
    *, model: str, dimension: int | None = None, mmap: bool = False
) -> LoadedIndex:
    """Loads the index the manifest names, checking everything the manifest promises.
    ``mmap`` (readers, SEARCH_INDEX_MMAP): the vectors stay in the file, mapped read-only,
    so every process of the machine shares one copy in the page cache instead of holding
    its own (1.5 KB a vector each). Writers read it whole: they add to it."""
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
    path = index_dir() / str(manifest.get("file", ""))
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise IndexUnavailable("missing", f"index file {path.name} is gone") from None
    if stat.st_size != manifest.get("file_size"):
        raise IndexUnavailable(
            "corrupt",
            f"index file is {stat.st_size} bytes, manifest says {manifest.get('file_size')}",
        )
    # Bytes changed in place (a bad disk, a stray write) keep the size and may still parse:
    # only the checksum tells. Indexes saved before checksums were kept have none.
    expected = manifest.get("file_sha256")
    if expected and file_sha256(path) != expected:
        raise IndexUnavailable(
            "corrupt", f"index file {path.name} does not match its checksum: rebuild it"
        )
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        index = faiss.read_index(str(path), flags)
    except Exception as exc:  # faiss raises RuntimeError with C++ messages
        raise IndexUnavailable("corrupt", f"cannot read index file: {exc}") from exc
    if index.d != manifest.get("dimension") or index.ntotal != manifest.get("count"):
        raise IndexUnavailable("corrupt", "index file does not match its manifest")
    # One thread, like torch: a second OpenMP thread measured slower (8.2 ms vs 6.5 ms for
    # a flat search of 62k vectors) and steals the core of the next process.
    faiss.omp_set_num_threads(settings.TORCH_THREADS)
    hnsw = getattr(faiss.downcast_index(getattr(index, "index", index)), "hnsw", None)
    if hnsw is not None:
        # An HNSW index from before IVF replaced it searches as it did until the next
        # update retypes it.
        hnsw.efSearch = 384
    if not hasattr(index, "id_map"):
        raise IndexUnavailable("corrupt", "index file is not an id-mapped index")
    stamp = (manifest.get("file"), stat.st_mtime_ns, stat.st_size)
    return LoadedIndex(index=index, manifest=manifest, stamp=stamp)


# --- the reader's cache (one per process) --------------------------------------------------

_reader_lock = threading.Lock()
_reader: dict = {"loaded": None, "manifest_mtime": None}


def index_for_search(*, model: str) -> LoadedIndex:
    """The current index, reloaded when the manifest on disk changed."""
    manifest_path = index_dir() / MANIFEST
    try:
        mtime = manifest_path.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = None
    with _reader_lock:
        cached = _reader["loaded"]
        if mtime is not None and mtime == _reader["manifest_mtime"] and cached is not None:
            # Cheap check that the file we hold is still the one on disk.
            path = index_dir() / cached.manifest["file"]
            try:
                st = path.stat()
                if (cached.manifest["file"], st.st_mtime_ns, st.st_size) == cached.stamp:
                    return cached
            except FileNotFoundError:
                pass
        _reader["loaded"] = None
        _reader["manifest_mtime"] = mtime
        loaded = index_load_checked(model=model, mmap=settings.SEARCH_INDEX_MMAP)
        _reader["loaded"] = loaded
        return loaded


def reader_reset() -> None:
    with _reader_lock:
        _reader.update(loaded=None, manifest_mtime=None)
