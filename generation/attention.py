"""The worker's KV cache in bf16 or int8, read by a compiled kernel (``int8-kv16``,
``int8-kv8``; ``bf16-kv16``, ``bf16-kv8``: the bf16 model's attention, on AMX).

At 1,024 tokens a decoding step's attention reads every row's whole cache, and on CPUs
without AMX that read is most of a step. PyTorch's attention reads a bf16 cache 3-6 times
slower than a float32 one there (an AMD EPYC; AVX2 only), so halving the bytes did not
pay. ``kernels/attention.c`` widens bf16 in registers and reads the cache in tiles
laid out for that (bench/README.md). Once that read runs as fast as memory delivers, the
int8 cache (a scale a position and head's vector) halves the bytes again. The kernel is
compiled once per machine with the C compiler at hand, into DATA_DIR, and checked against
PyTorch's attention (and its writes against PyTorch's) before it is used; where
there is no compiler, or the check fails, ``native_attention()`` says why and the worker
keeps PyTorch's attention over a float32 cache (``int8``; plain ``bf16`` on AMX).

The prompt's first forward pass (several positions at once) goes through PyTorch's
attention over the same cache values, widened: only decoding steps take the kernel.
"""

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "kernels" / "attention.c"
NAME = "native_kv"
TILE = 16  # positions a key tile holds; the cache's capacity is a multiple of it


class NativeAttentionUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message says why."""


def isa_tier() -> str:
    """The instruction set the kernel is built for: ``avx512`` or ``avx2`` from the CPU's
    flags, lowered to ``avx2`` where PyTorch itself is capped to it (ATEN_CPU_CAPABILITY,
    as ``bench/generation.py --isa avx2`` does), or ``none``."""
    from allthepatents.cpu import cpu_flags

    flags = cpu_flags()
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if cap == "default":
        return "none"
    if cap != "avx2" and AVX512_NEEDS <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "none"


# The AVX-512 build is compiled with these extensions; a CPU lacking one gets the AVX2 build.
AVX512_NEEDS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})
ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"],
    "avx2": ["-mavx2", "-mfma"],
}
LANES = {"avx512": 16, "avx2": 8}


def _compiler() -> str | None:
    """CC where set (and then only it), else the compiler Python was built with, cc, gcc."""
    wanted = os.environ.get("CC", "").split()
    if wanted:
        return shutil.which(wanted[0])
    built_with = (sysconfig.get_config_var("CC") or "").split()
    for candidate in [*built_with[:1], "cc", "gcc"]:
        if found := shutil.which(candidate):
            return found
    return None


def kernel_build(*, isa: str, directory: Path) -> Path:
    """The shared library for ``isa``, compiled once into ``directory`` (named by the
    source's hash and the flags, so a changed source or CPU tier builds afresh; written to
    a temporary name and renamed, so workers starting together never load half a file)."""
    if isa not in ISA_FLAGS:
        raise NativeAttentionUnavailable(f"no kernel for this CPU (instruction set {isa!r})")
    flags = ["-O3", "-shared", "-fPIC", *ISA_FLAGS[isa]]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:16]
    target = directory / f"attention-{isa}-{digest}.so"
    if target.exists():
        return target
    compiler = _compiler()
    if compiler is None:
        where = f"CC={os.environ['CC']!r} not found" if os.environ.get("CC") else "none on PATH"
        raise NativeAttentionUnavailable(f"no C compiler ({where}; set CC, or install gcc)")
    directory.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, suffix=".so.partial")
    os.close(fd)
    try:
        done = subprocess.run(  # noqa: S603 (the compiler found on PATH, our own source)
            [compiler, *flags, "-o", partial, str(SOURCE), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise NativeAttentionUnavailable(
                f"{compiler} could not build {SOURCE.name}: {done.stderr.strip()[:400]}"
            )
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeAttentionUnavailable(f"{compiler} could not run: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


class NativeAttention:
    """The loaded kernel: ``decode`` computes one step's attention for every row."""

    def __init__(self, path: Path, *, isa: str):
        import ctypes

        self.path, self.isa = path, isa
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeAttentionUnavailable(f"cannot load {path}: {exc}") from exc
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        lib.attention_decode.restype = integer
        lib.attention_decode.argtypes = [*[pointer] * 4, *[integer] * 5, ctypes.c_float, pointer]
        lib.cache_write.restype = None
        lib.cache_write.argtypes = [*[pointer] * 4, *[integer] * 5, pointer, pointer]
        lib.attention_decode_i8.restype = integer
        lib.attention_decode_i8.argtypes = [
            *[pointer] * 6,
            *[integer] * 5,
            ctypes.c_float,
            pointer,
        ]
        lib.cache_write_i8.restype = None
        lib.cache_write_i8.argtypes = [*[pointer] * 4, *[integer] * 5, *[pointer] * 4]
        lib.attention_lanes.restype = ctypes.c_int
        if lib.attention_lanes() != LANES[isa]:
            raise NativeAttentionUnavailable(
                f"{path.name} was built without its vector path ({lib.attention_lanes()} lanes)"
            )
        self._lib = lib

    def write(self, key, value, layer, *, at: int) -> None:
        """One position's ``key`` and ``value`` (float32, (rows, heads, dim), the last
        dimension contiguous) into ``layer``'s buffers at position ``at``: rounded to bf16
        as ``Tensor.to(torch.bfloat16)`` rounds, or quantised to int8 as ``int8_quantize``
        does."""
        import ctypes

        rows, heads, dim = key.shape
        strides = (ctypes.c_long * 2)(*key.stride()[:2]), (ctypes.c_long * 2)(*value.stride()[:2])
        shape = (key.data_ptr(), value.data_ptr(), *strides, rows, heads, dim, layer.capacity, at)
        buffers = [buffer.data_ptr() for buffer in layer.buffers()]
        if layer.bits == 8:
            self._lib.cache_write_i8(*shape, *buffers)
        else:
            self._lib.cache_write(*shape, *buffers)

    def decode(self, query, layer, start, *, scale: float):
        """``query`` float32 (rows, heads, dim) over ``layer``'s first ``layer.length``
        positions; ``start`` int32 (rows,): each row's first position. Returns float32
        (rows, heads, dim)."""
        import torch

        rows, heads, dim = query.shape
        query = query.contiguous()
        out = torch.empty(rows, heads, dim, dtype=torch.float32)
        function = self._lib.attention_decode_i8 if layer.bits == 8 else self._lib.attention_decode
        failed = function(
            query.data_ptr(),
            *[buffer.data_ptr() for buffer in layer.buffers()],
            start.data_ptr(),
            rows,
            heads,
            dim,
            layer.capacity,
            layer.length,
            scale,
            out.data_ptr(),
        )
        if failed:
            raise ValueError(
                f"attention kernel: shape outside its range (dim {dim}, length {layer.length})"
            )
        return out


