"""Proof of sampling: one forward pass says whether tokens could have been sampled."""

import json
from pathlib import Path

import pytest

from generation.backends import TransformersBackend
from generation.proof import sample_proof_check
from generation.sampling import SamplingParams

PROMPTS = ["# Patent\n\n## Title", "# Patent\n\n## Claims"] * 2
PARAMS = SamplingParams(max_new_tokens=40, min_new_tokens=40)  # random weights rarely stop
SAMPLED_ELSEWHERE = sorted(
    (Path(__file__).parents[1] / "fixtures" / "proof-samples").glob("*.json")
)


@pytest.mark.unit
def test_the_batched_adjustment_is_the_samplers_step_by_step():
    import torch

    from generation.proof import _penalise_rows
    from generation.sampling import logits_adjust

    torch.manual_seed(0)
    params = SamplingParams(repetition_penalty=1.3, temperature=0.7, min_new_tokens=5)
    history = torch.randint(0, 50, (12,)).tolist()  # 4 prompt tokens, then 8 drawn
    logits = torch.randn(8, 50)
    for start in (0, 3):  # a block of rows may begin anywhere in the sample
        batched = _penalise_rows(
            logits[start:].clone(),
            history=history,
            prompt_length=4,
            start=start,
            params=params,
            eos_id=7,
        )
        for step in range(start, 8):
            one = logits_adjust(
                logits[step : step + 1].clone(),
                seen=torch.tensor([history[: 4 + step]]),
                step=step,
                params=params,
                eos_id=7,
            )
            # The temperature is left to _excess_rows, which divides the few values it keeps.
            assert torch.allclose(one[0], batched[step - start] / params.temperature)


@pytest.mark.unit
def test_the_top_values_are_a_full_sorts():
    """The block-maxima shortcut finds the same k best as torch.topk, ties and the
    end token's -inf included, in float32 and bf16."""
    import torch

    from generation.proof import _top_values

    torch.manual_seed(0)
    rows = torch.randn(64, 32768) * 4
    rows[:8] = rows[:8].round()  # many ties
    rows[8:16, :200] = 30.0  # the best all in the first blocks
    rows[16:24, ::128] = 25.0  # one of the best in every block
    rows[:, 1] = float("-inf")
    for dtype in (torch.float32, torch.bfloat16):
        typed = rows.to(dtype)
        for k in (1, 50, 64):
            expected = torch.topk(typed, k, dim=-1).values.float()
            assert torch.equal(_top_values(typed, k), expected), (dtype, k)
    assert torch.equal(_top_values(rows[:, :1000], 50), torch.topk(rows[:, :1000], 50).values)


@pytest.fixture(scope="module")
def checker(tiny_neox):
    return TransformersBackend(str(tiny_neox), quantize="none")


def _check(checker, prompt, seed, out, ids=None):
    return sample_proof_check(
        backend=checker,
        prompt=prompt,
        seed=seed,
        token_ids=out.token_ids if ids is None else ids,
        finished=out.finished,
        params=PARAMS,
    )


def test_genuine_samples_pass_on_every_contributors_path(hashed_neox):
    """fp32, per-row int8 and (where native) bf16 samples, each checked in the precisions
    a site may check a contributor's sample in (tests/proof_samples.py's pairs)."""
    from tests.proof_samples import checked_by, checker_precisions, sampling_paths

    seeds = [11, 12, 13, 14]
    checkers = {c: TransformersBackend(str(hashed_neox), quantize=c) for c in checker_precisions()}
    for path in sampling_paths():
        outs = TransformersBackend(str(hashed_neox), quantize=path).generate(PROMPTS, seeds, PARAMS)
        for name, checker in checkers.items():
            if not checked_by(path, name):
                continue
            for prompt, seed, out in zip(PROMPTS, seeds, outs, strict=True):
                assert len(out.token_ids) == 40
                result = _check(checker, prompt, seed, out)
                assert result.ok, (path, name, result)


