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

from generation.proof_forward import proof_body

# Logit units after temperature. bench/proof.py measured the largest excess of genuine
# int8 samples under the fp32 check (0.1 on the full-size shape); this is well above it.
LOGIT_TOLERANCE = 0.5
# Probability mass beyond top_p that the better tokens may hold (int8 generation once drew
# the second token of a row whose best held 0.95+ under fp32: 3.1 logits "outside").
TOP_P_TOLERANCE = 0.05
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
    (right-padded, so that no real position sees a pad), then the output layer and the
    check on the real positions only, in blocks of rows across the group's samples."""
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
    # A group runs as long as its longest sample: grouping samples of like length wastes
    # the least on padding.
    rows.sort(key=lambda row: len(row[1]) + len(row[2]))
    body = proof_body(backend.model)
    head = backend.model.get_output_embeddings()
    pad = tok.pad_token_id if tok.pad_token_id is not None else backend.eos_id
    buffer = None
    for at in range(0, len(rows), group):
        chunk = rows[at : at + group]
        length = -(-max(len(p) + len(d) for _, p, d in chunk) // _PAD_TO) * _PAD_TO
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        for r, (_, prompt_ids, drawn) in enumerate(chunk):
            ids[r, : len(prompt_ids) + len(drawn)] = torch.tensor(prompt_ids + drawn)
        with torch.inference_mode():
            # No attention mask: the pads come after every real token, so causal attention
            # alone keeps them out of every real position, and SDPA takes its causal path
            # (with a padding mask it spent a quarter of the proof in attention).
            hidden = body(ids.to(backend.device))
            # Position p of the sequence predicts token p + 1; only real positions go on.
            real = torch.cat(
                [hidden[r, len(p) - 1 : len(p) - 1 + len(d)] for r, (_, p, d) in enumerate(chunk)]
            )
            excesses, buffer = _excess_of_group(
                real,
                chunk,
                head=head,
                buffer=buffer,
                params=params,
                eos_id=backend.eos_id,
                top_p_tolerance=top_p_tolerance,
            )
        for (i, _, _), excess in zip(chunk, excesses, strict=True):
            results[i] = _verdict(excess, logit_tolerance)
    seconds = (time.perf_counter() - started) / max(len(samples), 1)
    return [dataclasses.replace(r, seconds=seconds) for r in results]


def _excess_of_group(real, chunk, *, head, buffer, params, eos_id: int, top_p_tolerance: float):
    """Per sample of ``chunk``, each of its positions' excess (``_excess_rows``); the samples'
    hidden states are the rows of ``real`` in order, taken a block of rows at a time (a
    block may hold the end of one sample and the start of the next)."""
    import torch

    spans = []  # (first row in ``real``, prompt ids, drawn ids)
    count = 0
    for _, prompt_ids, drawn in chunk:
        spans.append((count, prompt_ids, drawn))
        count += len(drawn)
    excess = torch.empty(count)
    for start in range(0, count, ROWS_PER_BLOCK):
        end = min(start + ROWS_PER_BLOCK, count)
        logits, buffer = _logits(head, real[start:end], buffer)
        tokens = torch.empty(end - start, dtype=torch.long)
        for first, prompt_ids, drawn in spans:
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
        excess[start:end] = _excess_rows(
            logits,
            tokens.to(logits.device),
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            top_p_tolerance=top_p_tolerance,
        ).cpu()
    return excess.split([len(drawn) for _, _, drawn in chunk]), buffer


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


def _verdict(excess, logit_tolerance) -> ProofResult:
    bad = (excess > logit_tolerance).nonzero().flatten()
    return ProofResult(
        ok=len(bad) == 0,
        tokens=len(excess),
        violations=len(bad),
        first_violation=int(bad[0]) if len(bad) else None,
        worst_excess=round(float(excess.max()), 4),
        seconds=0.0,
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


# A row's top k lie in the k sets with the highest maxima, whatever the sets (an element
# outside them has k maxima at least as high above it). Sets of 8 strided columns give
# maxima in one vectorised pass, and the top k of the maxima are found the same way, down to
# a few hundred: 39 ms for 1024 x 32k rows against 85 ms for one torch.topk.
_SET = 8


def _top_columns(rows, k: int):
    """Columns of each row's ``k`` largest values (ties broken any way)."""
    import torch

    count, width = rows.shape
    if not _sets_help(width, k):
        return torch.topk(rows, k, dim=-1).indices
    sets = width // _SET  # set b holds the columns b, b + sets, b + 2 * sets, ...
    chosen = _top_columns(rows.view(count, _SET, sets).amax(1), k)
    offsets = sets * torch.arange(_SET, device=rows.device)
    columns = (chosen[:, None, :] + offsets[None, :, None]).reshape(count, -1)
    return columns.gather(1, torch.topk(rows.gather(1, columns), k, dim=-1).indices)


def _top_values(rows, k: int):
    """Each row's ``k`` largest values, best first, in float32: torch.topk's values."""
    import torch

    if _sets_help(rows.shape[-1], k):
        rows = rows.gather(1, _top_columns(rows, k))
    return torch.topk(rows, k, dim=-1).values.float()


def _sets_help(width: int, k: int) -> bool:
    return width % _SET == 0 and width // _SET >= 2 * k


def _excess_rows(
    rows, tokens, *, top_k: int, top_p: float, temperature: float, top_p_tolerance: float = 0.0
):
    """Per row (penalised logits, before the temperature), how far its token lies outside
    the top-k / top-p set the sampler draws from, in logit units after the temperature: 0
    inside it, else the logit it would need to gain to get in."""
    import torch

    temperature = max(temperature, 1e-5)
    value = rows.gather(1, tokens[:, None])[:, 0].float() / temperature
    vocab = rows.shape[-1]
    k = top_k if top_k and top_k < vocab else vocab
    best = _top_values(rows, k) / temperature  # sorted, best first
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
