"""Text generation backends: local transformers, and OpenAI-compatible HTTP (vLLM).

Heavy imports (torch, transformers) happen inside functions, so that importing this
module from the web process costs nothing.
"""

import functools
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from django.conf import settings

from generation.sampling import (
    SamplingParams,
    kv_cache_preallocated,
    logits_adjust,
    sample_rows,
    sampling_uniforms,
)
from generation.vocabulary import BACKEND_OPENAI, BACKEND_TRANSFORMERS

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says which and how to fix it."""


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (no GPU, no endpoint configured)."""


class TransientBackendError(RuntimeError):
    """Worth retrying: an HTTP endpoint timed out or answered 5xx/429."""


@dataclass
class GenerationOutput:
    text: str  # the completion only, special tokens removed
    tokens: int
    finished: bool  # stopped on end-of-text rather than on the token limit
    # The sampled ids (end token excluded) where the backend knows them: what a proof of
    # sampling checks (generation/proof.py).
    token_ids: list[int] = field(default_factory=list)
    # Why the backend ended the row before end-of-text or the limit (generation.early_stop):
    # a gate reason (the sample is doomed) or "end_of_document"; empty otherwise.
    stopped: str = ""


class GenerationBackend(Protocol):
    """What a job needs of a backend. ``generate`` returns one output per prompt, in order;
    sample i depends only on its prompt and seed. ``heartbeat()``, when given, is called
    every so often so that a long batch keeps its job's lease."""

    revision_loaded: str

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        params: SamplingParams,
        *,
        heartbeat: Callable[[], None] | None = None,
        decide: Callable[[int, str], object] | None = None,
    ) -> list[GenerationOutput]: ...


def generation_precision(choice: str, *, device: str = "cpu") -> str:
    """GENERATION_QUANTIZE resolved: ``auto`` is bf16 where the CPU has AMX (``bf16-kv16``
    or ``bf16-kv8``, its attention through the compiled kernel, where that reads its cache
    faster than PyTorch reads bf16, timed in this process); elsewhere int8 layers beside
    the cache whose attention, timed in this process, is fastest: a bf16 cache read by
    PyTorch (``int8-bf16``, where the CPU has AVX512-BF16), a cache read by the compiled
    kernel (generation/attention.py, where it builds), each only where it takes at most
    CACHE_BF16_SHARE of float32's time; else int8. The kernel's cache is int8
    (``int8-kv8``, ``bf16-kv8``) where reading it from memory takes at most
    CACHE_INT8_SHARE of the bf16 one's time, else bf16 (``int8-kv16``, ``bf16-kv16``). On a
    GPU the model runs in fp16 whatever is asked.

    Measured at 1,024 tokens, two one-thread workers (bench/generation.py, bench/README.md):
    on an Intel Xeon with AMX bf16 (7.3x the card's pipeline); on an AMD EPYC with
    AVX512-BF16, PyTorch's bf16 attention was 4-6 times slower than float32's (int8-bf16
    halved the rate) and the kernel 3 times faster; on an Intel Xeon with AVX512-BF16 and
    no AMX int8-bf16 (8.1x against int8's 4.4x: there bf16 attention is 3 times faster).
    The flags alone do not tell these apart; the attention's own timing does."""
    if device != "cpu":
        return "none"
    if choice == "auto":
        from allthepatents.cpu import cpu_flags

        flags = cpu_flags()
        if "amx_bf16" in flags:
            return f"bf16-{_kernel_cache()}" if cache_kernel_beats_bf16() else "bf16"
        bf16_pays = "avx512_bf16" in flags and cache_bf16_pays()
        if cache_kernel_pays():
            if not bf16_pays or cache_kernel_beats_bf16():
                return f"int8-{_kernel_cache()}"
            return "int8-bf16"
        return "int8-bf16" if bf16_pays else "int8"
    return choice


def _kernel_cache() -> str:
    return "kv8" if cache_int8_pays() else "kv16"