def native_attention_self_check(native: NativeAttention) -> float:
    """The kernel's largest difference from PyTorch's attention over the same cache
    values (bf16 and int8), on random rows with left padding and a length that is no
    multiple of a tile; raises where the kernel writes either cache otherwise than PyTorch
    does, or its attention is not within float32 noise (a build that computes something
    else)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    rows, heads, length, dim = 3, 2, 37, 64
    keys = torch.randn(rows, heads, length, dim, generator=generator)
    values = torch.randn(rows, heads, length, dim, generator=generator)
    query = torch.randn(rows, heads, 1, dim, generator=generator)
    start = torch.tensor([0, 5, 17], dtype=torch.int32)
    mask = (torch.arange(length)[None, :] >= start[:, None].long())[:, None, None, :]
    worst = 0.0
    for layer_class in (bf16_layer_class(), int8_layer_class()):
        layer, by_torch = layer_class(capacity=48), layer_class(capacity=48)
        for each, writer in ((layer, native), (by_torch, None)):
            each.lazy_initialization(keys)
            each.write(keys, values, writer=writer)
            each.length = length
        if not all(map(torch.equal, layer.buffers(), by_torch.buffers())):
            raise NativeAttentionUnavailable(
                f"{native.path.name} writes the {layer_class.kind} cache other than PyTorch "
                "does; not used"
            )
        got = native.decode(query[:, :, 0], layer, start, scale=dim**-0.5)
        dense_keys, dense_values = layer.dense()
        want = torch.nn.functional.scaled_dot_product_attention(
            query, dense_keys, dense_values, attn_mask=mask
        )[:, :, 0]
        error = float((got - want).abs().max())
        if not error < 1e-4:
            raise NativeAttentionUnavailable(
                f"{native.path.name} disagrees with PyTorch's attention over the "
                f"{layer_class.kind} cache (largest difference {error:.3g}); not used"
            )
        worst = max(worst, error)
    return worst


@functools.cache
def native_attention() -> NativeAttention:
    """The kernel for this CPU, built, loaded and checked once a process; raises
    ``NativeAttentionUnavailable`` saying why not."""
    from django.conf import settings

    isa = isa_tier()
    directory = Path(settings.DATA_DIR) / "kernels"
    path = kernel_build(isa=isa, directory=directory)
    try:
        native = NativeAttention(path, isa=isa)
    except NativeAttentionUnavailable:
        # A damaged build (a disk that filled up, a copy from another CPU): once afresh.
        path.unlink(missing_ok=True)
        native = NativeAttention(kernel_build(isa=isa, directory=directory), isa=isa)
    native_attention_self_check(native)
    attention_register()
    return native


def native_attention_available() -> bool:
    try:
        native_attention()
    except NativeAttentionUnavailable as exc:
        log.info("bf16 attention kernel unavailable: %s", exc)
        return False
    return True


@functools.cache
def attention_register() -> None:
    """Makes ``NAME`` an attention implementation transformers' models can be set to."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, kernel_cache_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def kernel_takes(dim: int) -> bool:
    """Head sizes the kernel computes; other models' steps go through PyTorch."""
    return dim % 16 == 0 and dim <= 256