@pytest.mark.parametrize("sampled", SAMPLED_ELSEWHERE, ids=lambda path: path.stem)
def test_samples_drawn_on_another_cpu_pass_here(hashed_neox, sampled):
    """Samples drawn on each CPU kind the project has met (tests/proof_samples.py; their int8
    kernels, vector widths and bf16 units round differently from this machine's) pass the
    proof under every checker this machine has; with every 20th token replaced they fail."""
    from generation.proof import samples_proof_check
    from tests.proof_samples import checked_by, checker_precisions
    from tests.tiny_models import weights_digest

    record = json.loads(sampled.read_text())
    assert weights_digest(hashed_neox) == record["weights_sha256"], (
        "tiny_neox_hashed no longer builds the model these samples came from: regenerate "
        "the files (python -m tests.proof_samples) on their machines, or drop them"
    )
    params = SamplingParams(**record["params"])
    for precision in checker_precisions():
        checker = TransformersBackend(str(hashed_neox), quantize=precision)
        vocab = checker.model.config.vocab_size
        for path, drawn in record["paths"].items():
            if not checked_by(path, precision):
                continue
            genuine = [(s["token_ids"], s["finished"]) for s in drawn]
            edited = [
                ([(t * 7919 + 13) % vocab if i % 20 == 10 else t for i, t in enumerate(ids)], f)
                for ids, f in genuine
            ]
            for samples, expected in ((genuine, True), (edited, False)):
                results = samples_proof_check(
                    backend=checker,
                    prompts=record["prompts"],
                    seeds=record["seeds"],
                    samples=samples,
                    params=params,
                )
                wrong = [r for r in results if r.ok != expected]
                assert not wrong, (precision, path, expected, wrong)


def test_an_edited_sample_fails_at_the_edit(hashed_neox):
    """On the model whose distributions peak like a trained one's (random weights leave
    the whole vocabulary within a logit or two, where an edit is within float noise)."""
    checker = TransformersBackend(str(hashed_neox), quantize="none")
    out = checker.generate(PROMPTS[:1], [21], PARAMS)[0]
    assert _check(checker, PROMPTS[0], 21, out).ok
    ids = list(out.token_ids)
    # The least likely token there: what a hand edit looks like to the model.
    import torch

    context = checker.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"] + ids[:20]
    with torch.inference_mode():
        logits = checker.model(input_ids=torch.tensor([context])).logits[0, -1]
    ids[20] = int(logits.argmin())
    result = _check(checker, PROMPTS[0], 21, out, ids=ids)
    assert not result.ok and result.first_violation == 20
    assert not _check(checker, PROMPTS[0], 21, out, ids=[10**9] * 40).ok  # not a token id


def test_another_models_text_fails(checker, memo_model):
    other = TransformersBackend(str(memo_model), quantize="none")
    seeds = [31, 32, 33, 34]
    outs = other.generate(PROMPTS, seeds, PARAMS)
    results = [
        _check(checker, prompt, seed, out)
        for prompt, seed, out in zip(PROMPTS, seeds, outs, strict=True)
    ]
    assert not any(r.ok for r in results)
    assert all(r.violations > 5 for r in results)


@pytest.mark.parametrize("rows_per_block", [None, 7])
def test_checking_many_at_once_gives_each_its_own_verdict(hashed_neox, monkeypatch, rows_per_block):
    """Right-padded together, each sample is judged as if alone (no position sees a pad);
    with 7 rows to a block of logits, samples also straddle blocks."""
    import generation.proof
    from generation.proof import samples_proof_check

    checker = TransformersBackend(str(hashed_neox), quantize="none")

    if rows_per_block:
        monkeypatch.setattr(generation.proof, "ROWS_PER_BLOCK", rows_per_block)

    params = SamplingParams(max_new_tokens=30, min_new_tokens=0)
    seeds = [41, 42, 43, 44]
    outs = checker.generate(PROMPTS, seeds, params)
    samples = [(list(o.token_ids), o.finished) for o in outs]
    samples[2][0][3] = (samples[2][0][3] + 999) % 1000 + 5  # one forged token
    together = samples_proof_check(
        backend=checker, prompts=PROMPTS, seeds=seeds, samples=samples, params=params
    )
    alone = [
        sample_proof_check(
            backend=checker, prompt=p, seed=seed, token_ids=ids, finished=f, params=params
        )
        for p, seed, (ids, f) in zip(PROMPTS, seeds, samples, strict=True)
    ]
    assert [r.ok for r in together] == [r.ok for r in alone] == [True, True, False, True]
    assert [r.first_violation for r in together] == [r.first_violation for r in alone]
    assert [r.tokens for r in together] == [len(ids) + f for ids, f in samples]


