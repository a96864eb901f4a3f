"""Generation throughput on a random-weight model of the exact kl3m-002-170m-patent shape.

Run by hand (not in CI):

    .venv/bin/python bench/generation.py --tokens 1024 --batch 16
    .venv/bin/python bench/generation.py --skip a,b,c-fp32 --threads 1 --processes 1,2

``--processes`` runs (c) int8 in that many processes at once (one worker each, as when
adding workers on one machine) and prints their total tokens/s.

``--isa avx2`` runs everything as on a CPU with AVX2 and no AVX-512: PyTorch's kernels,
oneDNN, MKL and fbgemm are each capped by their own variable (ISA_CAPS), the process
re-executed with them set. It stands in for an AVX2-only machine when none is at hand: the
instruction set is that of one, the cores, caches and memory are this machine's.

(a) the model card's recipe: pipeline('text-generation'), do_sample, temperature 0.5,
    num_return_sequences=3, with the shipped generation config (KV cache off);
(b) the same with the KV cache on;
(c) this worker's path: generation.backends.TransformersBackend (batched, left padding,
    KV cache preallocated per batch, per-sample seeds, dynamic int8 on CPU).
Lengths are forced (min_new_tokens) so that random weights don't stop early.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-gen-"))

# Each library reads its own cap once, when it loads: they must be set before torch is
# imported, so --isa re-executes the bench with them.
ISA_CAPS = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    }
}


def isa_cap(isa: str) -> None:
    """Re-executes this bench with the libraries capped to ``isa`` (once: the caps in the
    environment mark the second run)."""
    caps = ISA_CAPS[isa]
    if all(os.environ.get(k) == v for k, v in caps.items()):
        return
    os.environ.update(caps)
    os.execv(sys.executable, [sys.executable, *sys.argv])


def build_full_size(out: Path, source: Path) -> Path:
    import shutil

    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    data = json.loads((source / "config.json").read_text())
    data.pop("_name_or_path", None)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**data))
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M")
    model.save_pretrained(out)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ):
        shutil.copy(source / name, out / name)
    return out


def run_pipeline(model_dir: Path, tokens: int, use_cache: bool) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.use_cache = use_cache
    pipe = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    started = time.perf_counter()
    out = pipe(
        "# Patent\n\n## Title",
        do_sample=True,
        temperature=0.5,
        num_return_sequences=3,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        use_cache=use_cache,
        pad_token_id=tok.pad_token_id,
    )
    took = time.perf_counter() - started
    assert len(out) == 3
    return 3 * tokens / took


def run_worker_path(
    model_dir: Path, tokens: int, batch: int, quantize: str, profile: bool = False
) -> float:
    import django

    django.setup()
    from generation.backends import TransformersBackend
    from generation.sampling import SamplingParams

    backend = TransformersBackend(str(model_dir), quantize=quantize)
    prompts = ["# Patent\n\n## Title", "# Patent\n\n## Claims"] * (batch // 2) + (
        ["# Patent\n\n## Title"] if batch % 2 else []
    )
    params = SamplingParams(temperature=0.5, max_new_tokens=tokens, min_new_tokens=tokens)
    import contextlib

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    # Where the time goes (attention against linears against copies), at some profiler cost.
    ctx = torch_profile(activities=[ProfilerActivity.CPU]) if profile else contextlib.nullcontext()
    with ctx as prof:
        started = time.perf_counter()
        outs = backend.generate(prompts, list(range(batch)), params)
        took = time.perf_counter() - started
    if profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    return sum(o.tokens for o in outs) / took


def _worker_process(model_dir: str, tokens: int, batch: int, threads: int, quantize: str) -> float:
    import torch

    os.environ["TORCH_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return run_worker_path(Path(model_dir), tokens, batch, quantize)


def run_processes(
    model_dir: Path, tokens: int, batch: int, threads: int, n: int, quantize: str = "int8"
) -> dict:
    """(c) in ``n`` processes at once (int8, or the precision given): their summed rate and
    the wall-clock rate."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ctx.Pool(n) as pool:
        rates = pool.starmap(
            _worker_process, [(str(model_dir), tokens, batch, threads, quantize)] * n
        )
    wall = time.perf_counter() - started
    return {
        "precision": quantize,
        "processes": n,
        "threads_each": threads,
        "tok_s_total": round(sum(rates), 1),
        "tok_s_each": [round(r, 1) for r in rates],
        "wall_s_with_load": round(wall, 1),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--source", type=Path, default=ROOT.parent / "shared" / "models" / "kl3m-002-170m-patent"
    )
    parser.add_argument("--skip", default="", help="comma list of a,b,c,c-fp32,c-bf16 to skip")
    parser.add_argument("--profile", action="store_true", help="op table for each (c) run")
    parser.add_argument("--processes", default="", help="e.g. 1,2: (c) int8 in parallel processes")
    parser.add_argument(
        "--process-threads", type=int, help="threads in each of --processes (default --threads)"
    )
    parser.add_argument(
        "--process-precision",
        default="int8",
        help="precision of each of --processes: int8, int8-kv16, int8-kv8, int8-bf16, bf16, "
        "bf16-kv16, bf16-kv8, none, or auto (the worker's pick); a list (int8,int8-kv16) runs "
        "each in turn",
    )
    parser.add_argument(
        "--isa", choices=sorted(ISA_CAPS), help="run as on a CPU with this instruction set only"
    )
    args = parser.parse_args()
    if args.isa:
        isa_cap(args.isa)
    os.environ["TORCH_THREADS"] = str(args.threads)
    import torch

    from allthepatents.cpu import cpu_flags, cpu_model_name
    from generation.attention import isa_tier, native_attention_available
    from generation.backends import generation_precision

    # auto times attention in the thread count of the process that asks (the kernel runs on
    # one thread; PyTorch's attention on all): resolved as the workers run, then kept.
    worker_threads = (args.process_threads or args.threads) if args.processes else args.threads
    torch.set_num_threads(worker_threads)
    auto = generation_precision("auto")
    torch.set_num_threads(args.threads)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"})
    kernel = isa_tier() if native_attention_available() else "unavailable"
    capped = {k: os.environ[k] for k in ISA_CAPS["avx2"] if k in os.environ}
    print(
        f"cpu: {cpu_model_name()} {flags}; GENERATION_QUANTIZE=auto picks {auto} (timed at "
        f"{worker_threads} thread(s), as the workers); torch kernels: "
        f"{torch.backends.cpu.get_cpu_capability()}"
        f"; attention kernel: {kernel}" + (f"; capped: {capped}" if capped else ""),
        flush=True,
    )
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_full_size(Path(tmp) / "model", args.source)
        results = {}
        if "a" not in skip:
            results["a_pipeline_cache_off"] = run_pipeline(model_dir, args.tokens, False)
            print(f"(a) {results['a_pipeline_cache_off']:.1f} tok/s", flush=True)
        if "b" not in skip:
            results["b_pipeline_cache_on"] = run_pipeline(model_dir, args.tokens, True)
            print(f"(b) {results['b_pipeline_cache_on']:.1f} tok/s", flush=True)
        if "c-fp32" not in skip:
            results["c_worker_fp32"] = run_worker_path(
                model_dir, args.tokens, args.batch, "none", profile=args.profile
            )
            print(f"(c fp32) {results['c_worker_fp32']:.1f} tok/s", flush=True)
        if "c-bf16" not in skip:
            results["c_worker_bf16"] = run_worker_path(
                model_dir, args.tokens, args.batch, "bf16", profile=args.profile
            )
            print(f"(c bf16) {results['c_worker_bf16']:.1f} tok/s", flush=True)
        if "c" not in skip:
            results["c_worker_int8"] = run_worker_path(
                model_dir, args.tokens, args.batch, "int8", profile=args.profile
            )
            print(f"(c int8) {results['c_worker_int8']:.1f} tok/s", flush=True)
        for n in [int(x) for x in args.processes.split(",") if x]:
            threads = args.process_threads or args.threads
            for choice in args.process_precision.split(","):
                precision = auto if choice == "auto" else choice
                row = run_processes(model_dir, args.tokens, args.batch, threads, n, precision)
                print(json.dumps(row), flush=True)
                results[f"c_{precision}_{n}x{threads}_threads"] = row["tok_s_total"]
    base = results.get("b_pipeline_cache_on")
    for name, value in results.items():
        ratio = f"  {value / base:.1f}x (b)" if base else ""
        print(f"{name:24s} {value:8.1f} tok/s{ratio}")
    print(
        json.dumps({"tokens": args.tokens, "batch": args.batch, "threads": args.threads, **results})
    )


if __name__ == "__main__":
    main()
