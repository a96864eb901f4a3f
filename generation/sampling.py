"""The per-step arithmetic of local generation, apart from the backend that drives it:
logit adjustments (repetition penalty, minimum length, temperature), top-k/top-p sampling
with a generator per row, and a KV cache that writes into preallocated buffers.

The cache subclasses ``transformers.cache_utils.DynamicLayer`` and relies on its
lazy-initialisation interface (``lazy_initialization``, ``is_initialized``, ``keys`` and
``values``), which transformers 4.56 introduced: pyproject.toml's lower bound is
``TRANSFORMERS_MIN`` (tests/test_generation_jobs.py checks that the two agree and that the
installed version has what the subclass overrides).
"""

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


SAMPLING_DEFAULTS = SamplingParams()
# What a job records and an admin may set (min_new_tokens is for benchmarks only).
JOB_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")


def logits_adjust(logits, *, seen, step: int, params, eos_id: int):
    """Next-token logits (rows on the CPU, float32) after the repetition penalty on the
    tokens each row has ``seen``, the end token barred before ``params.min_new_tokens``,
    and the temperature."""
    import torch

    if params.repetition_penalty and params.repetition_penalty != 1.0:
        rp = params.repetition_penalty
        seen_cpu = seen.cpu()
        score = logits.gather(1, seen_cpu)
        score = torch.where(score < 0, score * rp, score / rp)
        logits.scatter_(1, seen_cpu, score)
    if step < params.min_new_tokens:
        logits[:, eos_id] = float("-inf")
    return logits / max(params.temperature, 1e-5)


def kv_cache_preallocated(config, *, capacity: int):
    """A transformers cache whose layers write into buffers sized for the whole generation
    and hand attention a view of the filled part: no per-step copy of the cache."""
    from transformers.cache_utils import DynamicCache

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
            if self.is_initialized:
                self._k = self._k[indices]
                self._v = self._v[indices]
                self.keys = self._k[:, :, : self.length]
                self.values = self._v[:, :, : self.length]

    _layer_class = PreallocatedLayer
    return _layer_class


def sample_rows(logits, *, top_k: int, top_p: float, generators):
    """One token per row. Top-k first (a partial sort), then top-p within the k survivors,
    then a draw from each row's own generator: the same distribution as filtering the full
    vocabulary, at a fraction of the cost (no full sort, no 32k-way draw)."""
    import torch

    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        values, indices = torch.topk(logits, top_k, dim=-1)  # sorted, best first
    else:
        values, indices = torch.sort(logits, descending=True, dim=-1)
    if top_p and top_p < 1.0:
        cum = torch.softmax(values, dim=-1).cumsum(-1)
        remove = cum > top_p
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        values = values.masked_fill(remove, float("-inf"))
    probs = torch.softmax(values, dim=-1)
    picks = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(len(probs))]
    return indices.gather(1, torch.stack(picks))[:, 0]
