"""What ending doomed samples early saves, per mode, side by side in one run (by hand, not
in CI; needs a trained model such as the shipped demo generator).

    .venv/bin/python bench/early_stop.py models/demo-generator --samples 48
    .venv/bin/python bench/early_stop.py models/demo-generator --samples 128 --form --batch 16,128 --rounds 2

For each mode the same prompts and seeds are generated twice, in batches of the job's size:
(before) to the end, as workers did without ``GENERATION_EARLY_STOP``; (after) with the
early stop. Printed per mode: samples passing the structural gate, tokens per sample, CPU
seconds of generation, and CPU seconds and tokens per published invention. The (before) run
also checks soundness: every prefix decision (taken every CHECK_EVERY tokens, as workers do)
is compared with the full gate on the whole sample, and a doomed verdict on a sample that
passed, or an end-of-document stop that changes the parse, is counted as a violation.
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-early-"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--samples", type=int, default=48, help="per mode")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--batch",
        default="16",
        help="rows a batch; a list (16,64) also runs form + early stop at the others",
    )
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: the job default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, in alternating order; CPU-s is a round's mean",
    )
    parser.add_argument("--quantize", default="auto")
    parser.add_argument(
        "--after-quantize",
        default="",
        help="also run form + early stop at the other batches in this precision (int8-bf16); "
        "a list (int8-kv16,int8-kv8) runs each, side by side",
    )
    parser.add_argument(
        "--form", action="store_true", help="also with the form decoded (generation/form.py)"
    )
    parser.add_argument(
        "--forms",
        default="",
        help="with --form: the forms to run, side by side (kl3m,kl3m-2); default: the latest",
    )
    parser.add_argument(
        "--modes", default="top-down,bottom-up", help="the modes to run, one after the other"
    )
    args = parser.parse_args()
    os.environ["TORCH_THREADS"] = str(args.threads)
    batches = [int(b) for b in str(args.batch).split(",")]
    import django

    django.setup()
    import torch

    from allthepatents.cpu import cpu_flags, cpu_model_name
    from generation.backends import TransformersBackend
    from generation.batches import prefix_decider
    from generation.early_stop import CHECK_EVERY, END_OF_DOCUMENT, prefix_decide
    from generation.form import FORM_LATEST
    from generation.parsing import patent_text_parse
    from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
    from generation.quality import sample_judge
    from generation.sampling import SAMPLING_DEFAULTS, SamplingParams

    torch.set_num_threads(args.threads)
    params = SamplingParams(max_new_tokens=args.max_new_tokens or SAMPLING_DEFAULTS.max_new_tokens)
    backend = TransformersBackend(str(args.model), quantize=args.quantize)
    afters = [
        TransformersBackend(str(args.model), quantize=choice)
        for choice in args.after_quantize.split(",")
        if choice
    ]
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(
        json.dumps(
            {
                "cpu": cpu_model_name(),
                "flags": flags,
                "precision": backend.quantize,
                "after_precisions": [after.quantize for after in afters],
                "threads": args.threads,
                "rounds": args.rounds,
                "batches": batches,
                "max_new_tokens": params.max_new_tokens,
                "check_every": CHECK_EVERY,
            }
        )
    )
    tok = backend.tokenizer
    seeds = list(range(args.seed, args.seed + args.samples))
    table = {}
    prompts = {"top-down": KL3M_TOP_DOWN, "bottom-up": KL3M_BOTTOM_UP}
    modes = args.modes.split(",")
    if set(modes) - set(prompts):
        parser.error(f"--modes takes {', '.join(prompts)}")
    for mode, prompt in ((mode, prompts[mode]) for mode in modes):
        runs = {}
        first, *others = batches
        variants = [
            ("before", False, "", first, backend),
            ("early stop", True, "", first, backend),
        ]
        for form in (args.forms or FORM_LATEST).split(",") if args.form else ():
            variants += [
                (f"form {form}", False, form, first, backend),
                (f"form {form} + early stop", True, form, first, backend),
            ]
            variants += [
                (f"form {form} + early stop, batch {b}", True, form, b, backend) for b in others
            ]
            variants += [
                (f"form {form} + early stop, batch {b}, {after.quantize}", True, form, b, after)
                for after in afters
                for b in others
            ]
        # Rounds run the variants forwards, then backwards, and so on: a machine whose speed
        # drifts during the run (a shared VM's does, by a quarter between runs) then weighs
        # on every variant alike. The samples are the same in every round.
        drawn, cpu_total = {}, Counter()
        for round_ in range(args.rounds):
            for label, early, form, rows, runner in variants[:: -1 if round_ % 2 else 1]:
                run_params = dataclasses.replace(params, form=form)
                outputs = []
                for start in range(0, len(seeds), rows):
                    chunk = seeds[start : start + rows]
                    prompts = [prompt] * len(chunk)
                    decide = (
                        prefix_decider(prompt_format="kl3m", prompts=prompts) if early else None
                    )
                    began = time.process_time()
                    outputs += runner.generate(prompts, chunk, run_params, decide=decide)
                    cpu_total[label] += time.process_time() - began
                if label in drawn:
                    assert [o.text for o in outputs] == [o.text for o in drawn[label]], label
                drawn[label] = outputs
        for label, *_ in variants:
            outputs, cpu = drawn[label], cpu_total[label] / args.rounds
            verdicts, claims = [], []  # claims: of each sample that passed
            for o in outputs:
                if o.stopped and o.stopped != END_OF_DOCUMENT:
                    verdicts.append([o.stopped])
                    continue
                parsed = patent_text_parse(prompt + o.text, finished=o.finished)
                verdicts.append(sample_judge(parsed))
                if not verdicts[-1]:
                    claims.append(len(parsed.claims))
            runs[label] = (outputs, verdicts, cpu, claims)

        outputs, verdicts, _, _ = runs["before"]
        violations, doomed_at, reasons = [], [], Counter()
        for o, why in zip(outputs, verdicts, strict=True):
            for r in why:
                reasons[r] += 1
            for k in range(CHECK_EVERY, len(o.token_ids) + 1, CHECK_EVERY):
                text = tok.decode(
                    o.token_ids[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
                decision = prefix_decide(prompt + text)
                if decision is None:
                    continue
                if decision.doomed:
                    if not why:
                        violations.append({"seed_tokens": k, "reason": decision.reason})
                    doomed_at.append(o.tokens - k)
                else:
                    stopped_parse = patent_text_parse(prompt + text, finished=False)
                    if sample_judge(stopped_parse) != why:
                        violations.append({"seed_tokens": k, "reason": "end_of_document parse"})
                break
        row = {"violations": violations, "reasons_before": dict(reasons.most_common())}
        for label, (outs, verdicts, cpu, claims) in runs.items():
            passed = sum(not v for v in verdicts)
            tokens = sum(o.tokens for o in outs)
            row[label] = {
                "passed": passed,
                "of": len(outs),
                "tokens_per_sample": round(tokens / len(outs), 1),
                "cpu_s": round(cpu, 1),
                "cpu_s_per_published": round(cpu / passed, 2) if passed else None,
                "claims_per_published": round(statistics.mean(claims), 2) if claims else None,
                "tokens_per_published": round(tokens / passed) if passed else None,
                "stopped": dict(Counter(o.stopped for o in outs if o.stopped)),
                "reasons": dict(Counter(r for v in verdicts for r in v).most_common()),
            }
        table[mode] = row
        print(json.dumps({"mode": mode, **row}))
    print(json.dumps(table))


if __name__ == "__main__":
    main()
