"""Proof of sampling (#18): false rejects on genuine samples, detection of edited and
foreign texts, and the check's cost against generating the same text.

    .venv/bin/python bench/proof.py --model var/models/demo --samples 32 --tokens 256
    .venv/bin/python bench/proof.py --model var/models/demo --other OTHER_MODEL_DIR
    .venv/bin/python bench/proof.py --full-size --checker bf16 --paths bf16,int8 \
        --samples 16 --tokens 256 --repeat 3   # the cost ratio

Genuine samples come from the worker's own paths (fp32, dynamic int8, bf16; 16 at a time,
GENERATION_BATCH_SIZE); each is checked by one forward pass of the --checker model
(generation/proof.py; the site checks in bf16 wherever the CPU has it). Both sides are
warmed first, then timed in alternation --repeat times; the share is the ratio of the
medians. Edited: one word in 20 replaced by another word of the same text. Foreign
(--other): samples of another model with the same tokenizer, checked as if they came from
--model.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-proof-"))


def edit_one_word_in_20(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    if len(words) < 2:
        return text + " edited"
    for i in range(0, len(words), 20):
        j = min(len(words) - 1, i + rng.randrange(20))
        words[j] = rng.choice([w for w in words if w != words[j]] or ["widget"])
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a trained model directory")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="random weights of the exact kl3m-002-170m-patent shape (for the cost ratio)",
    )
    parser.add_argument("--other", help="a second model with the same tokenizer")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument(
        "--batch",
        type=int,
        default=16,
        help="samples generated together (the site's worker: GENERATION_BATCH_SIZE, 16)",
    )
    parser.add_argument("--group", type=int, default=8, help="samples per proof forward pass")
    parser.add_argument(
        "--repeat", type=int, default=1, help="time generation and proof this many times each"
    )
    parser.add_argument("--tolerance", type=float, default=None)
    parser.add_argument(
        "--paths", default="fp32,int8", help="generation paths: fp32,int8,int8-rows,bf16"
    )
    parser.add_argument(
        "--checker",
        default="none",
        help="the checking model's precision: none (fp32), bf16, int8-rows (the site's int8)",
    )
    args = parser.parse_args()
    import django

    django.setup()
    import torch

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    import dataclasses

    from allthepatents.cpu import cpu_flags, cpu_model_name
    from generation.backends import TransformersBackend
    from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
    from generation.proof import PROOF_RULE, samples_proof_check
    from generation.sampling import SamplingParams

    rule = PROOF_RULE
    if args.tolerance is not None:
        rule = dataclasses.replace(rule, draw_tolerance=args.tolerance)
    tolerance = rule.draw_tolerance
    if args.full_size:
        from bench.generation import build_full_size

        source = ROOT.parent / "shared" / "models" / "kl3m-002-170m-patent"
        args.model = str(build_full_size(Path(tempfile.mkdtemp()) / "model", source))
    if not args.model:
        parser.error("--model or --full-size")
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(f"cpu: {cpu_model_name()} {flags}; tolerance {tolerance}", flush=True)
    checker = TransformersBackend(args.model, quantize=args.checker)
    params = SamplingParams(max_new_tokens=args.tokens)
    prompts = [KL3M_TOP_DOWN, KL3M_BOTTOM_UP] * (args.samples // 2)
    rng = random.Random(7)
    report = {"tolerance": tolerance, "tokens": args.tokens}

    seeds = list(range(len(prompts)))

    def generate(backend):
        outs, seconds = [], 0.0
        for start in range(0, len(prompts), args.batch):
            chunk = prompts[start : start + args.batch]
            t0 = time.perf_counter()
            outs += backend.generate(chunk, seeds[start : start + len(chunk)], params)
            seconds += time.perf_counter() - t0
        return outs, seconds

    def check(outs, texts=None):
        samples = []
        for i, out in enumerate(outs):
            ids = out.token_ids
            if texts is not None:
                ids = checker.tokenizer(texts[i], add_special_tokens=False)["input_ids"]
            samples.append((ids, out.finished))
        return samples_proof_check(
            backend=checker,
            prompts=prompts,
            seeds=seeds,
            samples=samples,
            params=params,
            rule=rule,
            group=args.group,
        )

    for path in args.paths.split(","):
        backend = TransformersBackend(args.model, quantize="none" if path == "fp32" else path)
        # Warm both sides first (kernels picked and weights paged in on first use), as on a
        # worker that has been running; then alternate them, --repeat times, and compare
        # medians: this machine's speed drifts by 10-20 % from minute to minute.
        backend.generate(prompts[:2], [0, 1], SamplingParams(max_new_tokens=4, min_new_tokens=4))
        warm = [(list(range(3, 3 + args.tokens)), False)] * min(args.group, len(prompts))
        samples_proof_check(
            backend=checker,
            prompts=prompts[: len(warm)],
            seeds=seeds[: len(warm)],
            samples=warm,
            params=params,
        )
        gen_times, proof_times = [], []
        for _ in range(args.repeat):
            outs, gen_seconds = generate(backend)
            genuine = check(outs)
            gen_times.append(gen_seconds)
            proof_times.append(sum(r.seconds for r in genuine))
        edited = check(outs, [edit_one_word_in_20(o.text, rng) for o in outs])
        gen_seconds, proof_seconds = statistics.median(gen_times), statistics.median(proof_times)
        report[path] = {
            "samples": len(outs),
            "false_reject_rate": round(sum(not r.ok for r in genuine) / len(genuine), 4),
            "worst_genuine_excess": max(r.worst_excess for r in genuine),
            "edited_detection_rate": round(sum(not r.ok for r in edited) / len(edited), 4),
            "generation_seconds": [round(x, 2) for x in gen_times],
            "proof_seconds": [round(x, 2) for x in proof_times],
            "proof_cost_share": round(proof_seconds / gen_seconds, 4),
        }
        print(json.dumps({path: report[path]}), flush=True)
    if args.other:
        other = TransformersBackend(args.other, quantize="none")
        outs, _ = generate(other)
        foreign = check(outs)
        report["foreign_detection_rate"] = round(sum(not r.ok for r in foreign) / len(foreign), 4)
        print(json.dumps({"foreign_detection_rate": report["foreign_detection_rate"]}))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
