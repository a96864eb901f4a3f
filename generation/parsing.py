"""Turns model text of either order into title, abstract and numbered claims.

Never raises on model output: problems come back as structured ``issues``.
"""

import re
from dataclasses import dataclass, field

from patents.text import claim_find_dependency
from patents.vocabulary import BOTTOM_UP, TOP_DOWN

SECTION_RE = re.compile(
    r"^[ \t]*#{2,3}[ \t]*(title|abstract|claims?|제목|요약|청구항|청구범위)[ \t]*:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
DOC_START_RE = re.compile(r"^[ \t]*#[ \t]*Patent[ \t]*$", re.IGNORECASE | re.MULTILINE)
CLAIM_START_RE = re.compile(r"(?:^|\n)[ \t]*(\d{1,3})[ \t]*[.)][ \t]+")
SECTION_NAMES = {
    "title": "title",
    "제목": "title",
    "abstract": "abstract",
    "요약": "abstract",
    "claim": "claims",
    "claims": "claims",
    "청구항": "claims",
    "청구범위": "claims",
}
END_MARKERS = ("<|end|>", "</s>", "<|endoftext|>")


@dataclass
class ParsedClaim:
    number: int
    text: str
    depends_on: int | None

    def as_dict(self) -> dict:
        return {"number": self.number, "text": self.text, "depends_on": self.depends_on}


@dataclass
class ParsedPatent:
    title: str = ""
    abstract: str = ""
    claims: list[ParsedClaim] = field(default_factory=list)
    order: str = ""
    issues: list[str] = field(default_factory=list)
    last_claim_truncated: bool = False

    def claims_as_dicts(self) -> list[dict]:
        return [c.as_dict() for c in self.claims]


def text_squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _claims_parse(body: str) -> list[ParsedClaim]:
    matches = list(CLAIM_START_RE.finditer(body))
    claims: list[ParsedClaim] = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        text = text_squash(body[match.end() : end])
        if not text:
            continue
        number = int(match.group(1))
        claims.append(ParsedClaim(number, text, claim_find_dependency(text)))
    return claims


def patent_text_parse(text: str, *, finished: bool = True) -> ParsedPatent:
    """Parses a generated document. ``finished``: the model stopped by itself (EOS)."""
    result = ParsedPatent()
    text = text or ""
    for marker in END_MARKERS:
        if marker in text:
            text = text.split(marker, 1)[0]
            finished = True
    # A second "# Patent" means the model began another document: that is trailing garbage.
    starts = list(DOC_START_RE.finditer(text))
    if len(starts) > 1:
        text = text[: starts[1].start()]
        result.issues.append("trailing_document")
        finished = True
    if starts:
        text = text[starts[0].end() :]

    headers = list(SECTION_RE.finditer(text))
    sections: dict[str, str] = {}
    order: list[str] = []
    for i, header in enumerate(headers):
        name = SECTION_NAMES[header.group(1).lower()]
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[header.end() : end]
        if name in sections:
            if "repeated_section" not in result.issues:
                result.issues.append("repeated_section")
            continue
        sections[name] = body
        order.append(name)
    if not headers:
        result.issues.append("no_sections")

    title_body = sections.get("title", "")
    title_lines = [ln.strip() for ln in title_body.strip().splitlines() if ln.strip()]
    result.title = text_squash(title_lines[0]) if title_lines else ""
    result.abstract = text_squash(sections.get("abstract", ""))
    result.claims = _claims_parse(sections.get("claims", ""))

    if order[:1] == ["title"]:
        result.order = TOP_DOWN
    elif order[:1] == ["claims"]:
        result.order = BOTTOM_UP

    last_section = order[-1] if order else ""
    if not finished:
        # Cut off by the token limit: whatever section came last may be incomplete.
        if last_section == "claims" and result.claims:
            result.last_claim_truncated = True
        elif last_section == "abstract":
            result.issues.append("abstract_truncated")
        elif last_section == "title":
            result.issues.append("title_truncated")
    if result.claims and not re.search(r"[.;:!?。)\]]$", result.claims[-1].text):
        result.last_claim_truncated = True
    return result
