"""The quality gate as named steps: a parsed sample passes each in turn or is rejected by the
first that objects. A step's name is recorded in the sample's details (``gate_step``), beside
the reason codes of ``generation.quality.REASONS``, so a rejection says which check made it.

Order matters for cost: the structural checks are free, the duplicate check one indexed
query, the shingle near-copy check a few band lookups, the embedding check one encoder pass.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from generation.parsing import ParsedPatent
from generation.quality import sample_judge
from patents.models import Patent
from patents.nearcopy import near_copy_find
from patents.text import content_hash
from search.nearcopy import embedding_near_copy_find


@dataclass
class GateObjection:
    reasons: list[str]
    details: dict = field(default_factory=dict)


GateStep = Callable[[ParsedPatent], GateObjection | None]


def gate_structure(parsed: ParsedPatent) -> GateObjection | None:
    """Title, abstract and numbered claims in shape, no runaway repetition."""
    reasons = sample_judge(parsed)
    return GateObjection(reasons) if reasons else None


def gate_duplicate(parsed: ParsedPatent) -> GateObjection | None:
    """The same content hash as a published generated invention."""
    digest = content_hash(
        title=parsed.title, abstract=parsed.abstract, claims=parsed.claims_as_dicts()
    )
    if Patent.objects.filter(content_hash=digest, origin=Patent.Origin.GENERATED).exists():
        return GateObjection(["duplicate"])
    return None


def _near_copy_objection(found) -> GateObjection | None:
    if not found:
        return None
    return GateObjection(
        ["near_copy"],
        {
            "near_copy": {
                "public_id": found.patent.public_id,
                "source_id": found.patent.source_id,
                "title": found.patent.title[:300],
                "similarity": round(found.similarity, 4),
                "method": found.method,
            }
        },
    )


def gate_shingle_near_copy(parsed: ParsedPatent) -> GateObjection | None:
    """Word-shingle overlap (MinHash bands) with any document, generated or reference."""
    return _near_copy_objection(
        near_copy_find(abstract=parsed.abstract, claims=[c.text for c in parsed.claims])
    )


def gate_embedding_near_copy(parsed: ParsedPatent) -> GateObjection | None:
    """A paraphrase: title + abstract within the embedding threshold of a document
    (NEAR_COPY_EMBEDDING_CHECK)."""
    if not settings.NEAR_COPY_EMBEDDING_CHECK:
        return None
    return _near_copy_objection(
        embedding_near_copy_find(title=parsed.title, abstract=parsed.abstract)
    )


GATE_STEPS: tuple[tuple[str, GateStep], ...] = (
    ("structure", gate_structure),
    ("duplicate", gate_duplicate),
    ("shingle_near_copy", gate_shingle_near_copy),
    ("embedding_near_copy", gate_embedding_near_copy),
)


def gate_run(parsed: ParsedPatent) -> tuple[list[str], dict]:
    """(reasons, details): empty reasons mean publish. Stops at the first objection."""
    for name, step in GATE_STEPS:
        objection = step(parsed)
        if objection is not None:
            return objection.reasons, {"gate_step": name, **objection.details}
    return [], {}
