"""Does a faster precision change what a model writes? Gate pass rate per mode, fp32 against
int8 and bf16, same prompts and seeds (by hand, not in CI; needs a trained model such as the
demo model).

    .venv/bin/python bench/int8_quality.py var/models/demo --samples 20
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
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-int8-"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["TORCH_THREADS"] = str(args.threads)
    import django

    django.setup()
    from generation.backends import TransformersBackend
    from generation.parsing import patent_text_parse
    from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
    from generation.quality import sample_judge
    from generation.sampling import SamplingParams

    params = SamplingParams(max_new_tokens=args.max_new_tokens)  # the job defaults
    seeds = list(range(args.seed, args.seed + args.samples))
    results = {}
    for quantize in ("none", "int8", "bf16"):
        backend = TransformersBackend(str(args.model), quantize=quantize)
        for mode, prompt in (("top-down", KL3M_TOP_DOWN), ("bottom-up", KL3M_BOTTOM_UP)):
            outputs = backend.generate([prompt] * len(seeds), seeds, params)
            passed = sum(
                not sample_judge(patent_text_parse(prompt + o.text, finished=o.finished))
                for o in outputs
            )
            mean_tokens = sum(o.tokens for o in outputs) / len(outputs)
            results[f"{quantize} {mode}"] = {
                "passed": passed,
                "of": len(seeds),
                "tokens": mean_tokens,
            }
            print(
                f"{quantize:5s} {mode:9s} passed {passed}/{len(seeds)}, mean {mean_tokens:.0f} tokens"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