@pytest.mark.unit
def test_the_checker_runs_bf16_with_amx_and_per_row_int8_elsewhere(monkeypatch):
    """The proof is one forward over whole texts: bf16 where AMX runs it, per-row int8
    elsewhere (faster than bf16 on AVX512-BF16 without AMX, and it keeps one position's
    outliers from blurring the others')."""
    import allthepatents.cpu
    from generation.contributions import contributor_precision, proof_precision

    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert proof_precision("auto") == "bf16"
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert proof_precision("auto") == "int8-rows"
    assert contributor_precision("bf16") == "bf16"  # bf16 is native here
    monkeypatch.setattr(allthepatents.cpu, "cpu_flags", lambda: {"avx2"})
    assert proof_precision("auto") == proof_precision("int8") == "int8-rows"
    assert contributor_precision("bf16") == "int8-rows"  # no hours of bf16 emulation
    assert contributor_precision("int8-rows", device="cuda") == "none"
    assert proof_precision("none") == "none" and proof_precision("bf16") == "bf16"
    # The worker's kernel precisions are checked as their layers compute.
    assert proof_precision("int8-kv16") == "int8-rows"
    assert proof_precision("bf16-kv16") == proof_precision("int8-bf16") == "bf16"
    assert proof_precision("int8-kv8") == "int8-rows"
    assert proof_precision("bf16-kv8") == "bf16"


def _neox(kl3m_source, **overrides):
    import json

    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    data = json.loads((kl3m_source / "config.json").read_text())
    data.pop("_name_or_path", None)
    data.update(num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4)
    data.update(overrides)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**data)).eval()
    for p in model.parameters():  # random init is near zero: make every term count
        p.data.normal_(0, 0.2)
    return model


