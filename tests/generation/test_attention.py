"""The bf16 and int8 KV caches and their compiled attention kernel (generation/attention.py):
the kernel is built with the machine's C compiler, for each instruction set this CPU can
run, and compared with PyTorch's attention over the same cache values."""

import contextlib

import pytest

from generation.backends import ModelLoadError, TransformersBackend
from generation.sampling import SamplingParams
from tests.helpers import require


def _tiers():
    from allthepatents.cpu import cpu_flags

    flags = cpu_flags()
    tiers = []
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        tiers.append("avx512")
    if {"avx2", "fma"} <= flags:
        tiers.append("avx2")
    return tiers


def _kernel(isa, directory):
    """The kernel built for ``isa``, to run. Every build is compiled, whatever this CPU runs,
    so that a build this CPU cannot run still fails here if it no longer compiles; running it
    is skipped (in CI too: which CPU a run gets is not the project's to require)."""
    from generation.attention import NativeAttention, _compiler, kernel_build

    require(_compiler() is not None, "a C compiler (gcc) builds the attention kernel")
    path = kernel_build(isa=isa, directory=directory)
    assert path.exists()
    if isa not in _tiers():
        pytest.skip(f"this CPU cannot run the {isa} kernel (built, not run)")
    return NativeAttention(path, isa=isa)


