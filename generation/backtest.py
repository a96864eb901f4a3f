"""Backtest: would a generator that knew only the patents before a date have anticipated the
ones after it?

A generator trained with ``train_patent_model --cutoff DATE`` (its training report names
the cutoff, and nothing dated on or after it, or undated, was read) writes ``count``
inventions, in both modes, through the job path's sampler (form and early stop included).
Those that pass the structural gate form the generated corpus. Every real patent published
on or after the cutoff is then scored against it, claim by claim, with the site's dense
score (a claim against an invention's title + abstract, or against its claims less
SEARCH_CLAIM_MARGIN, `search.ranking.dense_scores`).

What counts as "anticipated" is calibrated on real pairs, never on the generated text:

- **random pairs** (the threshold used): a patent's first claim against another, random
  patent. The threshold is the score that only 1 % of random pairs reach: a hit is closer
  than 99 % of unrelated real patents come.
- **own-document pairs** (the check on it): a patent's first claim against its own title,
  abstract and other claims; the share of them above the threshold says how often a truly
  related document clears it.
- **cited pairs**: a patent against a reference it cites, where both are in the corpus
  (only a handful in the shared file, so reported, not used).

Reported: hits per 1,000 generated inventions and the share of later patents anticipated,
each with its 95 % Wilson interval, the calibration's numbers and pair counts, and the best
pairs side by side.
"""

import datetime as dt
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from generation.form import FORM_LATEST

logger = logging.getLogger(__name__)

# Later patents are scored by their independent claims (what a patent claims: a dependent
# claim's text alone, "The method of claim 1, wherein the cell is E. coli", is vague enough
# to match much), three at most per patent to bound the cost.
CLAIMS_PER_LATER_PATENT = 3
CALIBRATION_PAIRS = 500
RANDOM_PAIR_QUANTILE = 0.99


class BacktestError(ValueError):
    """The backtest cannot be run as asked (a model trained without a cutoff, no data)."""


def record_published_before(record: dict, cutoff: dt.date) -> bool | None:
    """True when ``record`` was certainly published before ``cutoff``, False when certainly
    on or after it, None when that is unknown (undated, or filed before it: a filing date
    says nothing of when the patent was published)."""
    raw = (record.get("date") or "")[:10]
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        return None
    kind = (record.get("date_type") or "publication").lower()
    if kind == "filing":
        return False if day >= cutoff else None
    return day < cutoff


def model_cutoff_check(model_dir: Path, cutoff: dt.date) -> dt.date:
    """The cutoff ``model_dir`` was trained with; refuses a model that may have read text
    from on or after ``cutoff``."""
    report = Path(model_dir) / "training_report.json"
    try:
        trained = json.loads(report.read_text()).get("cutoff")
    except (OSError, ValueError):
        trained = None
    if not trained:
        raise BacktestError(
            f"{model_dir} has no training cutoff on record ({report.name}): train one with "
            f"`train_patent_model --cutoff {cutoff.isoformat()}` so that no later patent "
            "reaches it"
        )
    trained_day = dt.date.fromisoformat(trained)
    if trained_day > cutoff:
        raise BacktestError(
            f"{model_dir} was trained on patents up to {trained}, after the backtest's cutoff "
            f"{cutoff.isoformat()}: it may have read the patents it is tested on"
        )
    return trained_day


def _claims(record: dict) -> list[str]:
    from patents.text import claims_texts

    return claims_texts(record.get("claims"))


def _document(title: str, abstract: str) -> str:
    return f"{title}. {abstract}".strip(". ")


@dataclass
class Inventions:
    """Documents and claims embedded; ``claim_owner[j]`` is the invention of claim row j."""

    documents: object
    claims: object
    claim_owner: list[int]


def inventions_embed(items: list[tuple[str, str, list[str]]], *, embed) -> Inventions:
    import numpy as np

    documents = embed([_document(t, a) for t, a, _ in items])
    texts, owner = [], []
    for i, (_, _, claims) in enumerate(items):
        for text in claims:
            texts.append(text)
            owner.append(i)
    claims = embed(texts) if texts else np.zeros((0, documents.shape[1]), dtype="float32")
    return Inventions(documents, claims, owner)


def scores_against(queries, inventions: Inventions, *, claim_margin: float):
    """[query, invention]: the better of the query against the invention's document, and
    against its best claim less ``claim_margin`` (the site's dense score)."""
    import numpy as np

    scores = queries @ inventions.documents.T
    if len(inventions.claim_owner):
        by_claim = queries @ inventions.claims.T - claim_margin
        owner = np.asarray(inventions.claim_owner)
        best = np.full_like(scores, -np.inf)
        np.maximum.at(best.T, owner, by_claim.T)
        scores = np.maximum(scores, best)
    return scores