@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_parallel_residual": False}, {"attention_bias": False}, {"rotary_pct": 1.0}],
    ids=["kl3m", "sequential-residual", "no-attention-bias", "full-rotary"],
)
def test_the_proofs_neox_forward_is_transformers(kl3m_source, overrides):
    """The proof's own GPT-NeoX forward (generation/proof_forward.py) gives transformers'
    hidden states, in float32, in bf16 (the bf16 checker's), with per-row int8 layers
    (the int8 checker's) and with fbgemm's dynamic int8 ones, on right-padded rows."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    from generation.proof_forward import _neox_covered, proof_body
    from generation.quantization import rows_int8_quantize

    ids = torch.randint(3, 32000, (3, 37))
    int8 = {
        "int8": quantize_dynamic(
            _neox(kl3m_source, **overrides), {torch.nn.Linear}, dtype=torch.qint8
        ),
        "int8-rows": rows_int8_quantize(_neox(kl3m_source, **overrides)),
    }
    for kind, tolerance in (
        (torch.float32, 1e-4),
        (torch.bfloat16, 0.1),
        ("int8", 1e-4),
        ("int8-rows", 1e-4),
    ):
        model = int8[kind] if kind in int8 else _neox(kl3m_source, **overrides).to(kind)
        dtype = torch.float32 if kind in int8 else kind
        body = proof_body(model)
        assert _neox_covered(model)
        with torch.inference_mode():
            expected = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
            got = body(ids)
        assert got.shape == expected.shape and got.dtype == dtype
        difference = (got.float() - expected.float()).abs()
        if kind in int8:
            # An activation a float rounding apart (PyTorch's attention kernels against the
            # proof's differ by ~1e-7, more so on AVX2) can round to the neighbouring int8
            # step: a few values move by that step (up to 0.005 seen; int8's own error
            # against float32 is 0.015 here), the rest agree to float32's precision.
            assert (difference > tolerance).float().mean() < 0.02, kind
            assert difference.max() < 0.01, kind
        else:
            assert difference.max() < tolerance, kind


@pytest.mark.unit
def test_a_per_row_int8_layers_rows_do_not_depend_on_their_neighbours():
    """The int8 checker's layers: a row's output is the same alone or beside a row of
    outliers (fbgemm's dynamic layers scale a whole tensor by its largest value), and close
    to float32."""
    import torch

    from generation.quantization import rows_int8_quantize

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    layer = rows_int8_quantize(torch.nn.Sequential(linear))[0]
    x = torch.randn(40, 64)
    loud = torch.cat([x, 100 * torch.randn(1, 64)])
    with torch.inference_mode():
        assert torch.equal(layer(x[:3]), layer(loud)[:3])
        assert torch.equal(layer(x)[5], layer(x[5:6])[0])
        assert (layer(x) - linear(x)).abs().max() < 0.05


def test_other_models_take_transformers_forward(kl3m_source, tiny_llama):
    """A scaled rotary, a layer of another kind (here an adapter on a Linear) or another
    architecture: the proof runs the model's own forward rather than a near miss."""
    import torch
    from transformers import AutoModelForCausalLM

    from generation.proof_forward import _neox_covered, proof_body

    class Adapter(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) + 0.5

    scaled = _neox(kl3m_source, rope_scaling={"rope_type": "linear", "factor": 2.0})
    adapted = _neox(kl3m_source)
    mlp = adapted.base_model.layers[1].mlp
    adapter = Adapter(mlp.dense_h_to_4h.in_features, mlp.dense_h_to_4h.out_features)
    adapter.load_state_dict(mlp.dense_h_to_4h.state_dict())
    mlp.dense_h_to_4h = adapter
    llama = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    ids = torch.randint(3, 32000, (2, 11))
    for model in (scaled, adapted, llama):
        body = proof_body(model)
        assert not _neox_covered(model)
        with torch.inference_mode():
            expected = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
            assert torch.equal(body(ids), expected)


@pytest.mark.unit
def test_the_uniform_numbers_depend_on_seed_and_step_alone():
    from generation.sampling import sampling_uniforms

    first = sampling_uniforms(7, 1000)
    assert first == sampling_uniforms(7, 1000)
    assert first[:10] == sampling_uniforms(7, 10)  # a prefix: the budget does not matter
    assert sampling_uniforms(8, 10) != first[:10]
    assert all(0.0 <= u < 1.0 for u in first)
    assert abs(sum(first) / len(first) - 0.5) < 0.05
    assert sampling_uniforms(2**64 + 7, 3) == first[:3]  # seeds are taken modulo 2^64


@pytest.mark.unit
def test_the_sampler_draws_what_a_full_top_k_draws():
    """The sampler takes its top k by set maxima (``top_columns``), not torch.topk over the
    whole vocabulary: the same token for every row and uniform number, rows barred by the
    form (a few tokens left, or one forced) included; where logits tie, a token the proof
    explains exactly."""
    import torch

    from generation.proof import _excess_rows
    from generation.sampling import sample_rows

    def by_full_top_k(logits, *, top_k, top_p, uniforms):
        values, indices = torch.topk(logits, top_k, dim=-1)
        probs = torch.softmax(values.double(), dim=-1)
        cum = probs.cumsum(-1)
        kept = (cum - probs) <= (top_p if top_p and top_p < 1.0 else 1.0)
        kept[:, 0] = True
        mass = (probs * kept).sum(-1)
        target = uniforms * mass
        pick = torch.minimum((cum <= target[:, None]).sum(-1), kept.sum(-1) - 1)
        return indices.gather(1, pick[:, None])[:, 0]

    torch.manual_seed(1)
    logits = torch.randn(64, 32768) * 3
    logits[:8, 100:] = float("-inf")  # the form left a hundred tokens
    logits[8:16] = float("-inf")
    logits[8:16, 4242] = 1.0  # ... or forced one
    logits[16:24, ::64] += 12.0  # the best spread over every set
    uniforms = torch.rand(64, dtype=torch.float64)
    for top_k, top_p in ((50, 0.95), (1, 1.0), (200, 0.5), (50, 1.0)):
        drawn = sample_rows(logits, top_k=top_k, top_p=top_p, uniforms=uniforms)
        expected = by_full_top_k(logits, top_k=top_k, top_p=top_p, uniforms=uniforms)
        assert torch.equal(drawn, expected), (top_k, top_p)
    assert (drawn[8:16] == 4242).all()
    tied = (logits * 2).round()  # many ties, as int8 logits have
    drawn = sample_rows(tied, top_k=50, top_p=0.95, uniforms=uniforms)
    excess = _excess_rows(tied, drawn, uniforms, top_k=50, top_p=0.95, temperature=1.0)
    assert (excess == 0).all()


@pytest.mark.unit
def test_the_inverse_cdf_draw_is_the_filtered_distribution():
    """Evenly spaced uniform numbers pick each token of the top-k / top-p set in proportion
    to its probability there, and nothing outside it."""
    import torch

    from generation.sampling import sample_rows

    logits = torch.tensor([[4.0, 3.0, 2.5, 2.0, 0.0, -1.0, -3.0, 1.0]])
    grid = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    picks = torch.cat(
        [
            sample_rows(logits.expand(1000, -1), top_k=5, top_p=0.9, uniforms=u)
            for u in grid.split(1000)
        ]
    )
    top = torch.topk(logits[0], 5)
    probs = torch.softmax(top.values.double(), -1)
    kept = (probs.cumsum(-1) - probs) <= 0.9
    expected = torch.zeros(8, dtype=torch.float64)
    expected[top.indices[kept]] = probs[kept] / probs[kept].sum()
    counts = torch.bincount(picks, minlength=8).double() / len(picks)
    assert torch.allclose(counts, expected, atol=1e-3), (counts, expected)
    assert counts[4] == counts[5] == counts[6] == 0  # outside the top 5 or the top-p mass


def test_forgeries_are_refused(hashed_neox):
    """What the probe got accepted: the 20th best token everywhere (top-p ignored), other
    seeds, other temperatures, greedy decoding, a copy of another index's sample, a
    prefix, an empty sample. On the peaked model whose weights are the same everywhere."""
    import dataclasses

    import torch

    from generation.proof import samples_proof_check
    from generation.sampling import logits_adjust

    backend = TransformersBackend(str(hashed_neox), quantize="none")
    params = SamplingParams(max_new_tokens=48)
    prompts, seeds = PROMPTS, [51, 52, 53, 54]

    def check(samples):
        return samples_proof_check(
            backend=backend, prompts=prompts, seeds=seeds, samples=samples, params=params
        )

    def drawn(outs):
        return [(o.token_ids, o.finished) for o in outs]

    genuine = drawn(backend.generate(prompts, seeds, params))
    assert all(r.ok for r in check(genuine))

    def rank_20(prompt):
        ids = backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out = []
        with torch.inference_mode():
            for step in range(params.max_new_tokens):
                logits = backend.model(input_ids=torch.tensor([ids + out])).logits[:, -1]
                logits = logits_adjust(
                    logits.float(),
                    seen=torch.tensor([ids + out]),
                    step=step,
                    params=params,
                    eos_id=backend.eos_id,
                )
                logits[0, backend.eos_id] = float("-inf")
                out.append(int(torch.topk(logits[0], 20).indices[-1]))
        return out, False

    def other(**change):
        changed = dataclasses.replace(params, **change)
        return drawn(backend.generate(prompts, seeds, changed))

    forgeries = {
        "rank 20": [rank_20(p) for p in prompts],
        "other seeds": drawn(backend.generate(prompts, [s + 1 for s in seeds], params)),
        "temperature 1.6": other(temperature=1.6),
        "temperature 0.5": other(temperature=0.5),
        "greedy": other(top_k=1),
        "copies of sample 0": [genuine[0]] + [genuine[0]] * 3,
        "prefixes": [(ids[:12], False) for ids, _ in genuine],
        "empty": [([], False)] * 4,
    }
    for what, samples in forgeries.items():
        results = check(samples)
        forged = results[1:] if what == "copies of sample 0" else results
        assert not any(r.ok for r in forged), (what, forged)
        assert all(r.reason for r in forged), what


@pytest.mark.unit
def test_the_excess_is_the_logit_error_that_explains_a_token():
    """The sampler's own token has excess 0; rounding that swaps two near-tied tokens
    costs the swap's size, not the mass between them; a token far from the draw costs
    much more."""
    import torch

    from generation.proof import _excess_rows
    from generation.sampling import sample_rows

    torch.manual_seed(3)
    logits = torch.randn(200, 64) * 2
    logits[:, 5] = logits[:, 9] + 0.004  # a near tie
    u = torch.rand(200, dtype=torch.float64)
    drawn = sample_rows(logits, top_k=20, top_p=0.9, uniforms=u)
    exact = _excess_rows(logits, drawn, u, top_k=20, top_p=0.9, temperature=1.0)
    assert exact.max() == 0
    swapped = logits.clone()
    swapped[:, 5], swapped[:, 9] = logits[:, 9], logits[:, 5]
    noisy = _excess_rows(swapped, drawn, u, top_k=20, top_p=0.9, temperature=1.0)
    assert noisy.max() <= 0.01
    other = torch.where(drawn == 0, 1, 0)  # some other token than the draw
    far = _excess_rows(logits, other, u, top_k=20, top_p=0.9, temperature=1.0)
    assert (far > 0.1).float().mean() > 0.5


@pytest.mark.parametrize("form", ["kl3m", "kl3m-2"])
def test_a_sample_drawn_with_the_form_proves_and_one_edited_outside_it_fails(hashed_neox, form):
    """The form's masks (generation/form.py) are part of the draw: the proof replays them.
    A genuine sample passes; the same sample with one token changed to the one the model
    likes best among those the form barred there fails at that token."""
    import dataclasses

    import torch

    from generation.form import form_masks_replay, form_vocabulary

    params = dataclasses.replace(PARAMS, form=form)
    backend = TransformersBackend(str(hashed_neox), quantize="none")
    seeds = [41, 42, 43, 44]
    outs = backend.generate(PROMPTS, seeds, params)
    vocabulary = form_vocabulary(backend.tokenizer, backend.eos_id)
    for prompt, seed, out in zip(PROMPTS, seeds, outs, strict=True):
        assert sample_proof_check(
            backend=backend,
            prompt=prompt,
            seed=seed,
            token_ids=out.token_ids,
            finished=out.finished,
            params=params,
        ).ok
        # Both prompts end inside a header line: the form starts the next line.
        assert "\n" in vocabulary.pieces[out.token_ids[0]]
    prompt, seed, out = PROMPTS[0], seeds[0], outs[0]
    masks = form_masks_replay(
        vocabulary, head=prompt, drawn=out.token_ids, form=form, budget=params.max_new_tokens
    )
    allowed, _ = masks[0]
    context = backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([context])).logits[0, -1].clone()
        logits[allowed] = float("-inf")
    ids = list(out.token_ids)
    ids[0] = int(logits.argmax())  # the model's favourite among the barred
    edited = sample_proof_check(
        backend=backend,
        prompt=prompt,
        seed=seed,
        token_ids=ids,
        finished=out.finished,
        params=params,
    )
    assert not edited.ok and edited.first_violation == 0