def kernel_cache_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """transformers' attention function for a kernel cache layer (bf16 or int8): a
    decoding step (one query position) through the kernel; anything else through
    PyTorch's attention over the cache's values widened to float32. The query, float32 or
    bf16 (``bf16-kv16``, ``bf16-kv8``), is widened too, and the result comes back in its
    dtype."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layer = getattr(key, "kernel_layer", None)
    dim = query.shape[-1]
    scale = scaling if scaling is not None else dim**-0.5
    if layer is not None and query.shape[2] == 1 and kernel_takes(dim):
        out = native_attention().decode(
            query[:, :, 0].float(),
            layer,
            rows_start(attention_mask, rows=query.shape[0]),
            scale=scale,
        )
        return out.to(query.dtype)[:, None], None
    dtype = query.dtype
    if layer is not None:
        # In float32 as the kernel computes, whatever the model's dtype (a bf16 model's too).
        key, value = layer.dense()
        query = query.float()
    out, weights = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scale, **kwargs
    )
    return out.to(dtype), weights


_start_memo: list = [None, None]


def rows_start(attention_mask, *, rows: int):
    """Each row's first attended position (int32): left padding only, as the backend pads.
    Every layer of a step gets the same mask object, so it is read once a step."""
    import torch

    known = _start_memo[1]
    if known is not None and _start_memo[0] is attention_mask and len(known) == rows:
        return _start_memo[1]
    if attention_mask is None:  # no row padded
        _start_memo[:] = [None, torch.zeros(rows, dtype=torch.int32)]
        return _start_memo[1]
    allowed = attention_mask[:, 0, -1, :]
    # A bool mask allows True; an additive one allows 0.
    allowed = allowed if allowed.dtype == torch.bool else allowed == 0
    start = allowed.to(torch.int8).argmax(-1).to(torch.int32)
    _start_memo[:] = [attention_mask, start]
    return start


def _written_by_kernel(key_states, value_states):
    """The kernel, where it can write these states (float32, or bf16 that it widens first,
    with contiguous head rows; the kernel built); else None, and PyTorch writes them."""
    import torch

    for states in (key_states, value_states):
        if states.dtype not in (torch.float32, torch.bfloat16) or states.stride(-1) != 1:
            return None
    try:
        return native_attention()
    except NativeAttentionUnavailable:
        return None


def kernel_cache_random(*, bits: int, rows: int, heads: int, length: int, dim: int, generator=None):
    """A kernel cache layer (``bits`` 16: bf16, 8: int8) holding ``length`` positions of
    random keys and values: what the kernel's timings (``auto``'s and the benches') read."""
    import torch

    layer = kernel_layer_class(bits=bits)(capacity=length)
    layer.lazy_initialization(torch.zeros(rows, heads, 1, dim))
    for (name, _), buffer in zip(layer.BUFFERS, layer.buffers(), strict=True):
        if buffer.dtype == torch.int8:
            buffer.copy_(torch.randint(-127, 128, buffer.shape, generator=generator))
        elif name.endswith("_scale"):  # a vector's largest magnitude / 127
            buffer.copy_(torch.rand(buffer.shape, generator=generator) * (4 / 127))
        else:
            buffer.copy_(torch.randn(buffer.shape, generator=generator))
    layer.length = length
    return layer


