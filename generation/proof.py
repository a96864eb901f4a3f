"""Proof of sampling: was this text sampled from this model with these settings?

A contributor's worker (#18) submits the token ids it sampled. Re-generating them would cost
as much as the contributor spent; instead one forward pass over prompt + completion gives
the logits at every position, and each submitted token must lie inside the set the sampler
could draw from there: after the same adjustments (repetition penalty, minimum length,
temperature: ``generation.sampling.logits_adjust``), among the ``top_k`` best and inside the
``top_p`` mass of those. Machines differ in float rounding (and int8 generation differs from
the fp32 check more), so a token may sit ``logit_tolerance`` beyond the boundary, and the
tokens better than it may hold ``top_p_tolerance`` more mass than ``top_p``.

A forged, edited or copied text puts tokens outside those sets almost everywhere it differs;
a genuine one passes on another machine. The rates are measured by ``bench/proof.py``.
"""

import dataclasses
import time
from dataclasses import dataclass

# Logit units after temperature. bench/proof.py measured the largest excess of genuine
# int8 samples under the fp32 check (0.1 on the full-size shape); this is well above it.
LOGIT_TOLERANCE = 0.5
# Probability mass beyond top_p that the better tokens may hold (int8 generation once drew
# the second token of a row whose best held 0.95+ under fp32: 3.1 logits "outside").
TOP_P_TOLERANCE = 0.05


@dataclass
class ProofResult:
    ok: bool
    tokens: int
    violations: int
    first_violation: int | None  # position in the completion
    worst_excess: float  # how far the worst token lies beyond its boundary (logit units)
    seconds: float


def sample_proof_check(
    *,
    backend,
    prompt: str,
    token_ids: list[int],
    finished: bool,
    params,
    logit_tolerance: float = LOGIT_TOLERANCE,
    top_p_tolerance: float = TOP_P_TOLERANCE,
) -> ProofResult:
    """Checks ``token_ids`` (the completion, without the end token; ``finished``: the sampler
    then drew the end token) against ``backend``'s model (a TransformersBackend)."""
    return samples_proof_check(
        backend=backend,
        prompts=[prompt],
        samples=[(token_ids, finished)],
        params=params,
        logit_tolerance=logit_tolerance,
        top_p_tolerance=top_p_tolerance,
    )[0]