def test_claims_the_budget_closed_prove_and_a_sample_going_on_past_the_close_fails():
    """kl3m-2 ends a top-down document at a whole claim once the budget cannot hold another
    (generation/form.py). On the shipped demo generator with a short budget, some samples
    end so; each proves, and the same sample with the forced end replaced by the token the
    model likes best fails right there. A form the proof does not know proves nothing."""
    import dataclasses

    import torch

    from generation.form import FORM_KL3M_2, FormUnknown, form_masks_replay, form_vocabulary
    from generation.parsing import patent_text_parse
    from tests.helpers import ROOT

    backend = TransformersBackend(str(ROOT / "models" / "demo-generator"), quantize="none")
    params = dataclasses.replace(SamplingParams(max_new_tokens=300), form=FORM_KL3M_2)
    prompt, seeds = "# Patent\n\n## Title", list(range(600, 616))
    vocabulary = form_vocabulary(backend.tokenizer, backend.eos_id)
    closed = []
    for seed, out in zip(seeds, backend.generate([prompt] * len(seeds), seeds, params)):
        drawn = [*out.token_ids, backend.eos_id]
        masks = form_masks_replay(
            vocabulary, head=prompt, drawn=drawn, form=FORM_KL3M_2, budget=params.max_new_tokens
        )
        if out.finished and masks[-1][0] is not None and masks[-1][0].tolist() == [backend.eos_id]:
            closed.append((seed, out))
            assert not patent_text_parse(prompt + out.text).last_claim_truncated
    assert closed, "no sample's claims were closed by the budget"
    for seed, out in closed[:2]:
        check = dict(backend=backend, prompt=prompt, seed=seed, params=params)
        assert sample_proof_check(token_ids=out.token_ids, finished=True, **check).ok
        context = backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([context + out.token_ids])).logits
        going_on = logits[0, -1].clone()
        going_on[backend.eos_id] = float("-inf")
        ids = [*out.token_ids, int(going_on.argmax())]
        edited = sample_proof_check(token_ids=ids, finished=True, **check)
        assert not edited.ok and edited.first_violation == len(out.token_ids)
    seed, out = closed[0]
    unknown = sample_proof_check(
        backend=backend,
        prompt=prompt,
        seed=seed,
        token_ids=out.token_ids,
        finished=True,
        params=dataclasses.replace(params, form="kl3m-9"),
    )
    assert not unknown.ok and "kl3m-9" in unknown.reason
    # Nor is one drawn under it: the sampler refuses the form rather than ignore it.
    with pytest.raises(FormUnknown, match="kl3m-9"):
        backend.generate([prompt], [seed], dataclasses.replace(params, form="kl3m-9"))


