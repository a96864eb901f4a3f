"""The per-step arithmetic of local generation, apart from the backend that drives it:
logit adjustments (repetition penalty, minimum length, temperature), top-k/top-p sampling
by inverse CDF with uniform numbers drawn from each sample's seed (so that the proof of
sampling can check the draw), and a KV cache that writes into preallocated buffers.

The cache subclasses ``transformers.cache_utils.DynamicLayer`` and relies on its
lazy-initialisation interface (``lazy_initialization``, ``is_initialized``, ``keys`` and
``values``), which transformers 4.56 introduced: pyproject.toml's lower bound is
``TRANSFORMERS_MIN`` (tests/test_generation_jobs.py checks that the two agree and that the
installed version has what the subclass overrides).
"""

import hashlib
from dataclasses import dataclass

TRANSFORMERS_MIN = "4.56"


@dataclass
class SamplingParams:
    """Sampling settings. These defaults are the only ones: the job model's field defaults,
    ``job_create`` and the training recipe's hit-rate check all read them from here (a
    generator's ``default_params`` override them per generator)."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.1
    max_new_tokens: int = 768
    min_new_tokens: int = 0  # benchmarks force the length so random weights don't stop
    # "kl3m": the sampler follows the kl3m document's skeleton (generation/form.py); the
    # job fixes it at creation, and the proof of sampling replays it.
    form: str = ""


SAMPLING_DEFAULTS = SamplingParams()
# What a job records and an admin may set (min_new_tokens is for benchmarks only).
JOB_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")


def logits_adjust(logits, *, seen, step: int, params, eos_id: int):
    """Next-token logits (rows on the CPU, float32) after the repetition penalty on the
    tokens each row has ``seen``, the end token barred before ``params.min_new_tokens``,
    and the temperature. ``logits`` is changed in place and returned: a decoding step's
    rows x vocabulary is the largest tensor the sampler handles, and a fresh one each step
    costs its allocation and first touch."""
    import torch

    if params.repetition_penalty and params.repetition_penalty != 1.0:
        rp = params.repetition_penalty
        seen_cpu = seen.cpu()
        score = logits.gather(1, seen_cpu)
        score = torch.where(score < 0, score * rp, score / rp)
        logits.scatter_(1, seen_cpu, score)
    if step < params.min_new_tokens:
        logits[:, eos_id] = float("-inf")
    return logits.div_(max(params.temperature, 1e-5))


def kv_cache_preallocated(config, *, capacity: int, kernel_bits: int = 0):
    """A transformers cache whose layers write into buffers sized for the whole generation
    and hand attention a view of the filled part: no per-step copy of the cache. With
    ``kernel_bits`` the layers hold bf16 (16: ``int8-kv16``, ``bf16-kv16``) or int8 (8:
    ``int8-kv8``, ``bf16-kv8``) in the layouts ``generation.attention``'s kernel reads."""
    from transformers.cache_utils import DynamicCache

    if kernel_bits:
        from generation.attention import kernel_layer_class

        layer_class = kernel_layer_class(bits=kernel_bits)
    else:
        layer_class = preallocated_layer_class()
    cache = DynamicCache()
    cache.layers = [
        layer_class(capacity=capacity)
        for _ in range(config.get_text_config(decoder=True).num_hidden_layers)
    ]
    return cache


_layer_class = None


def preallocated_layer_class():
    global _layer_class
    if _layer_class is not None:
        return _layer_class
    import torch
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, *, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.length = 0
            self._k = self._v = None

        def lazy_initialization(self, key_states, value_states):
            self.dtype, self.device = key_states.dtype, key_states.device
            batch, heads, _, dim = key_states.shape
            shape = (batch, heads, self.capacity, dim)
            self._k = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
            self._v = torch.empty(shape, dtype=value_states.dtype, device=value_states.device)
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV cache full: {end} > {self.capacity} positions")
            self._k[:, :, self.length : end].copy_(key_states)
            self._v[:, :, self.length : end].copy_(value_states)
            self.length = end
            self.keys = self._k[:, :, :end]
            self.values = self._v[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices):
            # The kept rows' filled positions move to the front of the same buffers: taking
            # ``self._k[indices]`` copied every row's whole capacity, empty positions and
            # all, each time a row finished (9 % of a batch of 64 on the demo generator).
            if self.is_initialized:
                rows, filled = len(indices), slice(0, self.length)
                indices = torch.as_tensor(indices, device=self._k.device)
                # Only rows whose place changes are copied (the backend fills the places
                # of finished rows with the last live ones: ``rows_compacted``).
                moved = (indices != torch.arange(rows, device=indices.device)).nonzero()[:, 0]
                if len(moved):
                    source = indices[moved]
                    self._k[moved, :, filled] = self._k[source, :, filled]
                    self._v[moved, :, filled] = self._v[source, :, filled]
                self._k, self._v = self._k[:rows], self._v[:rows]
                self.keys = self._k[:, :, : self.length]
                self.values = self._v[:, :, : self.length]

    _layer_class = PreallocatedLayer
    return _layer_class


