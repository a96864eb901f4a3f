"""The quality gate: publish or reject a parsed sample, and say why."""

import re

from generation.parsing import ParsedPatent

TITLE_CHARS = (3, 300)
ABSTRACT_CHARS = (30, 6000)
CLAIM_CHARS = (10, 6000)
MAX_CLAIMS = 150
REPETITION_NGRAM = 4
# Share of repeated word 4-grams above which a text is degenerate. Real patents from the
# shared corpus (claims + abstract) sit at a median of ~0.25 and a 99th percentile of ~0.62
# (tests/test_generation_text.py measures this on the fixture); runaway loops score above 0.8.
REPETITION_MAX = 0.7

REASONS = {
    "missing_title": "no title",
    "missing_abstract": "no abstract",
    "missing_claims": "no claims",
    "claims_not_sequential": "claims are not numbered 1..n",
    "claim1_dependent": "claim 1 is not independent",
    "bad_dependency": "a dependent claim refers to a claim that does not precede it",
    "truncated_claim": "the last claim is cut off",
    "title_length": "title too short or too long",
    "abstract_length": "abstract too short or too long",
    "claim_length": "a claim is too short or too long",
    "too_many_claims": "too many claims",
    "repetition": "degenerate repetition",
    "duplicate": "exact duplicate of a published invention",
    "near_copy": "near-copy of an existing document",
    "unparseable": "no patent structure found",
}

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def repetition_ratio(text: str, *, n: int = REPETITION_NGRAM) -> float:
    """Share of word n-grams that repeat an earlier one (0 = none, ->1 = a loop)."""
    words = _WORD_RE.findall(text.lower())
    if len(words) < n + 1:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def sample_judge(parsed: ParsedPatent) -> list[str]:
    """Reasons to reject; an empty list means publish."""
    reasons: list[str] = []
    if "no_sections" in parsed.issues and not parsed.claims:
        return ["unparseable"]
    if not parsed.title:
        reasons.append("missing_title")
    elif not TITLE_CHARS[0] <= len(parsed.title) <= TITLE_CHARS[1]:
        reasons.append("title_length")
    if not parsed.abstract:
        reasons.append("missing_abstract")
    elif not ABSTRACT_CHARS[0] <= len(parsed.abstract) <= ABSTRACT_CHARS[1]:
        reasons.append("abstract_length")
    if not parsed.claims:
        reasons.append("missing_claims")
    else:
        numbers = [c.number for c in parsed.claims]
        if numbers != list(range(1, len(numbers) + 1)):
            reasons.append("claims_not_sequential")
        if parsed.claims[0].depends_on is not None:
            reasons.append("claim1_dependent")
        existing: set[int] = set()
        for claim in parsed.claims:
            if claim.depends_on is not None and (
                claim.depends_on >= claim.number or claim.depends_on not in existing
            ):
                if claim.number != 1:
                    reasons.append("bad_dependency")
                    break
            existing.add(claim.number)
        if parsed.last_claim_truncated:
            reasons.append("truncated_claim")
        if len(parsed.claims) > MAX_CLAIMS:
            reasons.append("too_many_claims")
        if any(not CLAIM_CHARS[0] <= len(c.text) <= CLAIM_CHARS[1] for c in parsed.claims):
            reasons.append("claim_length")
    body = " ".join([parsed.abstract] + [c.text for c in parsed.claims])
    if repetition_ratio(body) > REPETITION_MAX:
        reasons.append("repetition")
    return reasons
