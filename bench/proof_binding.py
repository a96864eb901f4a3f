"""Does the proof of sampling bind the draw? False rejects of genuine samples, and what a
forger can still get through, under candidate rules (generation/proof.py's ProofRule).

    .venv/bin/python bench/proof_binding.py --model var/models/demo --samples 32 --tokens 256
    .venv/bin/python bench/proof_binding.py --hashed --samples 16 --tokens 128

Genuine: samples of every sampling path this CPU runs (fp32, dynamic int8, bf16 where
native), each proved by every checker precision (those and the per-row int8 checker). Forged, all proved by the site's checker
(--checker, default the precision GENERATION_QUANTIZE=auto gives here):
  other-seed      drawn with another seed than the unit's
  temperature-X   drawn at temperature X instead of the unit's
  greedy          the best token every time
  copy            sample 0 submitted at every index
  rank-20         the 20th best token of the top 50 at every position (top-p ignored)
Freedom: on genuine samples, the share of positions where more than one token passes the
draw tolerance (what a forger may choose among without spending slack).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-binding-"))

RULES = {  # name: ProofRule fields changed from the production rule
    "production": {},
    "strict": {"slack": 0.0, "slack_min": 0},
    "draw-0.1": {"draw_tolerance": 0.1},
    "draw-0.025": {"draw_tolerance": 0.025},
    "slack-10%": {"slack": 0.10},
    "slack-2%": {"slack": 0.02},
    "hard-0.6": {"hard_limit": 0.6},
    "hard-2.5": {"hard_limit": 2.5},
    "member-0.4": {"member_tolerance": 0.4},
}


def rank_sample(backend, prompt: str, params, rank: int) -> list[int]:
    """The ``rank``-th best token (1 = best) after the unit's adjustments, at every step."""
    import torch

    from generation.sampling import logits_adjust

    tok = backend.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    out: list[int] = []
    with torch.inference_mode():
        for step in range(params.max_new_tokens):
            logits = backend.model(input_ids=torch.tensor([ids + out])).logits[:, -1].float()
            logits = logits_adjust(
                logits,
                seen=torch.tensor([ids + out]),
                step=step,
                params=params,
                eos_id=backend.eos_id,
            )
            logits[0, backend.eos_id] = float("-inf")  # keep to the budget: a whole sample
            out.append(int(torch.topk(logits[0], rank).indices[-1]))
    return out