# A bf16 cache must take at most this share of float32's attention time to be chosen:
# PyTorch's bf16 attention measured 0.31-0.34 where it pays (Intel, no AMX) and 3.8-5.9
# where it does not (AMD EPYC), bench/layers.py; the kernel 0.28-0.33 on the EPYC.
CACHE_BF16_SHARE = 0.7
# The int8 cache must take at most this share of the bf16 one's time, both read by the
# kernel from memory: it holds a little more error (bench/README.md), so not for less.
CACHE_INT8_SHARE = 0.85


@functools.cache
def cache_bf16_pays() -> bool:
    fp32_ms, bf16_ms = attention_step_ms()
    return bf16_ms <= CACHE_BF16_SHARE * fp32_ms


@functools.cache
def cache_kernel_pays() -> bool:
    """The kernel builds here and reads its bf16 cache in at most CACHE_BF16_SHARE of
    PyTorch's time over a float32 one."""
    from generation.attention import native_attention_available

    if not native_attention_available():
        return False
    fp32_ms, _ = attention_step_ms()
    return attention_kernel_step_ms() <= CACHE_BF16_SHARE * fp32_ms


@functools.cache
def cache_kernel_beats_bf16() -> bool:
    """The kernel builds here and reads its cache (int8 where ``cache_int8_pays``) faster
    than PyTorch's attention reads a bf16 one: the cache goes through it (``bf16-kv16``,
    ``bf16-kv8`` on AMX; the kernel's over ``int8-bf16`` elsewhere)."""
    from generation.attention import native_attention_available

    if not native_attention_available():
        return False
    _, bf16_ms = attention_step_ms()
    return attention_kernel_step_ms(bits=8 if cache_int8_pays() else 16) < bf16_ms


@functools.cache
def cache_int8_pays() -> bool:
    """The kernel builds here and reads an int8 cache from memory in at most
    CACHE_INT8_SHARE of its time over a bf16 one."""
    from generation.attention import native_attention_available

    if not native_attention_available():
        return False
    bf16_ms, int8_ms = attention_kernel_memory_ms()
    return int8_ms <= CACHE_INT8_SHARE * bf16_ms


@functools.cache
def attention_kernel_step_ms(
    *,
    bits: int = 16,
    rows: int = 8,
    heads: int = 12,
    positions: int = 1024,
    dim: int = 64,
    repeats: int = 5,
) -> float:
    """``attention_step_ms``'s step through the compiled kernel over a cache of ``bits``
    (16: bf16, 8: int8), in ms."""
    import torch

    from generation.attention import kernel_cache_random, native_attention

    native = native_attention()
    generator = torch.Generator().manual_seed(0)
    layer = kernel_cache_random(
        bits=bits, rows=rows, heads=heads, length=positions, dim=dim, generator=generator
    )
    query = torch.randn(rows, heads, dim, generator=generator)
    start = torch.zeros(rows, dtype=torch.int32)
    best = float("inf")
    for i in range(repeats + 1):
        began = time.perf_counter()
        native.decode(query, layer, start, scale=dim**-0.5)
        if i:
            best = min(best, time.perf_counter() - began)
    return best * 1000


