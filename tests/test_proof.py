"""Proof of sampling (#18): one forward pass says whether tokens could have been sampled."""

import pytest

from generation.backends import SamplingParams, TransformersBackend
from generation.proof import sample_proof_check

PROMPTS = ["# Patent\n\n## Title", "# Patent\n\n## Claims"] * 2
PARAMS = SamplingParams(max_new_tokens=40, min_new_tokens=40)  # random weights rarely stop


@pytest.mark.unit
def test_the_batched_adjustment_is_the_samplers_step_by_step():
    import torch

    from generation.proof import _adjust_rows
    from generation.sampling import logits_adjust

    torch.manual_seed(0)
    params = SamplingParams(repetition_penalty=1.3, temperature=0.7, min_new_tokens=3)
    history = torch.randint(0, 50, (12,))  # 4 prompt tokens, then 8 drawn
    logits = torch.randn(8, 50)
    seen = history[:11].repeat(8, 1)
    seen[torch.arange(11)[None, :] >= (4 + torch.arange(8))[:, None]] = history[0]
    batched = _adjust_rows(logits.clone(), seen=seen, start=0, params=params, eos_id=7)
    for step in range(8):
        one = logits_adjust(
            logits[step : step + 1].clone(),
            seen=history[None, : 4 + step],
            step=step,
            params=params,
            eos_id=7,
        )
        assert torch.allclose(one[0], batched[step])


@pytest.fixture(scope="module")
def checker(tiny_neox):
    return TransformersBackend(str(tiny_neox), quantize="none")


def _check(checker, prompt, out, ids=None):
    return sample_proof_check(
        backend=checker,
        prompt=prompt,
        token_ids=out.token_ids if ids is None else ids,
        finished=out.finished,
        params=PARAMS,
    )


def test_genuine_samples_pass_on_both_sampling_paths(tiny_neox, checker):
    for backend in (checker, TransformersBackend(str(tiny_neox), quantize="int8")):
        outs = backend.generate(PROMPTS, [11, 12, 13, 14], PARAMS)
        for prompt, out in zip(PROMPTS, outs, strict=True):
            assert len(out.token_ids) == 40
            result = _check(checker, prompt, out)
            assert result.ok, (backend.quantize, result)


def test_an_edited_sample_fails_at_the_edit(checker):
    out = checker.generate(PROMPTS[:1], [21], PARAMS)[0]
    assert _check(checker, PROMPTS[0], out).ok
    ids = list(out.token_ids)
    # The least likely token there: what a hand edit looks like to the model.
    import torch

    context = checker.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"] + ids[:20]
    with torch.inference_mode():
        logits = checker.model(input_ids=torch.tensor([context])).logits[0, -1]
    ids[20] = int(logits.argmin())
    result = _check(checker, PROMPTS[0], out, ids=ids)
    assert not result.ok and result.first_violation == 20
    assert not _check(checker, PROMPTS[0], out, ids=[10**9]).ok  # not even a token id


def test_another_models_text_fails(checker, memo_model):
    other = TransformersBackend(str(memo_model), quantize="none")
    outs = other.generate(PROMPTS, [31, 32, 33, 34], PARAMS)
    results = [_check(checker, prompt, out) for prompt, out in zip(PROMPTS, outs, strict=True)]
    assert not any(r.ok for r in results)
    assert all(r.violations > 5 for r in results)


def test_checking_many_at_once_gives_each_its_own_verdict(checker):
    """Right-padded together, each sample is judged as if alone (no position sees a pad)."""
    from generation.proof import samples_proof_check

    params = SamplingParams(max_new_tokens=30, min_new_tokens=0)
    outs = checker.generate(PROMPTS, [41, 42, 43, 44], params)
    samples = [(list(o.token_ids), o.finished) for o in outs]
    samples[2][0][3] = (samples[2][0][3] + 999) % 1000 + 5  # one forged token
    together = samples_proof_check(backend=checker, prompts=PROMPTS, samples=samples, params=params)
    alone = [
        sample_proof_check(backend=checker, prompt=p, token_ids=ids, finished=f, params=params)
        for p, (ids, f) in zip(PROMPTS, samples, strict=True)
    ]
    assert [r.ok for r in together] == [r.ok for r in alone] == [True, True, False, True]
    assert [r.first_violation for r in together] == [r.first_violation for r in alone]
    assert [r.tokens for r in together] == [len(ids) + f for ids, f in samples]


@pytest.mark.unit
def test_the_checker_runs_bf16_wherever_the_cpu_has_it(monkeypatch):
    """Generation on AVX512-BF16 without AMX runs int8 (faster token by token), but the
    proof is one forward over whole texts: it checks in bf16 there too."""
    import search.embeddings
    from generation.backends import generation_precision
    from generation.contributions import proof_precision

    monkeypatch.setattr(search.embeddings, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert generation_precision("auto") == "int8" and proof_precision("auto") == "bf16"
    monkeypatch.setattr(search.embeddings, "cpu_flags", lambda: {"avx2"})
    assert generation_precision(proof_precision("auto")) == "int8"
    assert proof_precision("none") == "none"  # an admin's explicit choice stands