def freedom(checker, prompts, seeds, outs, params, rule) -> float:
    """Share of positions where two or more of the top-k tokens pass ``rule``'s draw and
    membership tolerances."""
    import torch

    from generation.proof import _excess_rows, _penalise_rows
    from generation.sampling import sampling_uniforms

    free = total = 0
    for prompt, seed, out in zip(prompts, seeds, outs, strict=True):
        pid = checker.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        drawn = out.token_ids + ([checker.eos_id] if out.finished else [])
        u = torch.tensor(sampling_uniforms(seed, len(drawn)), dtype=torch.float64)
        with torch.inference_mode():
            logits = checker.model(input_ids=torch.tensor([pid + drawn])).logits[0]
            rows = logits[len(pid) - 1 : len(pid) - 1 + len(drawn)]
            rows = _penalise_rows(
                rows.clone(),
                history=pid + drawn,
                prompt_length=len(pid),
                start=0,
                params=params,
                eos_id=checker.eos_id,
            )
            candidates = torch.topk(rows, params.top_k, dim=-1).indices
            passing = torch.zeros(len(drawn), dtype=torch.long)
            for c in range(params.top_k):
                draw, member = _excess_rows(
                    rows,
                    candidates[:, c],
                    u,
                    top_k=params.top_k,
                    top_p=params.top_p,
                    temperature=params.temperature,
                    with_membership=True,
                )
                passing += (
                    (draw <= rule.draw_tolerance) & (member <= rule.member_tolerance)
                ).long()
        free += int((passing > 1).sum())
        total += len(drawn)
    return free / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a trained model directory")
    parser.add_argument("--hashed", action="store_true", help="the tests' hashed tiny model")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--batch", type=int, default=16, help="samples generated together (the site's 16)"
    )
    parser.add_argument(
        "--checker", default="", help="none, int8-rows, int8, bf16 (default: the site's here)"
    )
    args = parser.parse_args()
    import django

    django.setup()
    import dataclasses

    import torch

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    from allthepatents.cpu import cpu_flags, cpu_has_native_bf16, cpu_model_name
    from generation.backends import TransformersBackend
    from generation.contributions import proof_precision
    from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
    from generation.proof import PROOF_RULE, _verdict, samples_proof_check
    from generation.sampling import SamplingParams

    if args.hashed:
        from tests.tiny_models import tiny_neox_hashed

        source = ROOT.parent / "shared" / "models" / "kl3m-002-170m-patent"
        args.model = str(tiny_neox_hashed(source, Path(tempfile.mkdtemp()) / "hashed"))
    if not args.model:
        parser.error("--model or --hashed")
    site_checker = args.checker or proof_precision("auto")
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(f"cpu: {cpu_model_name()} {flags}; site checker {site_checker}", flush=True)
    paths = ["none", "int8", "int8-rows"] + (["bf16"] if cpu_has_native_bf16() else [])
    backends = {p: TransformersBackend(args.model, quantize=p) for p in paths}
    params = SamplingParams(max_new_tokens=args.tokens)
    prompts = [KL3M_TOP_DOWN, KL3M_BOTTOM_UP] * (args.samples // 2)
    seeds = [1000 + i for i in range(len(prompts))]
    rules = {name: dataclasses.replace(PROOF_RULE, **change) for name, change in RULES.items()}
    print("rules:", json.dumps({n: dataclasses.asdict(r) for n, r in rules.items()}))

    def excesses(checker, outs_or_samples, which_seeds=None):
        samples = [
            (o.token_ids, o.finished) if hasattr(o, "token_ids") else o for o in outs_or_samples
        ]
        return samples_proof_check(
            backend=checker,
            prompts=prompts,
            seeds=which_seeds or seeds,
            samples=samples,
            params=params,
            keep_excess=True,
        )

    def rates(results, rule):
        verdicts = [
            r.ok if r.excess is None else _verdict(r.excess[0], r.excess[1], rule).ok
            for r in results
        ]
        return sum(not ok for ok in verdicts) / len(verdicts)

    report = {"genuine_false_reject": {}, "forged_detection": {}, "disagreement": {}}

    def generate(backend, params, which_seeds=None):
        which_seeds = which_seeds or seeds
        outs = []
        for at in range(0, len(prompts), args.batch):
            outs += backend.generate(
                prompts[at : at + args.batch], which_seeds[at : at + args.batch], params
            )
        return outs

    genuine = {p: generate(backends[p], params) for p in paths}
    for path, outs in genuine.items():
        for cq, checker in backends.items():
            results = excesses(checker, outs)
            key = f"{path}->{cq}"
            report["genuine_false_reject"][key] = {n: rates(results, r) for n, r in rules.items()}
            draws = torch.cat([r.excess[0] for r in results])
            share = max(r.disagreements / r.tokens for r in results)
            report["disagreement"][key] = {
                "positions_over_tolerance": round(
                    float((draws > PROOF_RULE.draw_tolerance).float().mean()), 4
                ),
                "worst_sample_share": round(share, 4),
                "draw_q99": round(float(torch.quantile(draws, 0.99)), 3),
                "draw_max": round(float(draws.max()), 3),
                "member_max": round(float(torch.cat([r.excess[1] for r in results]).max()), 3),
            }
            print(key, json.dumps(report["genuine_false_reject"][key]), flush=True)
    checker = backends[site_checker]
    sampler = backends["int8" if site_checker == "int8-rows" else site_checker]
    forged = {
        "other-seed": generate(sampler, params, [s + 7919 for s in seeds]),
        "greedy": generate(sampler, dataclasses.replace(params, top_k=1)),
        "copy": [genuine["none"][0]] * len(prompts),
        "rank-20": [(rank_sample(checker, p, params, 20), False) for p in prompts],
    }
    for t in (0.5, 1.0, 1.3, 1.6):
        forged[f"temperature-{t}"] = generate(sampler, dataclasses.replace(params, temperature=t))
    for name, outs in forged.items():
        results = excesses(checker, outs)
        report["forged_detection"][name] = {n: rates(results, r) for n, r in rules.items()}
        print(name, json.dumps(report["forged_detection"][name]), flush=True)
    report["freedom"] = {
        n: round(freedom(checker, prompts, seeds, genuine["none"], params, r), 4)
        for n, r in rules.items()
        if n in ("production", "draw-0.1", "draw-0.025")
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
