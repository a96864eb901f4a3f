"""Samples generated on one machine, for the proof of sampling to check on others.

A genuine sample must pass the proof on a CPU other than the one that sampled it: int8
kernels, vector widths and bf16 units round differently. Each machine that runs

    .venv/bin/python -m tests.proof_samples

adds one file to tests/fixtures/proof-samples/: samples of a tiny model whose weights are
the same bits everywhere (tests.tiny_models.tiny_neox_hashed), drawn on each of that
machine's sampling paths with the job defaults. tests/test_proof.py proves every file's
samples with every checker the machine running the tests has. Commit a new file whenever a
session runs on a CPU kind the folder lacks.
"""

import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "proof-samples"
PROMPTS = ["# Patent\n\n## Title", "# Patent\n\n## Claims"] * 6
TOKENS = 96
# The CPU features that change the arithmetic of the sampling paths.
FEATURES = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"}


def machine_tag() -> str:
    """The CPU's model and its FEATURES, as a file name."""
    from allthepatents.cpu import cpu_flags, cpu_model_name

    features = sorted(cpu_flags() & FEATURES)
    name = re.sub(r"\(r\)|\(tm\)|processor|cpu", "", cpu_model_name().lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return "-".join([name, *features]) or "unknown"


def sampling_paths() -> list[str]:
    """The precisions a contributor samples in on this CPU (bf16 only where it is native;
    ``generation.contributions.contributor_precision``)."""
    from allthepatents.cpu import cpu_has_native_bf16

    return ["none", "int8-rows"] + (["bf16"] if cpu_has_native_bf16() else [])


def checked_by(path: str, checker: str) -> bool:
    """Whether a contributor's sample in ``path`` meets a site checking in ``checker``:
    a contributor samples in the site's precision, or in fp32, or (without native bf16,
    for a bf16 site) in per-row int8."""
    return path in (checker, "none") or (path, checker) == ("int8-rows", "bf16")


def checker_precisions() -> list[str]:
    """The proof's precisions this CPU runs: fp32, the per-row int8 checker, and bf16 where
    it is native (``generation.contributions.proof_precision``)."""
    from allthepatents.cpu import cpu_has_native_bf16

    return ["none", "int8-rows"] + (["bf16"] if cpu_has_native_bf16() else [])


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="proof-samples-"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import torch

    from allthepatents.cpu import cpu_flags, cpu_model_name
    from generation.backends import TransformersBackend
    from generation.sampling import JOB_SAMPLING_FIELDS, SamplingParams
    from tests.tiny_models import tiny_neox_hashed, weights_digest

    torch.set_num_threads(1)
    params = SamplingParams(max_new_tokens=TOKENS)  # the job defaults otherwise
    model = tiny_neox_hashed(
        ROOT.parent / "shared" / "models" / "kl3m-002-170m-patent",
        Path(tempfile.mkdtemp()) / "hashed",
    )
    record = {
        "cpu": cpu_model_name(),
        "flags": sorted(cpu_flags() & FEATURES),
        "torch": torch.__version__,
        "weights_sha256": weights_digest(model),
        "params": {k: getattr(params, k) for k in JOB_SAMPLING_FIELDS},
        "prompts": PROMPTS,
        "seeds": list(range(100, 100 + len(PROMPTS))),
        "paths": {},
    }
    seeds = record["seeds"]
    for path in sampling_paths():
        outs = TransformersBackend(str(model), quantize=path).generate(PROMPTS, seeds, params)
        record["paths"][path] = [
            {"token_ids": list(o.token_ids), "finished": o.finished} for o in outs
        ]
    FIXTURES.mkdir(parents=True, exist_ok=True)
    target = FIXTURES / f"{machine_tag()}.json"
    target.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {target.relative_to(ROOT)}: {', '.join(record['paths'])}")


if __name__ == "__main__":
    main()
