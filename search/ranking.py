"""Ranking arithmetic: fusion of the dense and keyword lists, and the retrieval metrics.

Pure Python with no Django import, so that the site (``search.selectors``), `search_eval`
and the GPU bench (``bench/embedder_gpu.py``, run where Django is not installed) rank with
one and the same code.
"""

RRF_K = 60


def rrf_fuse(lists: list[list[int]], *, k: int = RRF_K, weights: list[float] | None = None):
    """Reciprocal rank fusion: sum of w / (k + rank) over the lists that hold an item."""
    weights = weights or [1.0] * len(lists)
    scores: dict[int, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def convex_fuse(lists: list[list[tuple[int, float]]], *, weights: list[float]):
    """Convex combination of min-max normalised scores: sum of w * (s - min) / (max - min)
    over the lists that hold an item (an item a list lacks scores 0 there, as its worst).

    Unlike RRF it keeps how far apart scores are: a dense list whose best hit is far ahead
    of the rest outweighs a keyword list of near-ties (measured in `search_eval`)."""
    scores: dict[int, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        if not ranked or not weight:
            continue
        values = [s for _, s in ranked]
        low, high = min(values), max(values)
        for item, score in ranked:
            # All tied (or a single hit): each is the list's best.
            norm = (score - low) / (high - low) if high > low else 1.0
            scores[item] = scores.get(item, 0.0) + weight * norm
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def dense_scores(*, dense_docs, dense_claims, claim_margin: float) -> dict[int, float]:
    """A patent's dense score: the better of its document vector and its best claim vector
    less ``claim_margin`` (a pasted claim is best matched by a claim, a description by the
    abstract, but claims resemble each other in form)."""
    dense: dict[int, float] = {}
    for pid, score, _ in dense_docs:
        dense[pid] = max(score, dense.get(pid, score))
    for pid, score, _ in dense_claims:
        score -= claim_margin
        dense[pid] = max(score, dense.get(pid, score))
    return dense


def hybrid_rank(*, dense_docs, dense_claims, keyword, alpha: float, claim_margin: float):
    """The site's ranking, also what `search_eval` measures: ``dense_scores``, then the
    convex fusion with the keyword scores."""
    dense = dense_scores(
        dense_docs=dense_docs, dense_claims=dense_claims, claim_margin=claim_margin
    )
    dense_ranked = sorted(dense.items(), key=lambda kv: -kv[1])
    return convex_fuse([dense_ranked, keyword], weights=[alpha, 1.0 - alpha])


def rank_of(ranked: list[int], target: int) -> int | None:
    """1-based rank of ``target`` in ``ranked``, None when absent."""
    try:
        return ranked.index(target) + 1
    except ValueError:
        return None


def retrieval_metrics(ranks: list[int | None]) -> dict:
    """recall@1, recall@10 and MRR over one rank (or None) per query."""
    n = len(ranks) or 1
    return {
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "recall@10": round(sum(1 for r in ranks if r and r <= 10) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
    }


def eval_query_ranks(
    *,
    target: int,
    dense_ids,
    dense_scores,
    claim_ids=None,
    claim_scores=None,
    claim_owner: list[int] | None = None,
    keyword_scored: list[tuple[int, float]],
    fusions: dict,
    alpha: float,
    claim_margin: float,
) -> dict:
    """The rank of ``target`` for one evaluation query under keyword, dense and each fusion
    of ``fusions`` (``{"alpha", "claim_margin"}``, each defaulting to the arguments, for the
    site's ranking, ``{"k",
    "weights"}`` for RRF). ``dense_*`` are one row of an inner-product search over document
    vectors; ``claim_*`` one row over claim vectors whose owners ``claim_owner`` names."""
    dense_docs = [
        (int(i), float(s), None) for i, s in zip(dense_ids, dense_scores, strict=True) if i >= 0
    ]
    dense_claims, seen = [], set()
    if claim_ids is not None:
        for i, s in zip(claim_ids, claim_scores, strict=True):
            owner = claim_owner[int(i)] if i >= 0 else None
            if owner is not None and owner not in seen:
                seen.add(owner)
                dense_claims.append((owner, float(s), 1))
    dense_only = hybrid_rank(
        dense_docs=dense_docs,
        dense_claims=dense_claims,
        keyword=[],
        alpha=1.0,
        claim_margin=claim_margin,
    )
    ranks = {
        "keyword": rank_of([item for item, _ in keyword_scored], target),
        "dense": rank_of([item for item, _ in dense_only], target),
    }
    for name, conf in fusions.items():
        if "k" not in conf:
            fused = hybrid_rank(
                dense_docs=dense_docs,
                dense_claims=dense_claims,
                keyword=keyword_scored,
                alpha=conf.get("alpha", alpha),
                claim_margin=conf.get("claim_margin", claim_margin),
            )
        else:
            fused = rrf_fuse(
                [[i for i, _ in dense_only], [i for i, _ in keyword_scored]],
                k=conf["k"],
                weights=conf["weights"],
            )
        ranks[name] = rank_of([item for item, _ in fused], target)
    return ranks