def kernel_layer_class(*, bits: int):
    """The cache layer class holding keys and values in ``bits`` (16: bf16, 8: int8)."""
    if bits not in (8, 16):
        raise ValueError(f"a kernel cache holds 8 or 16 bits, not {bits}")
    return int8_layer_class() if bits == 8 else bf16_layer_class()


@functools.cache
def _kernel_layer_base():
    """What the bf16 and int8 cache layers share: transformers' cache layer with buffers
    sized for the whole generation (as ``sampling.kv_cache_preallocated``), written a
    position at a time through the kernel (or PyTorch where it cannot), whose keys view
    tells the attention function which layer it reads."""
    import torch

    from generation.sampling import preallocated_layer_class

    class KernelCacheLayer(preallocated_layer_class()):
        bits = 0
        kind = ""
        # The tensors the kernel reads and writes, in its arguments' order: each one's
        # attribute, and how many positions one index of its third axis holds.
        BUFFERS: tuple[tuple[str, int], ...] = ()

        def __init__(self, *, capacity: int):
            super().__init__(capacity=-(-capacity // TILE) * TILE)

        def buffers(self):
            return tuple(getattr(self, name) for name, _ in self.BUFFERS)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            count = key_states.shape[-2]
            end = self.length + count
            if end > self.capacity:
                raise RuntimeError(f"KV cache full: {end} > {self.capacity} positions")
            self.write(
                key_states, value_states, writer=_written_by_kernel(key_states, value_states)
            )
            self.length = end
            # transformers hands these to the attention function: it finds the layer on them.
            keys = self._k[:, :, :0]
            keys.kernel_layer = self
            self.keys, self.values = keys, self._v[:, :, :0]
            return keys, self.values

        def write(self, key_states, value_states, *, writer=None):
            """States (rows, heads, positions, dim) into the places after ``length``,
            through ``writer`` (a ``NativeAttention``) or, where None, PyTorch."""
            for i in range(key_states.shape[2]):
                at = self.length + i
                if writer is not None:
                    # A bf16 model's states widen exactly; the kernel's rounding keeps them.
                    writer.write(
                        key_states[:, :, i].float(), value_states[:, :, i].float(), self, at=at
                    )
                else:
                    self.position_write(key_states[:, :, i], value_states[:, :, i], at=at)

        def position_write(self, key, value, *, at: int):
            """PyTorch's write of one position's ``key`` and ``value`` (rows, heads, dim)."""
            raise NotImplementedError

        def batch_select_indices(self, indices):
            # As PreallocatedLayer: only rows whose place changes move, and only their
            # filled positions.
            if self.is_initialized:
                rows = len(indices)
                indices = torch.as_tensor(indices)
                moved = (indices != torch.arange(rows)).nonzero()[:, 0]
                source = indices[moved]
                for name, positions in self.BUFFERS:
                    buffer = getattr(self, name)
                    if len(moved):
                        filled = slice(0, -(-self.length // positions))
                        buffer[moved, :, filled] = buffer[source, :, filled]
                    setattr(self, name, buffer[:rows])
                self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]

    return KernelCacheLayer


@functools.cache
def bf16_layer_class():
    """A cache layer holding keys and values in bf16, in the kernel's layouts: keys in
    tiles of 16 positions, two dimensions a 32-bit lane; values two positions a lane."""
    import torch

    class Bf16CacheLayer(_kernel_layer_base()):
        bits, kind = 16, "bf16"
        BUFFERS = (("_k", TILE), ("_v", 2))

        def lazy_initialization(self, key_states, value_states=None):
            self.dtype, self.device = key_states.dtype, key_states.device
            rows, heads, _, dim = key_states.shape
            if dim % 2:
                raise ValueError(f"bf16 cache: head size {dim} is odd")
            # Zeroed: the odd last value pair's unused half is read (with weight 0).
            self._k = torch.zeros(
                rows, heads, self.capacity // TILE, dim // 2, TILE, 2, dtype=torch.bfloat16
            )
            self._v = torch.zeros(rows, heads, self.capacity // 2, dim, 2, dtype=torch.bfloat16)
            self.is_initialized = True

        def position_write(self, key, value, *, at: int):
            rows, heads, dim = key.shape
            self._k[:, :, at // TILE, :, at % TILE, :] = key.reshape(rows, heads, dim // 2, 2)
            self._v[:, :, at // 2, :, at % 2] = value

        def dense(self):
            """Keys and values as float32 (rows, heads, length, dim)."""
            rows, heads, tiles, half, _, _ = self._k.shape
            keys = self._k.permute(0, 1, 2, 4, 3, 5).reshape(rows, heads, tiles * TILE, half * 2)
            values = self._v.permute(0, 1, 2, 4, 3).reshape(rows, heads, -1, half * 2)
            return keys[:, :, : self.length].float(), values[:, :, : self.length].float()

    return Bf16CacheLayer


@functools.cache
def int8_layer_class():
    """A cache layer holding keys and values in int8, each position and head's vector with
    a float32 scale (its largest magnitude / 127): half the bf16 cache's bytes for the
    kernel to read. Keys in tiles of 16 positions, one dimension 16 bytes; values a
    position's dimensions in a row (``kernels/attention.c``)."""
    import torch

    class Int8CacheLayer(_kernel_layer_base()):
        bits, kind = 8, "int8"
        BUFFERS = (("_k", TILE), ("_v", 1), ("_k_scale", 1), ("_v_scale", 1))

        def lazy_initialization(self, key_states, value_states=None):
            self.dtype, self.device = key_states.dtype, key_states.device
            rows, heads, _, dim = key_states.shape
            # Zeroed: a tile's places past the length are read (their scores then masked).
            self._k = torch.zeros(rows, heads, self.capacity // TILE, dim, TILE, dtype=torch.int8)
            self._v = torch.zeros(rows, heads, self.capacity, dim, dtype=torch.int8)
            self._k_scale = torch.zeros(rows, heads, self.capacity)
            self._v_scale = torch.zeros(rows, heads, self.capacity)
            self.is_initialized = True

        def position_write(self, key, value, *, at: int):
            for states, scales, place in (
                (key.float(), self._k_scale, self._k[:, :, at // TILE, :, at % TILE]),
                (value.float(), self._v_scale, self._v[:, :, at]),
            ):
                quantized, scale = int8_quantize(states)
                place.copy_(quantized)
                scales[:, :, at] = scale

        def dense(self):
            """Keys and values as float32 (rows, heads, length, dim): each int8 vector
            times its scale."""
            rows, heads, tiles, dim, _ = self._k.shape
            keys = self._k.transpose(3, 4).reshape(rows, heads, tiles * TILE, dim)
            length = self.length
            keys = keys[:, :, :length].float() * self._k_scale[:, :, :length, None]
            values = self._v[:, :, :length].float() * self._v_scale[:, :, :length, None]
            return keys, values

    return Int8CacheLayer


def int8_quantize(states):
    """``states`` (..., dim) float32 as int8 with a scale a vector: its largest magnitude
    / 127, each element divided by it and rounded to nearest even (a vector of zeros: all
    0, scale 0). The kernel's ``cache_write_i8`` computes the same, bit for bit."""
    import torch

    scale = states.abs().amax(-1) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    quantized = (states / safe[..., None]).round().clamp(-127, 127)
    quantized = torch.where(scale[..., None] > 0, quantized, torch.zeros_like(quantized))
    return quantized.to(torch.int8), scale