def samples_proof_check(
    *,
    backend,
    prompts: list[str],
    samples: list[tuple[list[int], bool]],
    params,
    logit_tolerance: float = LOGIT_TOLERANCE,
    top_p_tolerance: float = TOP_P_TOLERANCE,
    group: int = 8,
) -> list[ProofResult]:
    """``sample_proof_check`` for many samples: one forward pass per ``group`` of them
    (right-padded, so that no real position sees a pad), then each sample's positions
    checked at once. The output layer runs per sample, on its real positions only."""
    import torch

    started = time.perf_counter()
    tok = backend.tokenizer
    vocab = backend.model.config.vocab_size
    results: list[ProofResult | None] = [None] * len(samples)
    rows = []
    for i, (prompt, (token_ids, finished)) in enumerate(zip(prompts, samples, strict=True)):
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        drawn = list(token_ids) + ([backend.eos_id] if finished else [])
        if not drawn:
            results[i] = ProofResult(True, 0, 0, None, 0.0, 0.0)
        elif any(not 0 <= t < vocab for t in drawn):
            results[i] = ProofResult(False, len(drawn), 1, 0, float("inf"), 0.0)
        else:
            rows.append((i, prompt_ids, drawn))
    body = backend.model.base_model
    head = backend.model.get_output_embeddings()
    pad = tok.pad_token_id if tok.pad_token_id is not None else backend.eos_id
    for at in range(0, len(rows), group):
        chunk = rows[at : at + group]
        length = max(len(p) + len(d) for _, p, d in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        for r, (_, prompt_ids, drawn) in enumerate(chunk):
            ids[r, : len(prompt_ids) + len(drawn)] = torch.tensor(prompt_ids + drawn)
        with torch.inference_mode():
            # No attention mask: the pads come after every real token, so causal attention
            # alone keeps them out of every real position, and SDPA takes its causal path
            # (with a padding mask it spent a quarter of the proof in attention).
            hidden = body(input_ids=ids.to(backend.device), use_cache=False).last_hidden_state
            for r, (i, prompt_ids, drawn) in enumerate(chunk):
                # Position p of the sequence predicts token p + 1.
                first = len(prompt_ids) - 1
                logits = head(hidden[r, first : first + len(drawn)]).float().cpu()
                results[i] = _check_one(
                    logits,
                    prompt_ids,
                    drawn,
                    params,
                    backend.eos_id,
                    logit_tolerance,
                    top_p_tolerance,
                )
    seconds = (time.perf_counter() - started) / max(len(samples), 1)
    return [dataclasses.replace(r, seconds=seconds) for r in results]


def _check_one(logits, prompt_ids, drawn, params, eos_id, logit_tolerance, top_p_tolerance):
    """One sample's verdict from the logits at its drawn positions (row t predicts
    ``drawn[t]``), in blocks that bound the (positions x history) index."""
    import torch

    history = torch.tensor(prompt_ids + drawn, dtype=torch.long)
    drawn_t = history[len(prompt_ids) :]
    excess = torch.empty(len(drawn))
    for start in range(0, len(drawn), 256):
        end = min(start + 256, len(drawn))
        # Seen before step t: the prompt and the tokens drawn at steps < t. Each row gets
        # the whole history up to the block's end, cut at its own step by repeating its
        # first entry (a duplicate index gets the same penalised value: harmless).
        width = len(prompt_ids) + end - 1
        seen = history[:width].repeat(end - start, 1)
        cut = len(prompt_ids) + torch.arange(start, end)
        seen[torch.arange(width)[None, :] >= cut[:, None]] = history[0]
        excess[start:end] = _excess_rows(
            # In place: ``logits`` is this sample's own copy and is not read again.
            _adjust_rows(logits[start:end], seen=seen, start=start, params=params, eos_id=eos_id),
            drawn_t[start:end],
            top_k=params.top_k,
            top_p=params.top_p,
            top_p_tolerance=top_p_tolerance,
        )
    bad = (excess > logit_tolerance).nonzero().flatten()
    return ProofResult(
        ok=len(bad) == 0,
        tokens=len(drawn),
        violations=len(bad),
        first_violation=int(bad[0]) if len(bad) else None,
        worst_excess=round(float(excess.max()), 4),
        seconds=0.0,
    )


def _adjust_rows(rows, *, seen, start: int, params, eos_id: int):
    """``generation.sampling.logits_adjust`` for many steps at once, in place (``seen``: per step,
    the token ids seen so far); tests/test_proof.py checks that the two agree."""
    import torch

    if params.repetition_penalty and params.repetition_penalty != 1.0:
        rp = params.repetition_penalty
        score = rows.gather(1, seen)
        rows.scatter_(1, seen, torch.where(score < 0, score * rp, score / rp))
    steps = torch.arange(start, start + rows.shape[0])
    rows[steps < params.min_new_tokens, eos_id] = float("-inf")
    return rows.div_(max(params.temperature, 1e-5))


def _excess_rows(rows, tokens, *, top_k: int, top_p: float, top_p_tolerance: float = 0.0):
    """Per row, how far (in logit units) its token lies outside the top-k / top-p set the
    sampler draws from: 0 inside it, else the logit it would need to gain to get in."""
    import torch

    value = rows.gather(1, tokens[:, None])[:, 0]
    vocab = rows.shape[-1]
    k = top_k if top_k and top_k < vocab else vocab
    best = torch.topk(rows, k, dim=-1).values  # sorted, best first
    boundary = best[:, -1]  # the k-th best: the top-k boundary
    out = (boundary - value).clamp(min=0)
    if top_p and top_p < 1.0:
        # The sampler keeps a token when the mass of the better ones (within the top k,
        # renormalised) is at most top_p. Near a peaked row that set jumps (0.96 on one
        # token keeps it alone, 0.94 lets the next in), so a little float noise moves a
        # token across: the mass gets its own tolerance, TOP_P_TOLERANCE.
        probs = torch.softmax(best, dim=-1)
        mass_before = (probs * (best > value[:, None])).sum(-1)
        kept = ((probs.cumsum(-1) - probs) <= top_p).sum(-1).clamp(min=1)
        gap = (best.gather(1, (kept - 1)[:, None])[:, 0] - value).clamp(min=0)
        outside = mass_before > top_p + top_p_tolerance
        out = torch.maximum(out, torch.where(outside, gap, torch.zeros_like(gap)))
    return torch.where(value == float("-inf"), torch.full_like(out, float("inf")), out)
