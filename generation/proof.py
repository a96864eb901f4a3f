"""Proof of sampling: was this text sampled from this model, with this seed and these settings?

A contributor's worker submits the token ids it sampled. Re-generating them would cost as
much as the contributor spent; instead one forward pass over prompt + completion gives the
logits at every position. The sampler draws by inverse CDF with a uniform number that
depends only on the sample's seed and the step (``generation.sampling.sampling_uniforms``),
so at every position the checker knows which token the sampler took: the one whose interval
of cumulative mass, after the same adjustments (repetition penalty, minimum length,
temperature: ``generation.sampling.logits_adjust``), top-k and top-p, holds the uniform
number. Machines and precisions differ in float rounding, so a token passes where a small
error in the logits would explain it (``ProofRule``, ``_excess_rows``). That binds model,
seed, temperature, top-k and top-p at once; a sample copied to another index fails there.

A sample is whole: it ends with the end token, or it is exactly the unit's token budget
long; a shorter one is refused. The rates (false rejects of genuine samples, forgeries
caught, and how often a second token fits the tolerance) are measured by
``bench/proof_binding.py``, the cost by ``bench/proof.py``.
"""

import dataclasses
import time
from dataclasses import dataclass

from generation.form import (
    FormUnknown,
    form_masks_apply,
    form_masks_replay,
    form_rules,
    form_vocabulary,
)
from generation.proof_forward import proof_body
from generation.sampling import sampling_uniforms, top_columns


@dataclass(frozen=True)
class ProofRule:
    """When a sample passes, in logit errors after temperature (see ``_excess_rows``).

    Float rounding between sampling paths and machines (int8's per-tensor activation scales
    above all) moves a genuine draw across a nearby interval boundary now and then, by a
    little. So a position *agrees* within ``draw_tolerance``; a sample may hold up to
    ``slack`` of its positions (plus ``slack_min``) that disagree by at most ``hard_limit``;
    and every token must lie within ``member_tolerance`` of the top-k / top-p set. A
    different seed, temperature or top-p, a greedy sample or one copied from another index
    disagrees at most positions where the distribution is not peaked, many of them by
    more than ``hard_limit``. The values are chosen by bench/proof_binding.py (genuine
    samples of every sampling path under every checker, and the forgeries it makes;
    bench/README.md)."""

    draw_tolerance: float = 0.05
    slack: float = 0.05
    slack_min: int = 2
    hard_limit: float = 1.0
    member_tolerance: float = 1.0


PROOF_RULE = ProofRule()
# Rows of logits computed and checked at a time: enough that the output layer's weights
# (32k x 1024) are read from memory a few times per group rather than once per sample,
# few enough that the block (64 MiB in bf16) is not a burden.
ROWS_PER_BLOCK = 1024
# Each group's length is rounded up to a multiple of this: some other lengths take CPU
# flash attention a slow way (262 and 334 positions cost 40-65 % more in attention than
# 264 and 336), and a few more pads cost less than that.
_PAD_TO = 8


@dataclass
class ProofResult:
    ok: bool
    tokens: int
    violations: int
    first_violation: int | None  # position in the completion
    worst_excess: float  # the largest logit error a token needs (``_excess_rows``)
    seconds: float
    reason: str = ""  # why it failed, in words
    disagreements: int = 0  # positions beyond the draw tolerance (within the slack or not)
    # Per position: the draw's and the set membership's excess (``keep_excess=True``).
    excess: tuple | None = None


def _cut_short(token_ids, finished: bool, params) -> bool:
    """Neither ended by the end token nor as long as the budget: not a whole sample."""
    return not finished and len(token_ids) < params.max_new_tokens


def sample_proof_check(
    *,
    backend,
    prompt: str,
    seed: int,
    token_ids: list[int],
    finished: bool,
    params,
    rule: ProofRule = PROOF_RULE,
) -> ProofResult:
    """Checks ``token_ids`` (the completion, without the end token; ``finished``: the sampler
    then drew the end token) against ``backend``'s model (a TransformersBackend) and
    ``seed``."""
    return samples_proof_check(
        backend=backend,
        prompts=[prompt],
        seeds=[seed],
        samples=[(token_ids, finished)],
        params=params,
        rule=rule,
    )[0]


