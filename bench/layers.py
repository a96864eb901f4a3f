"""One linear layer, one thread, each way the worker could compute it, side by side: ms a
call, whether a row's output is the same alone as in the batch, error against float32.
Run by hand (not in CI):

    .venv/bin/python bench/layers.py --shapes 768x32768,1024x32768,256x32768,1024x3072 --rows 16,64

fp32 and bf16 ``F.linear``; bf16 with the weights packed once for oneDNN
(``torch.ops.mkldnn._reorder_linear_weight``, what ``F.linear`` redoes every call); fbgemm's
dynamic int8 (one activation scale a tensor); the proof's per-row int8 (``torch._int_mm``);
the worker's int8 (fbgemm, each row scaled on its own, generation/quantization.py).

``--attention 256,512,1000`` also times one decoding step's attention over a KV cache of
that many positions (kl3m-002-170m's 12 heads of 64, ``--rows`` rows), float32 against
bf16, through ``scaled_dot_product_attention`` and through two matrix products: the cache's
element size decides a step at 1,024 tokens, and whether a bf16 cache reads faster depends
on the CPU. ``bf16_kernel`` and ``int8_kernel`` are the worker's compiled kernel over a
bf16 cache (``int8-kv16``, ``bf16-kv16``) and an int8 one (``int8-kv8``, ``bf16-kv8``;
generation/attention.py), where it builds; ``kernel_memory_ms`` is ``auto``'s timing of
both over caches four times the CPU's largest cache (what decides between them).
"""

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ms(fn) -> float:
    for _ in range(3):
        fn()
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < 0.4:
        fn()
        n += 1
    return round((time.perf_counter() - started) / n * 1e3, 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="768x32768,1024x32768,256x32768,1024x3072")
    parser.add_argument("--rows", default="16,64")
    parser.add_argument("--attention", default="", help="cache lengths, e.g. 256,512,1000")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    from torch.ao.quantization import quantize_dynamic

    from allthepatents.cpu import cpu_flags, cpu_model_name
    from generation.quantization import (
        bf16_packing_available,
        rows_int8_quantize,
        rows_scaled_int8_quantize,
    )

    torch.set_num_threads(1)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
    packable = bf16_packing_available()
    print(
        f"cpu: {cpu_model_name()} {flags}; one thread"
        + ("" if packable else "; oneDNN cannot pack bf16 weights here (no 'bf16 packed')"),
        flush=True,
    )
    torch.manual_seed(0)
    for shape in args.shapes.split(","):
        k, n = (int(x) for x in shape.split("x"))
        linear = torch.nn.Linear(k, n)
        w16, b16 = linear.weight.detach().bfloat16(), linear.bias.detach().bfloat16()
        ways = {
            "dynamic int8": quantize_dynamic(
                torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8
            )[0],
            "per-row int8 (_int_mm)": rows_int8_quantize(torch.nn.Sequential(linear))[0],
            "rows-scaled int8 (worker)": rows_scaled_int8_quantize(torch.nn.Sequential(linear))[0],
        }
        for m in (int(r) for r in args.rows.split(",")):
            x = torch.randn(m, k) * torch.rand(m, 1) * 5
            x16 = x.bfloat16()
            calls = {
                "fp32": lambda x=x, f=linear: f(x),
                "bf16": lambda x=x16, w=w16, b=b16: torch.nn.functional.linear(x, w, b),
                **{name: (lambda layer=layer, x=x: layer(x)) for name, layer in ways.items()},
            }
            # oneDNN packs bf16 weights only with AVX512BW/VL/DQ or AVX-NE-CONVERT.
            if packable:
                packed = torch.ops.mkldnn._reorder_linear_weight(w16, m)
                calls["bf16 packed"] = lambda x=x16, p=packed, b=b16: (
                    torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "")
                )
            row = {"shape": shape, "rows": m}
            with torch.no_grad():
                exact = linear(x)
                for name, fn in calls.items():
                    out = fn().float()
                    alone = (
                        torch.ops.mkldnn._linear_pointwise(x16[1:2], packed, b16, "none", [], "")
                        if name == "bf16 packed"
                        else torch.nn.functional.linear(x16[1:2], w16, b16)
                        if name == "bf16"
                        else linear(x[1:2])
                        if name == "fp32"
                        else ways[name](x[1:2])
                    ).float()
                    row[name] = {
                        "ms": _ms(fn),
                        "row_alone_same": bool(torch.equal(alone[0], out[1])),
                        "max_error": round(float((out - exact).abs().max() / exact.abs().max()), 4),
                    }
            print(json.dumps(row), flush=True)
    for length in (int(t) for t in args.attention.split(",") if t):
        for m in (int(r) for r in args.rows.split(",")):
            print(json.dumps(_attention_row(torch, rows=m, length=length)), flush=True)
    if args.attention:
        print(json.dumps(_kernel_memory_row()), flush=True)


