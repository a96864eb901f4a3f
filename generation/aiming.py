"""Aiming a job where examiners search: its prompts seeded from real patents of a CPC area or
from the results of a search, so that the inventions land where prior art is wanted.

A seed is a reference patent: its title starts a top-down sample (the model writes the
abstract and the claims), the preamble of its first claim ("A method of ..., comprising")
starts a bottom-up one (the model writes the body of the claim and the rest). Only the
subject is given, never a whole claim, and the near-copy gate still rejects a sample that
recites its seed (or any other document). The job keeps what it was aimed at and which
patents seeded it (``GenerationJob.aim``)."""

import re

from patents.models import Patent

MAX_SEEDS = 50
_PREAMBLE_END = re.compile(r"\b(?:comprising|consisting|including|wherein|characterized)\b|:", re.I)
PREAMBLE_WORDS = 14


class AimError(ValueError):
    """Nothing to aim at (an unknown CPC area, a search without reference results)."""


def claim_preamble(text: str) -> str:
    """The subject of a claim: up to its transition word ("comprising", "consisting", ":"),
    at most PREAMBLE_WORDS words, so that the seed names the invention, not its elements."""
    text = " ".join((text or "").split())
    match = _PREAMBLE_END.search(text)
    head = text[: match.end()] if match else text
    words = head.split()[:PREAMBLE_WORDS]
    return " ".join(words)


def _seed(patent: Patent) -> dict:
    first = patent.claims.order_by("number").first()
    return {
        "public_id": patent.public_id,
        "source_id": patent.source_id,
        "title": " ".join(patent.title.split())[:300],
        "preamble": claim_preamble(first.text if first else patent.title),
    }


def aim_at_cpc(*, cpc: str, count: int = MAX_SEEDS) -> dict:
    """Seeds from the reference patents classified in ``cpc`` (a prefix: "A61K", "A61K 9"),
    the most recent first."""
    from patents.text import cpc_normalise

    prefix = (cpc_normalise(cpc) or cpc).strip().upper()
    if not prefix:
        raise AimError("give a CPC area, such as A61K or H04L 9")
    patents = (
        Patent.objects.filter(
            origin=Patent.Origin.REFERENCE,
            status=Patent.Status.PUBLISHED,
            cpc_codes__icontains=prefix,
        )
        .exclude(title="")
        .order_by("-source_date", "-pk")[: max(1, min(count, MAX_SEEDS)) * 3]
    )
    seeds = [
        _seed(p)
        for p in patents
        if any(code.upper().startswith(prefix) for code in p.cpc_codes.split())
    ][: max(1, min(count, MAX_SEEDS))]
    if not seeds:
        raise AimError(f"no reference patent is classified in {prefix}")
    return {"kind": "cpc", "value": prefix, "seeds": seeds}


def aim_at_search(*, query: str, count: int = 20) -> dict:
    """Seeds from the reference patents a search finds first, with the site's ranking."""
    from search.params import SearchFilters
    from search.selectors import search_patents

    query = (query or "").strip()
    if not query:
        raise AimError("give the search to aim at")
    result = search_patents(
        query, filters=SearchFilters(origin="reference"), k=max(1, min(count, MAX_SEEDS))
    )
    seeds = [_seed(hit.patent) for hit in result.hits]
    if not seeds:
        raise AimError("that search finds no reference patent to seed from")
    return {"kind": "search", "value": query[:500], "seeds": seeds}


def aim_topic(aim: dict, *, index: int, mode: str) -> str:
    """The seed text of sample ``index`` in ``mode``: a title for top-down, a claim's
    preamble for bottom-up, the seeds taken in turn."""
    from patents.vocabulary import TOP_DOWN

    seeds = (aim or {}).get("seeds") or []
    if not seeds:
        return ""
    seed = seeds[index % len(seeds)]
    return seed["title"] if mode == TOP_DOWN else seed["preamble"]