@functools.cache
def attention_kernel_memory_ms(
    *, heads: int = 12, positions: int = 1024, dim: int = 64, repeats: int = 4
) -> tuple[float, float]:
    """A layer's step through the kernel over a bf16 cache and over an int8 one, each
    cache made of layers that together hold four times the CPU's largest cache (between
    128 and 512 MB in bf16), read in turn as a decoding step reads its layers': what
    memory delivers, not the cache. The two are timed in alternation (a shared machine's
    speed drifts), the best of ``repeats`` each, in ms a layer; 0.2 s on an AMD EPYC."""
    import torch

    from allthepatents.cpu import cpu_last_level_cache_bytes
    from generation.attention import kernel_layer_class, native_attention

    native = native_attention()
    rows = 8
    bf16_bytes = rows * heads * positions * dim * 2 * 2
    wanted = min(max(4 * cpu_last_level_cache_bytes(), 128 * 2**20), 512 * 2**20)
    caches = {}
    for bits in (16, 8):
        caches[bits] = []
        for _ in range(-(-wanted // bf16_bytes)):
            layer = kernel_layer_class(bits=bits)(capacity=positions)
            layer.lazy_initialization(torch.zeros(rows, heads, 1, dim))
            for buffer in layer.buffers():
                buffer.fill_(1)  # every page written: a page never written reads as cached zeros
            layer.length = positions
            caches[bits].append(layer)
    query = torch.full((rows, heads, dim), 0.01)
    start = torch.zeros(rows, dtype=torch.int32)
    best = {16: float("inf"), 8: float("inf")}
    for i in range(repeats + 1):
        for bits, layers in caches.items():
            began = time.perf_counter()
            for layer in layers:
                native.decode(query, layer, start, scale=dim**-0.5)
            if i:  # the first pass warms the kernel up
                best[bits] = min(best[bits], (time.perf_counter() - began) / len(layers))
    return best[16] * 1000, best[8] * 1000


@functools.cache
def attention_step_ms(
    *, rows: int = 8, heads: int = 12, positions: int = 1024, dim: int = 64, repeats: int = 5
) -> tuple[float, float]:
    """One decoding step's attention over a cache of ``positions`` (the kl3m shape at its
    longest), float32 and bf16: the best of ``repeats`` each, in ms. About 0.2 s in all."""
    import torch

    timings = []
    for dtype in (torch.float32, torch.bfloat16):
        generator = torch.Generator().manual_seed(0)
        q = torch.randn(rows, heads, 1, dim, generator=generator).to(dtype)
        k = torch.randn(rows, heads, positions, dim, generator=generator).to(dtype)
        v = torch.randn(rows, heads, positions, dim, generator=generator).to(dtype)
        best = float("inf")
        with torch.inference_mode():
            for i in range(repeats + 1):
                began = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                if i:  # the first call warms the kernel up
                    best = min(best, time.perf_counter() - began)
        timings.append(best * 1000)
    return timings[0], timings[1]


# The precisions whose KV cache is in the compiled kernel's layouts, read by it
# (generation/attention.py), and its bits (bf16, int8): int8 layers in float32, or the
# bf16 model's.
KERNEL_PRECISIONS = {"int8-kv16": 16, "bf16-kv16": 16, "int8-kv8": 8, "bf16-kv8": 8}


def kernel_attention_use(model, *, precision: str) -> None:
    """Route ``model``'s attention through the compiled kernel over a bf16 cache. Asked
    for by name where the kernel cannot be built: a clear error, not a silent fallback."""
    from generation.attention import (
        NAME,
        NativeAttentionUnavailable,
        kernel_takes,
        native_attention,
    )

    fallback = "bf16" if precision.startswith("bf16") else "int8"
    try:
        native_attention()
    except NativeAttentionUnavailable as exc:
        raise ModelLoadError(
            f"GENERATION_QUANTIZE={precision}: {exc}. Use {fallback} (or auto) here."
        ) from exc
    model.set_attn_implementation(NAME)
    config = model.config.get_text_config(decoder=True)
    head = config.hidden_size // config.num_attention_heads
    if not kernel_takes(head):
        logger.warning(
            "%s: head size %d is outside the kernel's range; PyTorch's attention reads "
            "the bf16 cache instead (slower)",
            precision,
            head,
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _device() -> str:
    wanted = settings.GENERATION_DEVICE
    if wanted == "auto":
        return "cuda" if _cuda_available() else "cpu"
    return wanted


class TransformersBackend:
    """A causal LM loaded once per process, sampled in batches with per-sample seeds."""

    def __init__(self, source: str, *, revision: str = "", quantize: str | None = None):
        self.source = source
        self.revision = revision or None
        self.device = _device()
        import torch

        # Before auto times attention: the kernel runs on one thread, PyTorch's attention on
        # all of them, so a pick timed on more threads than generation uses can be wrong.
        torch.set_num_threads(settings.TORCH_THREADS)
        self.quantize = generation_precision(
            settings.GENERATION_QUANTIZE if quantize is None else quantize, device=self.device
        )
        self._load()

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = Path(self.source).expanduser()
        is_local = local.is_dir()
        if not is_local and (
            self.source.startswith(("/", ".", "~"))
            or os.sep in self.source
            and self.source.count("/") > 1
        ):
            raise ModelLoadError(
                f"model directory {self.source!r} does not exist. Point --model (or the "
                "generator's local path in the admin) to a directory holding config.json, "
                "the tokenizer files and the weights."
            )
        kwargs = {"revision": self.revision} if not is_local and self.revision else {}
        if is_local:
            from allthepatents.weights import WeightsDamaged, weights_verify

            try:
                weights_verify(local)
            except WeightsDamaged as exc:
                raise ModelLoadError(f"cannot load model {self.source!r}: {exc}") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(local) if is_local else self.source, **kwargs
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(local) if is_local else self.source,
                dtype=torch.float32 if self.device == "cpu" else torch.float16,
                **kwargs,
            )
        except (OSError, ValueError) as exc:
            where = "directory" if is_local else "hub id"
            raise ModelLoadError(
                f"cannot load model {self.source!r} ({where}): {exc}. Without network access, "
                "download the model elsewhere and point --model /path/to/model (or the "
                "generator's local path in the admin) to that directory."
            ) from exc
        # The kl3m files say pad=2 in the config but pad=<|end|> in the tokenizer, and ship
        # use_cache=false (4x slower). Make pad, eos and the cache explicit.
        if tokenizer.eos_token_id is None:
            tokenizer.eos_token = tokenizer.pad_token or "</s>"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        model.config.use_cache = True
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.use_cache = True
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.eval()
        if self.device == "cpu" and self.quantize in ("int8", "int8-bf16", "int8-kv16", "int8-kv8"):
            # Int8 with each row's activations scaled on their own (generation/
            # quantization.py): a row's sample does not depend on its batch, so rows the
            # early stop ends leave the others' samples as they were. Plain dynamic int8
            # (one scale per tensor) moved them. int8-bf16 keeps everything else, the KV
            # cache included, in bf16: half the bytes of a float32 cache for attention to
            # read, which pays where the CPU's attention kernels run bf16 fast (AMX), not
            # on an AVX512-BF16 EPYC (bench/README.md).
            from generation.quantization import rows_scaled_int8_quantize

            if self.quantize == "int8-bf16":
                model = model.to(torch.bfloat16)
            model = rows_scaled_int8_quantize(model)
            if self.quantize in KERNEL_PRECISIONS:
                # The layers in float32 as int8's; the cache in bf16 or int8, read by the
                # kernel.
                kernel_attention_use(model, precision=self.quantize)
        elif self.device == "cpu" and self.quantize == "int8-rows":
            # The proof's int8 checker: a scale per row, not per tensor (generation/
            # quantization.py), so that one position's outliers do not blur the others.
            from generation.quantization import rows_int8_quantize

            model = rows_int8_quantize(model)
        elif self.device == "cpu" and self.quantize in ("bf16", "bf16-kv16", "bf16-kv8"):
            # Weights and so the KV cache in bf16, where the CPU computes it natively (AMX,
            # AVX512-BF16): half the bytes per token of context that attention reads. The
            # layers' weights packed for oneDNN once, not on every call.
            from generation.quantization import bf16_linears_pack

            model = bf16_linears_pack(model.to(torch.bfloat16))
            if self.quantize in KERNEL_PRECISIONS:
                kernel_attention_use(model, precision=self.quantize)
        else:
            model.to(self.device)
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        if is_local:
            from allthepatents.weights import weights_folder_revision

            self.revision_loaded = weights_folder_revision(local) or self.revision or ""
        else:
            self.revision_loaded = (
                getattr(model.config, "_commit_hash", None) or self.revision or ""
            )

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        params: SamplingParams,
        *,
        heartbeat=None,
        decide=None,
    ) -> list[GenerationOutput]:
        """Samples one completion per prompt; row i depends only on its prompt and seed
        (up to float noise from the batch's padding). `heartbeat()` is called every few
        dozen steps so a long batch can keep its job's lease alive. ``decide(row, text)``
        (``generation.early_stop``), asked every CHECK_EVERY tokens with a row's completion
        so far, returns a decision that ends the row there, or None.

        More prompts than fit GENERATION_KV_BUDGET_MB (``rows_fitting``) are sampled in
        several forward batches, one after the other."""
        rows_max = self.rows_fitting(params)
        if len(prompts) > rows_max:
            outputs = []
            for at in range(0, len(prompts), rows_max):
                part_decide = None
                if decide is not None:

                    def part_decide(row, text, _at=at):
                        return decide(row + _at, text)

                outputs += self._generate(
                    prompts[at : at + rows_max],
                    seeds[at : at + rows_max],
                    params,
                    heartbeat=heartbeat,
                    decide=part_decide,
                )
            return outputs
        return self._generate(prompts, seeds, params, heartbeat=heartbeat, decide=decide)

    def rows_fitting(self, params: SamplingParams, *, prompt_tokens: int = 64) -> int:
        """How many rows one forward batch takes within GENERATION_KV_BUDGET_MB: each row's
        KV cache holds keys and values for every layer and position it may reach."""
        config = self.model.config.get_text_config(decoder=True)
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head = config.hidden_size // config.num_attention_heads
        width = heads * head
        if KERNEL_PRECISIONS.get(self.quantize) == 8:
            element = 1 + 4 / head  # an int8 element, and a float32 scale a vector
        elif self.quantize in ("bf16", "int8-bf16", *KERNEL_PRECISIONS) or self.device != "cpu":
            element = 2
        else:
            element = 4
        per_row = (
            2 * config.num_hidden_layers * width * element * (prompt_tokens + params.max_new_tokens)
        )
        return max(1, int(settings.GENERATION_KV_BUDGET_MB * 2**20 // per_row))

    def _generate(self, prompts, seeds, params, *, heartbeat=None, decide=None):
        import torch

        from generation.early_stop import CHECK_EVERY
        from generation.form import FormState, form_masks_apply, form_vocabulary

        tok = self.tokenizer
        decode = tokens_decoder(tok)
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        input_ids = enc["input_ids"].to(self.device)
        attn = enc["attention_mask"].to(self.device)
        batch = input_ids.shape[0]
        # Each row's uniform numbers come from its seed alone (``sampling_uniforms``), so a
        # sample is the same whatever else shares its batch, and a proof can check the draw.
        uniforms = torch.tensor(
            [sampling_uniforms(seed, params.max_new_tokens) for seed in seeds],
            dtype=torch.float64,
        ).reshape(batch, params.max_new_tokens)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        # Penalise only real tokens: left padding is <|end|>, which must stay samplable.
        seen = torch.where(attn.bool(), input_ids, input_ids[:, -1:])
        out_tokens: list[list[int]] = [[] for _ in range(batch)]
        finished = [False] * batch
        stopped = [""] * batch
        rows = list(range(batch))  # original row of each live row in the shrinking batch
        # Preallocated KV buffers: the default cache concatenates on every step, copying the
        # whole cache (GBs at 1,024 tokens x 16 rows) once per token.
        past = kv_cache_preallocated(
            self.model.config,
            capacity=input_ids.shape[1] + params.max_new_tokens,
            kernel_bits=KERNEL_PRECISIONS.get(self.quantize, 0),
        )
        forms = None
        if params.form:  # a form this code lacks raises (FormUnknown), not sampled without
            vocabulary = form_vocabulary(tok, self.eos_id)
            forms = [
                FormState(vocabulary, prompt, form=params.form, budget=params.max_new_tokens)
                for prompt in prompts
            ]
        cur_ids, cur_pos = input_ids, positions
        cache_keyword = model_cache_keyword(self.model)
        with torch.inference_mode():
            for step in range(params.max_new_tokens):
                if heartbeat is not None and step and step % 32 == 0:
                    heartbeat()
                # The cache object is updated in place: nothing to read back from ``out``.
                out = self.model(
                    input_ids=cur_ids,
                    attention_mask=attn,
                    position_ids=cur_pos,
                    use_cache=True,
                    logits_to_keep=1,
                    **{cache_keyword: past},
                )
                logits = logits_adjust(
                    out.logits[:, -1, :].float().cpu(),
                    seen=seen,
                    step=step,
                    params=params,
                    eos_id=self.eos_id,
                )
                if forms is not None:
                    form_masks_apply(logits, [forms[row].mask() for row in rows])
                nxt = sample_rows(
                    logits,
                    top_k=params.top_k,
                    top_p=params.top_p,
                    uniforms=uniforms[rows, step],
                )
                keep = []
                check = decide is not None and (step + 1) % CHECK_EVERY == 0
                for j, row in enumerate(rows):
                    token = int(nxt[j])
                    if token == self.eos_id:
                        finished[row] = True
                        continue
                    out_tokens[row].append(token)
                    if forms is not None:
                        forms[row].advance(token)
                    if check:
                        text = decode(out_tokens[row])
                        decision = decide(row, text)
                        if decision is not None:
                            stopped[row] = decision.reason
                            continue
                    keep.append(j)
                if not keep:
                    break
                if len(keep) < len(rows):
                    # Finished rows leave the batch: no compute is spent on them any more.
                    # The last live rows fill their places, so the cache moves those few
                    # rows, not every live row's filled positions (shifting them all took
                    # 12 % of a batch of 64 on the demo generator, one compaction per finish).
                    keep = rows_compacted(keep)
                    index = torch.tensor(keep, dtype=torch.long)
                    past.batch_select_indices(index.to(self.device))
                    attn, cur_pos, seen = attn[index], cur_pos[index], seen[index]
                    nxt = nxt[index]
                    rows = [rows[j] for j in keep]
                cur_ids = nxt[:, None].to(self.device)
                attn = torch.cat(
                    [attn, torch.ones((len(rows), 1), dtype=attn.dtype, device=attn.device)],
                    dim=1,
                )
                cur_pos = cur_pos[:, -1:] + 1
                seen = torch.cat([seen, nxt[:, None].to(seen.device)], dim=1)
        return [
            GenerationOutput(
                text=decode(ids),
                tokens=len(ids) + (1 if finished[i] else 0),
                finished=bool(finished[i]),
                token_ids=list(ids),
                stopped=stopped[i],
            )
            for i, ids in enumerate(out_tokens)
        ]


def tokens_decoder(tokenizer):
    """``ids -> text`` as ``tokenizer.decode(ids, skip_special_tokens=True,
    clean_up_tokenization_spaces=False)`` gives it: the early stop's check of every row
    every few tokens and the finished samples read through the same one. A fast
    tokenizer's own decoder is called directly: transformers' ``decode`` first walks the
    list checking each element's type, a quarter to a third of a call's time on the demo
    generator's vocabulary (bench/README.md, 2026-12-06)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return functools.partial(backend.decode, skip_special_tokens=True)
    return functools.partial(
        tokenizer.decode, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )


def model_cache_keyword(model) -> str:
    """The forward argument that takes the KV cache: ``cache`` from transformers 5.x on,
    where ``past_key_values`` is deprecated (and announced gone in 5.40, which
    pyproject.toml's range admits); ``past_key_values`` before."""
    return _forward_cache_keyword(type(model))


@functools.cache
def _forward_cache_keyword(model_class) -> str:
    # Once a model class, not once a batch: the signature does not change.
    import inspect

    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def rows_compacted(keep: list[int]) -> list[int]:
    """The rows of a batch that stay (``keep``, ascending), in the order that moves fewest
    of them: a staying row keeps its place when it lies within the new, shorter batch, and
    the staying rows beyond it fill the places of the rows that left."""
    size = len(keep)
    stays = set(keep)
    movers = iter(j for j in keep if j >= size)
    return [j if j in stays else next(movers) for j in range(size)]


class OpenAIBackend:
    """Any OpenAI-compatible completions endpoint (vLLM serving KULLM3 AWQ, for example)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 300,
        concurrency: int = 16,
    ):
        if not base_url:
            raise BackendUnavailable(
                "this generator is served over an OpenAI-compatible endpoint (vLLM on a GPU); "
                "set OPENAI_API_BASE and OPENAI_MODEL. It cannot run on this CPU-only worker."
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.concurrency = concurrency
        self.revision_loaded = ""

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        params: SamplingParams,
        *,
        heartbeat=None,
        decide=None,
    ) -> list[GenerationOutput]:
        """One request per prompt (each with its own seed, so a sample is reproducible alone),
        up to ``concurrency`` in flight: vLLM batches concurrent requests itself (continuous
        batching), so a batch of 16 takes about the time of one. Outputs keep prompt order;
        the first failure is raised once the requests in flight have finished."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = list(zip(prompts, seeds, strict=True))
        if not jobs:
            return []
        workers = max(1, min(self.concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
            futures = [pool.submit(self._complete, prompt, seed, params) for prompt, seed in jobs]
            outputs = []
            for future in futures:
                if heartbeat is not None:
                    heartbeat()
                outputs.append(future.result())
        return outputs

    def _complete(self, prompt: str, seed: int, params: SamplingParams) -> GenerationOutput:
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "repetition_penalty": params.repetition_penalty,
            "seed": int(seed) % (2**31),
        }
        request = urllib.request.Request(  # noqa: S310 (URL is an operator setting)
            f"{self.base_url}/completions",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise TransientBackendError(f"endpoint answered {exc.code}") from exc
            raise BackendUnavailable(f"endpoint refused the request: {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise TransientBackendError(f"endpoint unreachable: {exc}") from exc
        except ValueError as exc:
            raise TransientBackendError(
                f"endpoint answered something that is not JSON: {exc}"
            ) from exc
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise TransientBackendError(f"endpoint answer has no choices: {exc!r}") from exc
        usage = data.get("usage") or {}
        return GenerationOutput(
            text=choice.get("text", "") or "",
            tokens=int(usage.get("completion_tokens", 0)),
            finished=choice.get("finish_reason") == "stop",
        )


_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


def backend_for(generator, *, model_override: str = "") -> GenerationBackend:
    """The backend for a generator, loaded once per process and kept. ``model_override``:
    a job's (``generation.selectors.job_model`` names what this loads)."""
    if generator.backend == BACKEND_OPENAI:
        return OpenAIBackend(
            base_url=settings.OPENAI_API_BASE,
            model=settings.OPENAI_MODEL or generator.model_id,
            api_key=settings.OPENAI_API_KEY,
            concurrency=settings.GENERATION_HTTP_CONCURRENCY,
        )
    source = model_override or generator.source
    if generator.requires_gpu and _device() != "cuda":
        raise BackendUnavailable(f"{generator.name} needs a GPU and this worker has none.")
    key = (BACKEND_TRANSFORMERS, source, generator.revision, settings.GENERATION_QUANTIZE)
    with _cache_lock:
        if key not in _cache:
            started = time.monotonic()
            _cache.clear()  # one model per worker process: memory matters more than switching
            _cache[key] = TransformersBackend(source, revision=generator.revision)
            logger.info("loaded %s in %.1fs", source, time.monotonic() - started)
        return _cache[key]


def backend_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()
