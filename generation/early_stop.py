"""Deciding a sample on a prefix: end a row as soon as the rest of it cannot matter.

Two kinds of decision, both exact (never a guess):

- **The document is over.** A second ``# Patent`` line or an end marker ends the parse there
  (``generation.parsing``): what follows is discarded anyway, so the row stops with the same
  parse and the same gate result.
- **The sample is doomed.** A structural rule of the gate (``generation.quality``) is already
  broken in a way no continuation can repair: claims numbered out of order, claim 1 or a later
  claim citing a claim that does not precede it, a closed section empty or out of its length
  bounds, an open one already too long, too many claims.

Soundness rests on one rule: only the text up to the last newline is read. Every pattern the
parser splits on (``# Patent``, ``## Section``, a claim's ``N.``) starts a line, so a match
inside those complete lines is a match in every continuation, and everything before the last
section header or claim start keeps its meaning. What the last open section or claim holds
can only grow. `tests/generation/test_early_stop.py` checks each rule against the full gate
on generated and adversarial texts; `bench/early_stop.py` measures the tokens it saves.
"""

from dataclasses import dataclass

from generation.parsing import (
    CLAIM_START_RE,
    DOC_START_RE,
    END_MARKERS,
    SECTION_NAMES,
    SECTION_RE,
    text_squash,
)
from generation.quality import ABSTRACT_CHARS, CLAIM_CHARS, MAX_CLAIMS, TITLE_CHARS
from patents.text import CLAIM_REF_RE, control_chars_strip

END_OF_DOCUMENT = "end_of_document"


@dataclass(frozen=True)
class PrefixDecision:
    """``stop``: end the row now. ``reason``: a gate reason code when the sample is doomed,
    or ``END_OF_DOCUMENT`` when the document is complete and the rest would be cut."""

    reason: str

    @property
    def doomed(self) -> bool:
        return self.reason != END_OF_DOCUMENT


def _first_reference(text: str) -> int | None:
    """The claim a claim text cites first, when that is already certain: the citation's
    number must be followed by something, or more digits could still come."""
    match = CLAIM_REF_RE.search(text)
    if match is None or match.end() >= len(text):
        return None
    return int(match.group(1))


def prefix_decide(document: str) -> PrefixDecision | None:
    """What a document prefix (prompt part + completion so far) already decides, or None.
    The caller stops the row on any decision; a doomed one is recorded as rejected with its
    reason, exactly as the full gate would have rejected it."""
    text, _ = control_chars_strip(document)
    for marker in END_MARKERS:
        if marker in text:
            return PrefixDecision(END_OF_DOCUMENT)
    complete = text[: text.rfind("\n") + 1]  # the lines that can no longer change
    starts = list(DOC_START_RE.finditer(complete))
    if len(starts) > 1:
        return PrefixDecision(END_OF_DOCUMENT)
    if starts:
        complete = complete[starts[0].end() :]
    headers = list(SECTION_RE.finditer(complete))
    seen: set[str] = set()
    for i, header in enumerate(headers):
        name = SECTION_NAMES[header.group(1).lower()]
        if name in seen:
            continue  # a repeated section is ignored by the parser
        seen.add(name)
        closed = i + 1 < len(headers)
        body = complete[header.end() : headers[i + 1].start() if closed else len(complete)]
        reason = _section_doom(name, body, closed=closed)
        if reason:
            return PrefixDecision(reason)
    return None


def _section_doom(name: str, body: str, *, closed: bool) -> str | None:
    if name == "title":
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if not lines:
            return "missing_title" if closed else None
        # The title is the first non-empty line; a line is complete once read here.
        if not TITLE_CHARS[0] <= len(text_squash(lines[0])) <= TITLE_CHARS[1]:
            return "title_length"
        return None
    if name == "abstract":
        size = len(text_squash(body))
        if closed and size == 0:
            return "missing_abstract"
        if size > ABSTRACT_CHARS[1] or (closed and size < ABSTRACT_CHARS[0]):
            return "abstract_length"
        return None
    return _claims_doom(body, closed=closed)


def _claims_doom(body: str, *, closed: bool) -> str | None:
    matches = list(CLAIM_START_RE.finditer(body))
    claims = []  # (number, text, final): the claims the parser will keep, so far
    for i, match in enumerate(matches):
        last = i + 1 == len(matches)
        end = len(body) if last else matches[i + 1].start()
        text = text_squash(body[match.end() : end])
        final = closed or not last
        if text:
            claims.append((int(match.group(1)), text, final))
        # An empty claim is dropped by the parser; the open last one may still get text.
    if closed and not claims:
        return "missing_claims"
    for position, (number, text, final) in enumerate(claims, start=1):
        if number != position:
            return "claims_not_sequential"
        if position > MAX_CLAIMS:
            return "too_many_claims"
        if len(text) > CLAIM_CHARS[1] or (final and len(text) < CLAIM_CHARS[0]):
            return "claim_length"
        cited = _first_reference(text)
        if cited is not None:
            if number == 1:
                return "claim1_dependent"
            if cited >= number or cited < 1:
                return "bad_dependency"
    return None


# How often (in tokens) a backend asks; a decision waits at most this long.
CHECK_EVERY = 16