def _reference(query, keys, values, start, *, rounded=True):
    """PyTorch's attention over the cache (its bf16 rounding where ``rounded``), rows
    masked before start."""
    import torch

    if rounded:
        keys, values = keys.bfloat16().float(), values.bfloat16().float()
    length = keys.shape[2]
    mask = (torch.arange(length)[None, :] >= start[:, None].long())[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(
        query[:, :, None], keys, values, attn_mask=mask
    )[:, :, 0]


PROMPTS = ["# Patent\n\n## Title", "# Patent\n\n## Claims\n\n1. A", "# Patent\n\n## Title"]


def _generate_counting_kernel_steps(backend, monkeypatch, params):
    """``backend``'s samples of PROMPTS (seeds 5, 6, 7), and the kernel's calls meanwhile."""
    import generation.attention as attention

    calls = []
    kernel_decode = attention.NativeAttention.decode
    monkeypatch.setattr(
        attention.NativeAttention,
        "decode",
        lambda self, *a, **k: calls.append(1) or kernel_decode(self, *a, **k),
    )
    return backend.generate(PROMPTS, [5, 6, 7], params), calls


def _caches_written(bits, *, seed):
    """Kernel cache layers of ``bits`` (16: bf16, 8: int8) written as a worker writes them,
    the prompt in a block and then a position a step: every head size the kernel takes,
    lengths on and off a tile's edge. With each: the states written, each row's own first
    position (left padding) and a query."""
    import torch

    from generation.attention import kernel_layer_class

    generator = torch.Generator().manual_seed(seed)
    for rows, heads, dim, prompt, steps in [
        (1, 1, 16, 1, 0),
        (5, 3, 16, 15, 2),
        (4, 2, 64, 16, 1),
        (3, 4, 64, 7, 30),
        (2, 2, 128, 40, 9),
        (2, 1, 256, 3, 14),
    ]:
        layer = kernel_layer_class(bits=bits)(capacity=prompt + steps)
        keys = torch.randn(rows, heads, prompt + steps, dim, generator=generator) * 3
        values = torch.randn(rows, heads, prompt + steps, dim, generator=generator)
        layer.update(keys[:, :, :prompt], values[:, :, :prompt])
        for step in range(steps):
            at = prompt + step
            layer.update(keys[:, :, at : at + 1], values[:, :, at : at + 1])
        length = prompt + steps
        start = torch.randint(0, length, (rows,), generator=generator).to(torch.int32)
        start[0] = 0
        query = torch.randn(rows, heads, dim, generator=generator)
        yield layer, keys, values, start, query


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_the_kernel_computes_pytorchs_attention_over_the_bf16_cache(isa, tmp_path):
    """Every head size the kernel takes, lengths on and off a tile's edge, left padding of
    every row its own, positions written one at a time and in a block."""
    import torch

    native = _kernel(isa, tmp_path)
    for layer, keys, values, start, query in _caches_written(16, seed=3):
        dim = query.shape[-1]
        got = native.decode(query, layer, start, scale=dim**-0.5)
        want = _reference(query, keys, values, start)
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (keys.shape, dim)
        # bf16 is what the cache holds: against float32 the difference is bf16's rounding.
        dense_keys, dense_values = layer.dense()
        assert torch.equal(dense_keys, keys.bfloat16().float())
        assert torch.equal(dense_values, values.bfloat16().float())


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_the_kernel_computes_pytorchs_attention_over_the_int8_cache(isa, tmp_path):
    """The int8 cache (``int8-kv8``, ``bf16-kv8``): every head size, lengths on and off a
    tile's edge, each row's own left padding, positions written one at a time and in a
    block. The kernel computes PyTorch's attention over the cache's values (each int8
    vector times its scale), and those values are within half a step of the states."""
    import torch

    native = _kernel(isa, tmp_path)
    for layer, keys, values, start, query in _caches_written(8, seed=5):
        dim = query.shape[-1]
        got = native.decode(query, layer, start, scale=dim**-0.5)
        dense_keys, dense_values = layer.dense()
        want = _reference(query, dense_keys, dense_values, start, rounded=False)
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (keys.shape, dim)
        for dense, states in ((dense_keys, keys), (dense_values, values)):
            step_size = states.abs().amax(-1, keepdim=True) / 127
            assert ((dense - states).abs() <= 0.5001 * step_size).all()
        # A different answer than over the bf16 cache: the int8 values are what is read.
        assert not torch.allclose(got, _reference(query, keys, values, start), atol=2e-5)


def test_the_kernel_quantizes_the_cache_as_pytorch_does(tmp_path):
    """The kernel's int8 writes are PyTorch's (``int8_quantize``) bit for bit: ties to
    even, a vector of zeros (scale 0), a bf16 model's states; so the prompt's positions and
    the decoding steps' hold the same arithmetic however they were written."""
    import torch

    from generation.attention import int8_layer_class

    tiers = _tiers()
    require(bool(tiers), "a CPU with AVX2 runs the kernel")
    native = _kernel(tiers[0], tmp_path)
    keys = torch.randn(2, 3, 5, 32)
    keys[0, 0, 0] = 0.0
    keys[1, 2, 4] = torch.arange(32) - 15.5  # 127 / 16.5 apart: some quotients tie
    keys[0, 1, 1, :4] = torch.tensor([127.0, 0.5, 1.5, -2.5])  # scale 1: exact ties
    values = keys.flip(-1).contiguous() * 7
    layers = [int8_layer_class()(capacity=16) for _ in range(3)]
    for layer, writer, states in (
        (layers[0], native, (keys, values)),
        (layers[1], None, (keys, values)),
        (layers[2], native, (keys.bfloat16(), values.bfloat16())),
    ):
        layer.lazy_initialization(states[0])
        layer.write(*states, writer=writer)
        layer.length = 5
    for by_kernel, by_torch in zip(layers[0].buffers(), layers[1].buffers(), strict=True):
        assert torch.equal(by_kernel, by_torch)
    assert layers[1]._k_scale[0, 0, 0] == 0 and not layers[1]._k[0, 0, 0, :, 0].any()
    assert layers[1]._k[0, 1, 0, :4, 1].tolist() == [127, 0, 2, -2]  # half to even
    from_bf16 = int8_layer_class()(capacity=16)
    from_bf16.lazy_initialization(keys)
    from_bf16.write(keys.bfloat16().float(), values.bfloat16().float())
    for by_kernel, by_torch in zip(layers[2].buffers(), from_bf16.buffers(), strict=True):
        assert torch.equal(by_kernel, by_torch)


@pytest.mark.parametrize("bits", [16, 8])
def test_rows_leaving_the_batch_keep_their_cache(bits, tmp_path):
    """``batch_select_indices`` moves the last live rows into finished rows' places; what
    each kept row attends to is its own cache (and, int8, its own scales)."""
    import torch

    from generation.attention import kernel_layer_class

    tiers = _tiers()
    require(bool(tiers), "a CPU with AVX2 runs the kernel")
    native = _kernel(tiers[0], tmp_path)
    generator = torch.Generator().manual_seed(4)
    rows, heads, dim, length = 6, 2, 32, 37
    layer = kernel_layer_class(bits=bits)(capacity=40)
    keys = torch.randn(rows, heads, length, dim, generator=generator)
    values = torch.randn(rows, heads, length, dim, generator=generator) * torch.rand(rows, 1, 1, 1)
    layer.update(keys, values)
    kept = kernel_layer_class(bits=bits)(capacity=40)
    keep = [0, 5, 2, 4]  # rows 1 and 3 finished; 5 and 4 move up
    kept.update(keys[keep], values[keep])
    layer.batch_select_indices(torch.tensor(keep))
    query = torch.randn(len(keep), heads, dim, generator=generator)
    start = torch.zeros(len(keep), dtype=torch.int32)
    got = native.decode(query, layer, start, scale=dim**-0.5)
    assert torch.equal(got, native.decode(query, kept, start, scale=dim**-0.5))
    if bits == 16:
        assert torch.allclose(got, _reference(query, keys[keep], values[keep], start), atol=2e-5)


@pytest.mark.parametrize("precision", ["int8-kv16", "int8-kv8"])
def test_int8_kernel_precisions_sample_as_pytorch_would_over_the_same_cache(
    precision, tiny_neox, monkeypatch
):
    """``int8-kv16`` and ``int8-kv8``: int8 layers, the cache in bf16 or int8 (fewer bytes
    a row that ``rows_fitting`` counts), decoding steps through the kernel. The samples are
    the ones PyTorch's attention draws over the same cache, and a row's sample is the same
    in any batch."""
    import torch

    import generation.attention as attention
    from generation.quantization import row_scaled_int8_linear_class

    require(bool(_tiers()), "a CPU with AVX2 runs the kernel")
    backend = TransformersBackend(str(tiny_neox), quantize=precision)
    assert backend.model.config._attn_implementation == attention.NAME
    kinds = {type(m) for m in backend.model.modules()}
    assert row_scaled_int8_linear_class() in kinds and torch.nn.Linear not in kinds
    params = SamplingParams(max_new_tokens=40, min_new_tokens=40)
    full = TransformersBackend(str(tiny_neox), quantize="int8")
    head = backend.model.config.hidden_size // backend.model.config.num_attention_heads
    shrink = 2 if precision == "int8-kv16" else 4 / (1 + 4 / head)  # int8, and its scale
    assert backend.rows_fitting(params) / full.rows_fitting(params) == pytest.approx(shrink, 1e-3)
    batch, calls = _generate_counting_kernel_steps(backend, monkeypatch, params)
    assert len(calls) >= 39 * 2  # every decoding step of both layers took the kernel
    assert [o.tokens for o in batch] == [40, 40, 40]
    assert backend.generate(PROMPTS[1:2], [6], params)[0].token_ids == batch[1].token_ids
    # Prompts of one length: no row is padded, and transformers passes no mask at all; as
    # a fresh worker's first batch, before any step has read a mask.
    monkeypatch.setattr(attention, "_start_memo", [None, None])
    alike = backend.generate(PROMPTS[::2], [5, 7], params)
    assert [o.token_ids for o in alike] == [batch[0].token_ids, batch[2].token_ids]

    again = _generate_through_pytorch(backend, PROMPTS, [5, 6, 7], params)
    assert [o.token_ids for o in again] == [o.token_ids for o in batch]


def _generate_through_pytorch(backend, prompts, seeds, params):
    """``backend``'s samples with PyTorch's attention, not the kernel's, over the same bf16
    cache (widened to float32, as the kernel widens it)."""
    with _pytorch_attention():
        return backend.generate(prompts, seeds, params)


def _forced_logits_through_pytorch(backend, prompt, token_ids):
    with _pytorch_attention():
        return _forced_logits(backend, prompt, token_ids)


@contextlib.contextmanager
def _pytorch_attention():
    """The kernel's precisions with PyTorch's attention in the kernel's place."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import generation.attention as attention

    def pytorch_over_the_same_cache(module, query, key, value, attention_mask, **kwargs):
        key, value = key.kernel_layer.dense()
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
        return out.to(query.dtype), weights

    AttentionInterface.register(attention.NAME, pytorch_over_the_same_cache)
    try:
        yield
    finally:
        AttentionInterface.register(attention.NAME, attention.kernel_cache_attention)


def _forced_logits(backend, prompt, token_ids):
    """The logits of each step as ``backend``'s decoding loop computes them (its cache, its
    attention), with ``token_ids`` fed in turn whatever was sampled: float32 (steps, vocab)."""
    import torch

    from generation.backends import KERNEL_PRECISIONS, model_cache_keyword
    from generation.sampling import kv_cache_preallocated

    ids = backend.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)["input_ids"]
    past = kv_cache_preallocated(
        backend.model.config,
        capacity=ids.shape[1] + len(token_ids),
        kernel_bits=KERNEL_PRECISIONS.get(backend.quantize, 0),
    )
    keyword = model_cache_keyword(backend.model)
    steps, at = [], 0
    with torch.inference_mode():
        for token in [None, *token_ids[:-1]]:
            cur = ids if token is None else torch.tensor([[token]])
            positions = torch.arange(at, at + cur.shape[1])[None]
            at += cur.shape[1]
            out = backend.model(
                input_ids=cur, position_ids=positions, use_cache=True, **{keyword: past}
            )
            steps.append(out.logits[0, -1].float())
    return torch.stack(steps)


@pytest.mark.parametrize("precision", ["bf16-kv16", "bf16-kv8"])
def test_bf16_kernel_precisions_run_the_bf16_models_attention_through_the_kernel(
    precision, tiny_neox, monkeypatch
):
    """``bf16-kv16``, ``bf16-kv8`` (``auto``'s picks on AMX where the kernel reads the
    cache faster than PyTorch): the bf16 model, its packed layers, its cache in the
    kernel's layouts, every decoding step's attention through the kernel. Its logits are
    PyTorch's attention's over the same cache up to bf16 rounding, and no further from
    float32's than plain bf16's (a bf16 model's samples part from any other arithmetic's
    after a few tokens, so the logits are compared, not the samples)."""
    import torch

    import generation.attention as attention
    from generation.quantization import bf16_packing_available, packed_bf16_linear_class

    require(bool(_tiers()), "a CPU with AVX2 runs the kernel")
    backend = TransformersBackend(str(tiny_neox), quantize=precision)
    assert backend.model.config._attn_implementation == attention.NAME
    assert next(backend.model.parameters()).dtype == torch.bfloat16
    if bf16_packing_available():
        assert packed_bf16_linear_class() in {type(m) for m in backend.model.modules()}
    params = SamplingParams(max_new_tokens=40, min_new_tokens=40)
    plain = TransformersBackend(str(tiny_neox), quantize="bf16")
    if precision == "bf16-kv16":
        assert backend.rows_fitting(params) == plain.rows_fitting(params)
    else:
        assert backend.rows_fitting(params) > 1.5 * plain.rows_fitting(params)
    batch, calls = _generate_counting_kernel_steps(backend, monkeypatch, params)
    assert len(calls) >= 39 * 2
    assert [o.tokens for o in batch] == [40, 40, 40]

    drawn = batch[1].token_ids
    kernel = _forced_logits(backend, PROMPTS[1], drawn)
    pytorch = _forced_logits_through_pytorch(backend, PROMPTS[1], drawn)
    exact = _forced_logits(TransformersBackend(str(tiny_neox), quantize="none"), PROMPTS[1], drawn)
    bf16 = _forced_logits(plain, PROMPTS[1], drawn)
    bf16_error = (bf16 - exact).abs().max()
    assert bf16_error > 0  # bf16 arithmetic rounds: a bound to measure against
    assert (kernel - pytorch).abs().max() <= 0.5 * bf16_error
    assert (kernel - exact).abs().max() <= 1.5 * bf16_error


def test_the_int8_cache_adds_little_to_the_int8_layers_error(tiny_neox):
    """``int8-kv8``'s logits, teacher-forced along one sample, are no further from
    float32's than ``int8-kv16``'s by more than a quarter: the int8 layers' error, not the
    cache's, is what the worker's arithmetic carries. They differ (the int8 cache is read)."""
    drawn = (
        TransformersBackend(str(tiny_neox), quantize="none")
        .generate(PROMPTS[1:2], [6], SamplingParams(max_new_tokens=60, min_new_tokens=60))[0]
        .token_ids
    )
    logits = {
        precision: _forced_logits(
            TransformersBackend(str(tiny_neox), quantize=precision), PROMPTS[1], drawn
        )
        for precision in ("none", "int8-kv16", "int8-kv8")
    }
    errors = {p: float((logits[p] - logits["none"]).abs().max()) for p in logits}
    assert errors["int8-kv8"] <= 1.25 * errors["int8-kv16"]
    assert not logits["int8-kv8"].equal(logits["int8-kv16"])


def test_without_a_compiler_the_kernel_precisions_say_why_and_auto_leaves_them(
    tiny_neox, monkeypatch, settings, tmp_path
):
    import allthepatents.cpu
    import generation.attention as attention
    import generation.backends as backends

    settings.DATA_DIR = str(tmp_path)  # no library built here earlier
    monkeypatch.setenv("CC", "/nonexistent/cc")
    attention.native_attention.cache_clear()
    backends.cache_kernel_pays.cache_clear()
    backends.cache_kernel_beats_bf16.cache_clear()
    backends.cache_int8_pays.cache_clear()
    try:
        with pytest.raises(attention.NativeAttentionUnavailable, match="no C compiler"):
            attention.native_attention()
        with pytest.raises(ModelLoadError, match="int8-kv16: no C compiler.*Use int8"):
            TransformersBackend(str(tiny_neox), quantize="int8-kv16")
        with pytest.raises(ModelLoadError, match="bf16-kv16: no C compiler.*Use bf16"):
            TransformersBackend(str(tiny_neox), quantize="bf16-kv16")
        for precision in ("int8-kv8", "bf16-kv8"):
            with pytest.raises(ModelLoadError, match=f"{precision}: no C compiler"):
                TransformersBackend(str(tiny_neox), quantize=precision)
        monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2", "fma"})
        assert backends.generation_precision("auto") == "int8"
        monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2", "amx_bf16"})
        assert backends.generation_precision("auto") == "bf16"
        assert not backends.cache_int8_pays()
    finally:
        attention.native_attention.cache_clear()
        backends.cache_kernel_pays.cache_clear()
        backends.cache_kernel_beats_bf16.cache_clear()
        backends.cache_int8_pays.cache_clear()


def test_a_damaged_build_is_built_again(tmp_path, settings):
    """A library file that does not load (a full disk cut it short) is rebuilt once, not
    left to fail every worker."""
    import generation.attention as attention

    tiers = _tiers()
    require(bool(tiers), "a CPU with AVX2 runs the kernel")
    require(attention._compiler() is not None, "a C compiler (gcc) builds the kernel")
    settings.DATA_DIR = str(tmp_path)
    first = attention.kernel_build(isa=attention.isa_tier(), directory=tmp_path / "kernels")
    first.write_bytes(b"\x7fELF cut short")
    attention.native_attention.cache_clear()
    try:
        native = attention.native_attention()
        assert native.path == first and first.stat().st_size > 1000
    finally:
        attention.native_attention.cache_clear()


def test_a_kernel_that_computes_something_else_is_not_used(tmp_path, monkeypatch):
    import torch

    import generation.attention as attention

    tiers = _tiers()
    require(bool(tiers), "a CPU with AVX2 runs the kernel")
    native = _kernel(tiers[0], tmp_path)
    assert attention.native_attention_self_check(native) < 1e-4
    monkeypatch.setattr(
        attention.NativeAttention,
        "decode",
        lambda self, query, *a, **k: torch.zeros_like(query),
    )
    with pytest.raises(attention.NativeAttentionUnavailable, match="disagrees"):
        attention.native_attention_self_check(native)


def test_the_kernel_builds_for_avx2_where_pytorch_is_capped_to_it(monkeypatch):
    """``bench/generation.py --isa avx2`` caps PyTorch with ATEN_CPU_CAPABILITY; the kernel
    follows, so a capped run measures an AVX2-only CPU throughout."""
    import allthepatents.cpu
    from generation.attention import isa_tier

    avx512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"}
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: avx512 - {"avx512vl"})
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert isa_tier() == "avx2"  # the AVX-512 build uses VL: a CPU without it takes AVX2
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: avx512)
    assert isa_tier() == "avx512"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert isa_tier() == "avx2"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert isa_tier() == "none"
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"sse4_2"})
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert isa_tier() == "none"


def test_the_kernel_timing_behind_auto_is_real():
    """``auto`` picks the kernel's precisions by its own step timed against PyTorch's
    float32 (bf16) attention at the kl3m shape, and its int8 cache over its bf16 one by
    both read from memory; clear margins on either side must decide alike."""
    import generation.backends as backends

    require(bool(_tiers()), "a CPU with AVX2 runs the kernel")
    cached = (
        backends.cache_kernel_pays,
        backends.cache_kernel_beats_bf16,
        backends.cache_int8_pays,
    )
    for each in cached:
        each.cache_clear()
    try:
        kernel_ms = backends.attention_kernel_step_ms()
        fp32_ms, _ = backends.attention_step_ms()
        assert kernel_ms > 0 and fp32_ms > 0
        _decides_alike_on_clear_margins(
            backends.cache_kernel_pays(), kernel_ms, backends.CACHE_BF16_SHARE * fp32_ms
        )
        # The int8 cache against the bf16 one, each read from memory.
        bf16_memory, int8_memory = backends.attention_kernel_memory_ms()
        assert bf16_memory > 0 and int8_memory > 0
        int8 = backends.cache_int8_pays()
        _decides_alike_on_clear_margins(int8, int8_memory, backends.CACHE_INT8_SHARE * bf16_memory)
        # On AMX, the kernel (over the cache it takes) against PyTorch's bf16 attention.
        chosen_ms = backends.attention_kernel_step_ms(bits=8 if int8 else 16)
        _, bf16_ms = backends.attention_step_ms()
        _decides_alike_on_clear_margins(backends.cache_kernel_beats_bf16(), chosen_ms, bf16_ms)
    finally:
        for each in cached:
            each.cache_clear()


def _decides_alike_on_clear_margins(decided: bool, ms: float, bar: float):
    """A timing under half ``bar`` must have been taken, one over twice it not."""
    if ms < 0.5 * bar:
        assert decided
    if ms > 2 * bar:
        assert not decided


def test_the_kernel_rounds_the_cache_as_pytorch_does(tmp_path):
    """Keys and values written by the kernel are PyTorch's bf16 rounding bit for bit: ties
    to even, infinities, signed zeros, NaN kept a NaN."""
    import torch

    from generation.attention import bf16_layer_class

    tiers = _tiers()
    require(bool(tiers), "a CPU with AVX2 runs the kernel")
    native = _kernel(tiers[0], tmp_path)
    special = torch.tensor(
        [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.0e38, float("inf"), -0.0, 1e-40, 65504.0]
    )
    keys = torch.randn(2, 2, 3, 16)
    keys[0, 0, 0, :8] = special
    keys[1, 1, 2, 8:] = special
    values = keys.flip(-1).contiguous()
    kernel_layer, torch_layer = bf16_layer_class()(capacity=16), bf16_layer_class()(capacity=16)
    for layer, writer in ((kernel_layer, native), (torch_layer, None)):
        layer.lazy_initialization(keys)
        layer.write(keys, values, writer=writer)
    assert torch.equal(kernel_layer._k.view(torch.int16), torch_layer._k.view(torch.int16))
    assert torch.equal(kernel_layer._v.view(torch.int16), torch_layer._v.view(torch.int16))
    # A bf16 model's states (bf16-kv16) land as they are.
    bf16_layer = bf16_layer_class()(capacity=16)
    bf16_layer.lazy_initialization(keys.bfloat16())
    bf16_layer.write(keys.bfloat16(), values.bfloat16(), writer=native)
    assert torch.equal(kernel_layer._k.view(torch.int16), bf16_layer._k.view(torch.int16))
    assert torch.equal(kernel_layer._v.view(torch.int16), bf16_layer._v.view(torch.int16))
    keys[0, 0, 0, 0] = float("nan")
    nan_layer = bf16_layer_class()(capacity=16)
    nan_layer.lazy_initialization(keys)
    nan_layer.write(keys, values, writer=native)
    nan_layer.length = 3
    assert torch.isnan(nan_layer.dense()[0][0, 0, 0, 0])