@dataclass
class Calibration:
    threshold: float
    random_pairs: int
    random_quantiles: dict
    own_pairs: int
    own_above_threshold: float
    own_median: float
    cited_pairs: int
    cited_scores: list = field(default_factory=list)


def calibrate(records: list[dict], *, embed, claim_margin: float, seed: int) -> Calibration:
    """The threshold from real pairs (module docstring)."""
    import numpy as np

    rng = random.Random(seed)
    usable = [r for r in records if r.get("title") and r.get("abstract") and len(_claims(r))]
    if len(usable) < 3:
        raise BacktestError("fewer than three patents with a title, an abstract and claims")
    pool = rng.sample(usable, min(CALIBRATION_PAIRS, len(usable)))
    firsts = embed([_claims(r)[0] for r in pool])
    own = inventions_embed([(r["title"], r["abstract"], _claims(r)[1:]) for r in pool], embed=embed)
    own_scores = np.diag(scores_against(firsts, own, claim_margin=claim_margin))
    # Random pairs: each claim against the invention of every other sampled patent.
    everyone = scores_against(firsts, own, claim_margin=claim_margin)
    mask = ~np.eye(len(pool), dtype=bool)
    random_scores = everyone[mask]
    threshold = float(np.quantile(random_scores, RANDOM_PAIR_QUANTILE))
    by_id = {r.get("id"): r for r in usable}
    cited = []
    for r in usable:
        for ref in r.get("citations") or []:
            target = by_id.get(ref)
            if target is not None and target is not r:
                cited.append((r, target))
    cited_scores = []
    if cited:
        queries = embed([_claims(r)[0] for r, _ in cited])
        targets = inventions_embed(
            [(t["title"], t["abstract"], _claims(t)) for _, t in cited], embed=embed
        )
        cited_scores = [
            round(float(s), 4)
            for s in np.diag(scores_against(queries, targets, claim_margin=claim_margin))
        ]
    return Calibration(
        threshold=round(threshold, 4),
        random_pairs=int(random_scores.size),
        random_quantiles={
            q: round(float(np.quantile(random_scores, q)), 4) for q in (0.5, 0.9, 0.99, 0.999)
        },
        own_pairs=len(pool),
        own_above_threshold=round(float(np.mean(own_scores >= threshold)), 4),
        own_median=round(float(np.median(own_scores)), 4),
        cited_pairs=len(cited),
        cited_scores=cited_scores,
    )


def backtest_generate(*, backend, count: int, seed: int, max_new_tokens: int, form: str):
    """``count`` samples, alternating top-down and bottom-up, through the job path's sampler
    (form, early stop); the ones that pass the structural gate, and the CPU seconds spent."""
    from generation.batches import prefix_decider
    from generation.early_stop import END_OF_DOCUMENT
    from generation.parsing import patent_text_parse
    from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
    from generation.quality import sample_judge
    from generation.sampling import SamplingParams

    params = SamplingParams(max_new_tokens=max_new_tokens, form=form)
    prompts = [KL3M_TOP_DOWN if i % 2 == 0 else KL3M_BOTTOM_UP for i in range(count)]
    seeds = [seed + i for i in range(count)]
    kept, tokens = [], 0
    started = time.process_time()
    for at in range(0, count, 16):
        chunk_prompts, chunk_seeds = prompts[at : at + 16], seeds[at : at + 16]
        outputs = backend.generate(
            chunk_prompts,
            chunk_seeds,
            params,
            decide=prefix_decider(prompt_format="kl3m", prompts=chunk_prompts),
        )
        for prompt, sample_seed, out in zip(chunk_prompts, chunk_seeds, outputs, strict=True):
            tokens += out.tokens
            if out.stopped and out.stopped != END_OF_DOCUMENT:
                continue
            parsed = patent_text_parse(prompt + out.text, finished=out.finished)
            if sample_judge(parsed):
                continue
            kept.append(
                {
                    "seed": sample_seed,
                    "mode": parsed.order,
                    "title": parsed.title,
                    "abstract": parsed.abstract,
                    "claims": [c.text for c in parsed.claims],
                }
            )
    return kept, time.process_time() - started, tokens