def samples_proof_check(
    *,
    backend,
    prompts: list[str],
    seeds: list[int],
    samples: list[tuple[list[int], bool]],
    params,
    rule: ProofRule = PROOF_RULE,
    group: int = 8,
    keep_excess: bool = False,
) -> list[ProofResult]:
    """``sample_proof_check`` for many samples: one forward pass per ``group`` of them
    (right-padded, so that no real position sees a pad), then the output layer and the
    check on the real positions only, in blocks of rows across the group's samples."""
    import torch

    started = time.perf_counter()
    tok = backend.tokenizer
    vocab = backend.model.config.vocab_size
    form_vocab = None
    if params.form:
        try:
            form_rules(params.form)
        except FormUnknown as exc:
            # A form this code cannot replay: no sample drawn under it proves.
            return [
                ProofResult(False, len(ids) + finished, 1, 0, float("inf"), 0.0, reason=str(exc))
                for ids, finished in samples
            ]
        form_vocab = form_vocabulary(tok, backend.eos_id)
    results: list[ProofResult | None] = [None] * len(samples)
    rows = []
    for i, (prompt, seed, (token_ids, finished)) in enumerate(
        zip(prompts, seeds, samples, strict=True)
    ):
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        drawn = list(token_ids) + ([backend.eos_id] if finished else [])
        bad = next((at for at, t in enumerate(drawn) if not 0 <= t < vocab), None)
        if _cut_short(token_ids, finished, params):
            results[i] = ProofResult(
                False,
                len(drawn),
                1,
                len(drawn),
                float("inf"),
                0.0,
                reason=f"cut short: {len(token_ids)} tokens without the end token, "
                f"and the budget is {params.max_new_tokens}",
            )
        elif bad is not None:
            results[i] = ProofResult(
                False,
                len(drawn),
                1,
                bad,
                float("inf"),
                0.0,
                reason=f"token {bad} is not a token id of the model",
            )
        else:
            # The skeleton's masks each token was drawn under (generation/form.py), replayed.
            masks = None
            if form_vocab is not None:
                masks = form_masks_replay(
                    form_vocab,
                    head=prompt,
                    drawn=drawn,
                    form=params.form,
                    budget=params.max_new_tokens,
                )
            rows.append((i, prompt_ids, drawn, sampling_uniforms(seed, len(drawn)), masks))
    # A group runs as long as its longest sample: grouping samples of like length wastes
    # the least on padding.
    rows.sort(key=lambda row: len(row[1]) + len(row[2]))
    body = proof_body(backend.model)
    head = backend.model.get_output_embeddings()
    pad = tok.pad_token_id if tok.pad_token_id is not None else backend.eos_id
    buffer = None
    for at in range(0, len(rows), group):
        chunk = rows[at : at + group]
        length = -(-max(len(p) + len(d) for _, p, d, *_ in chunk) // _PAD_TO) * _PAD_TO
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        for r, (_, prompt_ids, drawn, *_) in enumerate(chunk):
            ids[r, : len(prompt_ids) + len(drawn)] = torch.tensor(prompt_ids + drawn)
        with torch.inference_mode():
            # No attention mask: the pads come after every real token, so causal attention
            # alone keeps them out of every real position, and SDPA takes its causal path
            # (with a padding mask it spent a quarter of the proof in attention).
            hidden = body(ids.to(backend.device))
            # Position p of the sequence predicts token p + 1; only real positions go on.
            real = torch.cat(
                [
                    hidden[r, len(p) - 1 : len(p) - 1 + len(d)]
                    for r, (_, p, d, *_) in enumerate(chunk)
                ]
            )
            excesses, buffer = _excess_of_group(
                real,
                chunk,
                head=head,
                buffer=buffer,
                params=params,
                eos_id=backend.eos_id,
            )
        for (i, *_), (draw, member) in zip(chunk, excesses, strict=True):
            results[i] = _verdict(draw, member, rule)
            if keep_excess:
                results[i] = dataclasses.replace(results[i], excess=(draw, member))
    seconds = (time.perf_counter() - started) / max(len(samples), 1)
    return [dataclasses.replace(r, seconds=seconds) for r in results]


def _excess_of_group(real, chunk, *, head, buffer, params, eos_id: int):
    """Per sample of ``chunk``, each of its positions' excesses (``_excess_rows``: the draw's
    and the set membership's); the samples' hidden states are the rows of ``real`` in order, taken a block of rows at a time (a
    block may hold the end of one sample and the start of the next)."""
    import torch

    spans = []  # (first row in ``real``, prompt ids, drawn ids, form masks or None)
    count = 0
    for _, prompt_ids, drawn, _, masks in chunk:
        spans.append((count, prompt_ids, drawn, masks))
        count += len(drawn)
    uniforms = torch.tensor([u for _, _, _, draws, _ in chunk for u in draws], dtype=torch.float64)
    excess = torch.empty(2, count)
    for start in range(0, count, ROWS_PER_BLOCK):
        end = min(start + ROWS_PER_BLOCK, count)
        logits, buffer = _logits(head, real[start:end], buffer)
        tokens = torch.empty(end - start, dtype=torch.long)
        for first, prompt_ids, drawn, masks in spans:
            a, b = max(first, start), min(first + len(drawn), end)
            if a < b:
                tokens[a - start : b - start] = torch.tensor(drawn[a - first : b - first])
                _penalise_rows(
                    logits[a - start : b - start],
                    history=prompt_ids + drawn,
                    prompt_length=len(prompt_ids),
                    start=a - first,
                    params=params,
                    eos_id=eos_id,
                )
                if masks is not None:
                    form_masks_apply(logits[a - start : b - start], masks[a - first : b - first])
        draw, member = _excess_rows(
            logits,
            tokens.to(logits.device),
            uniforms[start:end].to(logits.device),
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            with_membership=True,
        )
        excess[0, start:end], excess[1, start:end] = draw.cpu(), member.cpu()
    sizes = [len(drawn) for _, _, drawn, *_ in chunk]
    return list(zip(excess[0].split(sizes), excess[1].split(sizes), strict=True)), buffer


def _logits(head, hidden, buffer):
    """The output layer on ``hidden`` rows, into ``buffer`` where it can: a fresh 64 MiB
    block per call spent a third of the layer's time on page faults."""
    import torch

    if not isinstance(head, torch.nn.Linear):
        return head(hidden), buffer  # e.g. a dynamically quantized layer: no out= form
    weight = head.weight
    rows = hidden.shape[0]
    if buffer is None or buffer.dtype != weight.dtype or buffer.shape[0] < rows:
        buffer = torch.empty(
            (max(rows, ROWS_PER_BLOCK), weight.shape[0]), dtype=weight.dtype, device=weight.device
        )
    out = torch.matmul(hidden, weight.t(), out=buffer[:rows])
    if head.bias is not None:
        out.add_(head.bias)
    return out, buffer


def _verdict(draw, member, rule: ProofRule) -> ProofResult:
    """``rule`` applied to one sample's per-position excesses."""
    outside = (member > rule.member_tolerance).nonzero().flatten()
    far = (draw > rule.hard_limit).nonzero().flatten()
    disagree = (draw > rule.draw_tolerance).nonzero().flatten()
    allowed = rule.slack_min + int(rule.slack * len(draw))
    reason = ""
    if len(outside):
        at = int(outside[0])
        reason = f"token {at} is outside the top-k / top-p set the sampler draws from"
    elif len(far):
        at = int(far[0])
        reason = f"token {at} is far from what the sampler draws there with this seed"
    elif len(disagree) > allowed:
        reason = (
            f"{len(disagree)} of {len(draw)} tokens are not what the sampler draws with this "
            f"seed (float noise explains at most {allowed})"
        )
    # Every position beyond the draw's tolerance or outside the set counts, whatever
    # decided: the first of them is where the text leaves what the sampler draws.
    bad = ((draw > rule.draw_tolerance) | (member > rule.member_tolerance)).nonzero().flatten()
    return ProofResult(
        ok=not reason,
        tokens=len(draw),
        violations=len(bad) if reason else 0,
        first_violation=int(bad[0]) if reason else None,
        worst_excess=round(float(draw.max()), 4) if len(draw) else 0.0,
        seconds=0.0,
        reason=reason,
        disagreements=len(disagree),
    )


def _penalise_rows(
    rows, *, history: list[int], prompt_length: int, start: int, params, eos_id: int
):
    """The repetition penalty and the minimum length of ``generation.sampling.logits_adjust``
    (all but the temperature, which ``_excess_rows`` applies to the few values it keeps)
    for the steps ``start, start + 1, ...`` of one sample, in place. Row t has seen the
    prompt and the tokens drawn before step ``start + t``; tests/test_proof.py checks that
    the two agree. Rows in bf16 (the bf16 checker's) keep the penalised values in bf16, a
    rounding of at most 1/256 of the value."""
    import torch

    steps = rows.shape[0]
    if params.repetition_penalty and params.repetition_penalty != 1.0:
        rp = params.repetition_penalty
        device = rows.device
        history_t = torch.tensor(history, dtype=torch.long, device=device)
        # Each row gets the whole history up to the last row's step, cut at its own step
        # by repeating the first entry (a duplicate index gets the same penalised value).
        width = prompt_length + start + steps - 1
        seen = history_t[:width].repeat(steps, 1)
        cut = prompt_length + start + torch.arange(steps, device=device)
        seen[torch.arange(width, device=device)[None, :] >= cut[:, None]] = history_t[0]
        score = rows.gather(1, seen)
        # index_put_, not scatter_: the same writes, 40x faster on bf16 rows.
        rows.index_put_(
            (torch.arange(steps, device=device)[:, None].expand_as(seen), seen),
            torch.where(score < 0, score * rp, score / rp),
        )
    if start < params.min_new_tokens:
        rows[: params.min_new_tokens - start, eos_id] = float("-inf")
    return rows


def _top_values(rows, k: int):
    """Each row's ``k`` largest values, best first, in float32: torch.topk's values."""
    return rows.gather(1, top_columns(rows, k)).float()


def _logit(x):
    """log(x / (1 - x)), finite at 0 and 1 (the interval ends that are no constraint)."""
    import torch

    return torch.special.logit(x, eps=1e-15)


# The logit errors (after temperature) at which ``_excess_rows`` asks whether a token could
# have been drawn: its answer is the smallest of these that explains the token.
EXCESS_GRID = (0.0, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0)


def _excess_rows(
    rows,
    tokens,
    uniforms,
    *,
    top_k: int,
    top_p: float,
    temperature: float,
    with_membership: bool = False,
):
    """Per row (penalised logits, before the temperature): the smallest error ``d`` in every
    logit (after temperature; a value of ``EXCESS_GRID``, inf if none) under which the
    sampler, drawing with the row's uniform number, could have taken the row's token. 0:
    these logits take exactly it.

    The sampler (``generation.sampling.sample_rows``) takes the first token, best first,
    whose cumulative mass exceeds ``u * M`` (``M`` the mass top-p keeps). With every logit
    off by at most ``d``, a token whose value is within ``2d`` of the token's may sit on
    either side of it (near ties reorder), the mass ``B`` of the ones surely better and
    ``A`` of those possibly better (the token's own included) move by at most ``2d`` in
    log-odds, and so do ``M`` and the top-k and top-p cuts. The token can be drawn iff
    ``B`` can be at most ``u * M`` and ``A`` can exceed it. ``with_membership``: also the
    smallest ``d`` that puts the token in the top-k / top-p set at all."""
    import torch

    temperature = max(temperature, 1e-5)
    value = rows.gather(1, tokens[:, None])[:, 0].float() / temperature
    vocab = rows.shape[-1]
    k = top_k if top_k and top_k < vocab else vocab
    best = _top_values(rows, k) / temperature  # sorted, best first
    boundary = best[:, -1]  # the k-th best: the top-k boundary
    probs = torch.softmax(best.double(), dim=-1)
    cum_before = probs.cumsum(-1) - probs
    odds_before = _logit(cum_before)  # the same at every d
    cut = torch.tensor(top_p if top_p and top_p < 1.0 else 1.0, dtype=torch.float64)
    u = uniforms.to(torch.float64)
    rows_count = value.shape[0]
    draw = torch.full((rows_count,), float("inf"))
    member = torch.full((rows_count,), float("inf"))
    for d in reversed(EXCESS_GRID):  # the smallest d that explains the token wins
        shift = 2 * d  # the most two logits' difference can be off
        sure = (probs * (best > value[:, None] + shift)).sum(-1)
        maybe = (probs * (best >= value[:, None] - shift)).sum(-1)
        better = torch.sigmoid(_logit(sure) - shift)
        upto = torch.sigmoid(_logit(maybe) + shift)
        in_top_k = value + shift >= boundary
        in_top_p = better <= cut
        may_keep = torch.sigmoid(odds_before - shift) <= cut
        may_keep[:, 0] = True
        surely_keep = torch.sigmoid(odds_before + shift) <= cut
        surely_keep[:, 0] = True
        mass_high = torch.sigmoid(_logit((probs * may_keep).sum(-1)) + shift)
        mass_low = torch.sigmoid(_logit((probs * surely_keep).sum(-1)) - shift)
        inside = in_top_k & in_top_p
        drawn = inside & (better <= u * mass_high) & (u * mass_low < upto)
        member = torch.where(inside, torch.full_like(member, d), member)
        draw = torch.where(drawn, torch.full_like(draw, d), draw)
    never = torch.full_like(draw, float("inf"))
    draw = torch.where(value == float("-inf"), never, draw)
    if with_membership:
        return draw, torch.where(value == float("-inf"), never, member)
    return draw