def _kernel_memory_row() -> dict:
    """``auto``'s choice between the kernel's bf16 and int8 caches, and its timings."""
    _django_setup()
    from generation import backends
    from generation.attention import NativeAttentionUnavailable, native_attention

    try:
        native_attention()
    except NativeAttentionUnavailable as exc:
        return {"kernel_memory_ms": {"unavailable": str(exc)}}
    bf16_ms, int8_ms = backends.attention_kernel_memory_ms()
    return {
        "kernel_memory_ms": {"bf16": round(bf16_ms, 3), "int8": round(int8_ms, 3)},
        "int8_share": round(int8_ms / bf16_ms, 2),
        "auto_takes_int8": backends.cache_int8_pays(),
    }


def _attention_row(torch, *, rows: int, length: int, heads: int = 12, width: int = 64) -> dict:
    sdpa = torch.nn.functional.scaled_dot_product_attention
    row = {"attention_positions": length, "rows": rows}
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.randn(rows, heads, 1, width, dtype=dtype)
        # A view of preallocated buffers, as the worker's cache hands attention.
        k = torch.randn(rows, heads, length + 64, width, dtype=dtype)[:, :, :length]
        v = torch.randn(rows, heads, length + 64, width, dtype=dtype)[:, :, :length]

        def products(q=q, k=k, v=v):
            weights = torch.matmul(q, k.transpose(-1, -2)) * width**-0.5
            return torch.matmul(weights.softmax(-1), v)

        with torch.no_grad():
            sdpa_ms = _ms(lambda q=q, k=k, v=v: sdpa(q, k, v))
            gb = 2 * k.numel() * k.element_size() / 1e9
            row[str(dtype).removeprefix("torch.")] = {
                "sdpa_ms": sdpa_ms,
                "matmul_ms": _ms(products),
                "sdpa_cache_gb_s": round(gb / (sdpa_ms / 1e3), 1),
            }
    for bits, name in ((16, "bf16_kernel"), (8, "int8_kernel")):
        row[name] = _kernel_row(
            torch, bits=bits, rows=rows, length=length, heads=heads, width=width
        )
    return row


def _kernel_row(torch, *, bits: int, rows: int, length: int, heads: int, width: int) -> dict:
    _django_setup()
    from generation.attention import (
        NativeAttentionUnavailable,
        isa_tier,
        kernel_cache_random,
        native_attention,
    )

    try:
        native = native_attention()
    except NativeAttentionUnavailable as exc:
        return {"unavailable": str(exc)}
    layer = kernel_cache_random(bits=bits, rows=rows, heads=heads, length=length, dim=width)
    query = torch.randn(rows, heads, width)
    start = torch.zeros(rows, dtype=torch.int32)
    ms = _ms(lambda: native.decode(query, layer, start, scale=0.125))
    gb = sum(buffer.numel() * buffer.element_size() for buffer in layer.buffers()) / 1e9
    return {"isa": isa_tier(), "ms": ms, "cache_gb_s": round(gb / (ms / 1e3), 1)}


@functools.cache
def _django_setup() -> None:
    """The kernel builds into DATA_DIR, which the settings give."""
    import os
    import tempfile

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-layers-"))
    import django

    django.setup()


if __name__ == "__main__":
    main()