def backtest_run(
    *,
    records: list[dict],
    cutoff: dt.date,
    backend,
    count: int,
    seed: int = 0,
    max_new_tokens: int = 768,
    form: str = FORM_LATEST,
    embed=None,
    claim_margin: float | None = None,
    pairs_shown: int = 10,
) -> dict:
    """The backtest's figures (module docstring) as a JSON-ready dict."""
    import numpy as np
    from django.conf import settings

    from generation.verdicts import wilson_interval

    if embed is None:
        from search.embeddings import embed
    margin = settings.SEARCH_CLAIM_MARGIN if claim_margin is None else claim_margin
    from patents.text import claim_find_dependency

    later = [
        r
        for r in records
        if record_published_before(r, cutoff) is False
        and any(claim_find_dependency(c) is None for c in _claims(r))
    ]
    if not later:
        raise BacktestError(f"no patent in the data was published on or after {cutoff}")
    calibration = calibrate(records, embed=embed, claim_margin=margin, seed=seed)
    generated, cpu_seconds, tokens = backtest_generate(
        backend=backend, count=count, seed=seed, max_new_tokens=max_new_tokens, form=form
    )
    result = {
        "cutoff": cutoff.isoformat(),
        "generated": count,
        "passed_gate": len(generated),
        "generation_cpu_seconds": round(cpu_seconds, 1),
        "tokens": tokens,
        "later_patents": len(later),
        "calibration": calibration.__dict__,
        "threshold": calibration.threshold,
    }
    if not generated:
        result.update(hits=0, anticipated=0, best_pairs=[])
        result.update(_shares(0, count, 0, len(later), wilson_interval))
        return result
    inventions = inventions_embed(
        [(g["title"], g["abstract"], g["claims"]) for g in generated], embed=embed
    )
    query_texts, query_owner = [], []
    for index, record in enumerate(later):
        independent = [c for c in _claims(record) if claim_find_dependency(c) is None]
        for text in independent[:CLAIMS_PER_LATER_PATENT]:
            query_texts.append(text)
            query_owner.append(index)
    scores = scores_against(embed(query_texts), inventions, claim_margin=margin)
    best_invention = scores.argmax(axis=1)
    best_score = scores.max(axis=1)
    per_later: dict[int, tuple[float, int, int]] = {}
    for row, index in enumerate(query_owner):
        if index not in per_later or best_score[row] > per_later[index][0]:
            per_later[index] = (float(best_score[row]), int(best_invention[row]), row)
    hits = {i: v for i, v in per_later.items() if v[0] >= calibration.threshold}
    hitting = {v[1] for v in hits.values()}
    result.update(_shares(len(hitting), count, len(hits), len(later), wilson_interval))
    result["hits"] = len(hitting)
    result["anticipated"] = len(hits)
    # The same at the score only 0.1 % of random pairs reach: how much rests on the margin.
    strict_threshold = calibration.random_quantiles[0.999]
    strict = {i: v for i, v in per_later.items() if v[0] >= strict_threshold}
    result["strict"] = {
        "threshold": strict_threshold,
        "hits": len({v[1] for v in strict.values()}),
        "anticipated": len(strict),
        **_shares(
            len({v[1] for v in strict.values()}), count, len(strict), len(later), wilson_interval
        ),
    }
    ranked = sorted(per_later.items(), key=lambda item: -item[1][0])[:pairs_shown]
    result["best_pairs"] = [
        {
            "score": round(score, 4),
            "hit": score >= calibration.threshold,
            "later_patent": later[index].get("id"),
            "later_date": later[index].get("date"),
            "later_title": later[index].get("title"),
            "later_claim": query_texts[row],
            "generated_title": generated[invention]["title"],
            "generated_claim_1": generated[invention]["claims"][0],
            "generated_seed": generated[invention]["seed"],
        }
        for index, (score, invention, row) in ranked
    ]
    result["best_score_quantiles"] = {
        q: round(float(np.quantile([v[0] for v in per_later.values()], q)), 4)
        for q in (0.5, 0.9, 0.99)
    }
    return result


def _shares(hitting: int, generated: int, anticipated: int, later: int, wilson) -> dict:
    low, high = wilson(hitting, generated)
    a_low, a_high = wilson(anticipated, later)
    return {
        "hits_per_1000": round(1000 * hitting / generated, 2) if generated else 0.0,
        "hits_per_1000_interval": [round(1000 * low, 2), round(1000 * high, 2)],
        "share_anticipated": round(anticipated / later, 4) if later else 0.0,
        "share_anticipated_interval": [round(a_low, 4), round(a_high, 4)],
    }