def test_the_form_keeps_every_finished_sample_in_shape():
    """On the shipped demo generator: whatever the model writes, a finished sample drawn with
    the form has its sections once each, in its mode's order, and claims numbered 1..n."""
    import dataclasses

    from generation.parsing import patent_text_parse
    from tests.helpers import ROOT

    backend = TransformersBackend(str(ROOT / "models" / "demo-generator"), quantize="none")
    params = dataclasses.replace(SamplingParams(max_new_tokens=512), form="kl3m")
    finished = 0
    for prompt, order in (
        ("# Patent\n\n## Title", "top-down"),
        ("# Patent\n\n## Claims", "bottom-up"),
    ):
        for out in backend.generate([prompt] * 8, list(range(500, 508)), params):
            if not out.finished:
                continue
            finished += 1
            parsed = patent_text_parse(prompt + out.text, finished=True)
            assert parsed.order == order and "repeated_section" not in parsed.issues
            assert parsed.title and parsed.abstract and parsed.claims
            assert [c.number for c in parsed.claims] == list(range(1, len(parsed.claims) + 1))
            assert not parsed.last_claim_truncated
    assert finished >= 8


def test_the_workers_int8_layer_gives_a_row_the_same_output_in_any_batch():
    """The worker's int8 layer (fbgemm's, each row scaled to [-1, 1] beside an anchor row):
    a row's output is bit-identical alone, among quiet rows, or beside a row of outliers,
    and stays near float32; plain dynamic int8 moves it when an outlier row joins."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    from generation.quantization import rows_scaled_int8_quantize

    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 200)
    layer = rows_scaled_int8_quantize(torch.nn.Sequential(linear))[0]
    plain = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)[0]
    row = torch.randn(1, 96)
    quiet = torch.randn(7, 96) * 0.5
    loud = torch.randn(1, 96) * 80
    with torch.no_grad():
        alone = layer(row)
        for batch in (torch.cat([quiet, row]), torch.cat([loud, row, quiet]), row.repeat(33, 1)):
            position = next(i for i in range(len(batch)) if torch.equal(batch[i], row[0]))
            assert torch.equal(layer(batch)[position], alone[0])
            assert layer(batch[None]).shape == (1, len(batch), 200)  # (batch, positions, features)
        assert (alone - linear(row)).abs().max() < 0.05 * linear(row).abs().max()
        assert not torch.equal(plain(torch.cat([loud, row]))[1], plain(row)[0])
        # The operator taking the activation scale as given (no anchor row) computes what
        # the anchor row made fbgemm compute, bit for bit.
        assert layer.given_scale is not None  # fbgemm on x86
        batch = torch.cat([loud, row, quiet])
        given = layer(batch)
        layer.given_scale = None
        assert torch.equal(layer(batch), given)