def sampling_uniforms(seed: int, count: int) -> list[float]:
    """The uniform numbers in [0, 1) that a sample with ``seed`` draws its first ``count``
    tokens with, one per step. They depend on the seed and the step alone (a keyed hash,
    the same on every machine and in every library version), never on the logits: the proof
    of sampling recomputes them, so a sample proves its seed as well as its model."""
    key = (int(seed) % 2**64).to_bytes(8, "little")
    return [
        (
            int.from_bytes(
                hashlib.blake2b(step.to_bytes(4, "little"), key=key, digest_size=8).digest(),
                "little",
            )
            >> 11
        )
        / 2**53
        for step in range(count)
    ]


def sample_rows(logits, *, top_k: int, top_p: float, uniforms):
    """One token per row, by inverse CDF: the top ``top_k`` (a partial sort, best first),
    then the tokens whose better ones hold at most ``top_p`` of their mass; each row's token
    is the first whose cumulative mass exceeds its uniform number (``uniforms``, one per
    row, from ``sampling_uniforms``) times the mass kept. The same distribution as filtering
    the full vocabulary and drawing, but the draw is a function of the uniform number, so
    a checker that knows the seed can tell which token the sampler took (generation/proof.py)."""
    import torch

    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        indices = top_columns(logits, top_k)  # sorted, best first
        values = logits.gather(1, indices)
    else:
        values, indices = torch.sort(logits, descending=True, dim=-1)
    # float64 for the cumulative sums: the checker's arithmetic of the same intervals.
    probs = torch.softmax(values.double(), dim=-1)
    cum = probs.cumsum(-1)
    kept = (cum - probs) <= (top_p if top_p and top_p < 1.0 else 1.0)
    kept[:, 0] = True
    mass = (probs * kept).sum(-1)
    target = torch.as_tensor(uniforms, dtype=torch.float64) * mass
    pick = (cum <= target[:, None]).sum(-1)
    pick = torch.minimum(pick, kept.sum(-1) - 1)  # the mass's own rounding
    return indices.gather(1, pick[:, None])[:, 0]


# A row's top k lie in the k sets with the highest maxima, whatever the sets (an element
# outside them has k maxima at least as high above it). Sets of 8 strided columns give
# maxima in one vectorised pass, and the top k of the maxima are found the same way, down to
# a few hundred: 39 ms for 1024 x 32k rows against 85 ms for one torch.topk (the proof's
# rows), 2.0 against 5.5 ms for a decoding step's 64 (a one-off script, not kept).
_SET = 8


def top_columns(rows, k: int):
    """Columns of each row's ``k`` largest values, best first (ties in any order): what
    ``torch.topk(rows, k).indices`` gives, in a third of its time at a vocabulary of
    32,768. The sampler and the proof of sampling both draw their top k from it."""
    import torch

    count, width = rows.shape
    if not (width % _SET == 0 and width // _SET >= 2 * k):
        return torch.topk(rows, k, dim=-1).indices
    sets = width // _SET  # set b holds the columns b, b + sets, b + 2 * sets, ...
    chosen = top_columns(rows.reshape(count, _SET, sets).amax(1), k)
    offsets = sets * torch.arange(_SET, device=rows.device)
    columns = (chosen[:, None, :] + offsets[None, :, None]).reshape(count, -1)
    return columns.gather(1, torch.topk(rows.gather(1, columns), k, dim=-1).indices)
