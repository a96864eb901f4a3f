"""Decoding the patent's form: the sampler follows the skeleton of the kl3m document.

The demo generator's rejections were almost all structural (bench/early_stop.py, 96
samples: sections skipped or repeated, the end token before the claims, claims numbered
out of order, claim 1 citing another claim). Where the format is fixed the sampler need not
leave it to chance. At each step a row's ``FormState`` names the tokens the next draw may
not take, or the one token it must take:

- a header is written only where the next section of the mode's order is due, and only
  after the current section holds what the gate asks of it (a title of 3 characters, an
  abstract of 30, a claim); ``##`` is then followed by `` Name\\n``, forced;
- no other line starts with ``#`` (no second ``# Patent``, no stray heading);
- in the claims a line may start with a number only if it is the next claim's, followed by
  ``. `` (forced) and some text;
- after "claim " inside a claim, only the number of an earlier claim;
- the end token only once every section is there and the last one ends like a sentence.

The second form, ``kl3m-2``, adds two rules (``kl3m`` stays as it was: samples drawn under it
must still prove):

- a claim holds the gate's lower bound (``CLAIM_CHARS``) before the next claim, a header or
  the end may follow it;
- at the end of a whole claim, once the tokens left cannot hold another claim as long as the
  longest one so far, the claims section closes: the end token (top-down) or the next
  header (bottom-up) is forced. Without it a tenth of the demo generator's top-down
  documents, more than half of its rejects, ran into the token limit inside a claim and
  were thrown away for it (bench/README.md).

Everything else is the model's. The state is a function of the text so far (the prompt's
document part and the tokens drawn), so the proof of sampling (generation/proof.py) replays
it over a contributed sample and applies the same masks: a sample drawn with them proves,
one edited outside them does not. The masks apply after the repetition penalty and before
temperature, top-k and top-p, in both places.
"""

import threading
from dataclasses import dataclass

from generation.parsing import CLAIM_START_RE, SECTION_NAMES, SECTION_RE, text_squash
from generation.quality import ABSTRACT_CHARS, CLAIM_CHARS, MAX_CLAIMS, TITLE_CHARS
from patents.vocabulary import BOTTOM_UP, TOP_DOWN

FORM_KL3M = "kl3m"
FORM_KL3M_2 = "kl3m-2"


@dataclass(frozen=True)
class FormRules:
    """A form's rules beyond the skeleton. A form, once samples are drawn under it, never
    changes: the proof replays it."""

    claim_minimum: bool = False
    budget_end: bool = False


FORMS = {
    FORM_KL3M: FormRules(),
    FORM_KL3M_2: FormRules(claim_minimum=True, budget_end=True),
}
# The form new jobs of kl3m generators follow.
FORM_LATEST = FORM_KL3M_2


class FormUnknown(ValueError):
    """A job names a form this code does not have (one a newer version added, say): its
    samples can be neither drawn nor proved under it here."""


def form_rules(name: str) -> FormRules:
    try:
        return FORMS[name]
    except KeyError:
        raise FormUnknown(
            f"the form {name!r} is unknown to this code (it knows {', '.join(FORMS)})"
        ) from None


ORDERS = {"title": ("title", "abstract", "claims"), "claims": ("claims", "abstract", "title")}
MODE_OF_FIRST = {"title": TOP_DOWN, "claims": BOTTOM_UP}
HEADER_NAMES = {"title": "Title", "abstract": "Abstract", "claims": "Claims"}
# What a section must hold before the next header: the gate's lower bounds.
MINIMUM = {"title": TITLE_CHARS[0], "abstract": ABSTRACT_CHARS[0], "claims": 1}
# The parser calls a last claim cut off unless it ends with one of these.
SENTENCE_ENDS = frozenset(".;:!?。)]")


class FormUnavailable(ValueError):
    """The tokenizer lacks a token the skeleton is written with."""


class FormVocabulary:
    """The token ids the rules name, read once per tokenizer."""

    def __init__(self, tokenizer, eos_id: int):
        import torch

        size = len(tokenizer)
        self.pieces = [
            tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for i in range(size)
        ]
        first: dict[str, int] = {}
        for i, piece in enumerate(self.pieces):
            first.setdefault(piece, i)

        def spelled(text: str, pieces: list[str]) -> list[int]:
            # The ids the tokenizer itself writes the skeleton with: several ids may decode
            # to " " or "\n", and a model knows only the one it was trained on.
            found = tokenizer(text, add_special_tokens=False)["input_ids"]
            if [self.pieces[i] for i in found] != pieces:
                raise FormUnavailable(f"{text!r} is not written as {pieces!r}")
            return found

        self.eos = eos_id
        _, self.header, self.space, title, _ = spelled(
            "\n## Title\n", ["\n", "##", " ", "Title", "\n"]
        )
        self.names = {
            "title": title,
            "abstract": spelled("\n## Abstract\n", ["\n", "##", " ", "Abstract", "\n"])[3],
            "claims": spelled("\n## Claims\n", ["\n", "##", " ", "Claims", "\n"])[3],
        }
        _, _, self.dot, _, _ = spelled("\n1. A", ["\n", "1", ".", " ", "A"])
        self.numbers = {}
        for n in range(1, MAX_CLAIMS + 1):
            found = tokenizer(f"\n{n}. A", add_special_tokens=False)["input_ids"]
            if len(found) == 5 and self.pieces[found[1]] == str(n):
                self.numbers[n] = found[1]

        def ids(test) -> "torch.Tensor":
            return torch.tensor(
                [i for i, p in enumerate(self.pieces) if test(p)] or [eos_id], dtype=torch.long
            )

        self.newlines = ids(lambda p: "\n" in p and not p.strip())
        self.hashes = ids(lambda p: p.lstrip(" \t").startswith("#"))
        self.digits = ids(lambda p: p.lstrip(" \t")[:1].isdigit())
        self.blanks = ids(lambda p: p != "" and not p.strip())
        self._digit_set = set(self.digits.tolist())
        self._masks: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def only(self, token: int):
        import torch

        with self._lock:
            key = ("only", token)
            if key not in self._masks:
                self._masks[key] = torch.tensor([token], dtype=torch.long)
            return self._masks[key]

    def mask(self, key: tuple) -> tuple:
        """(None, tensor of barred ids), built once per state key."""
        mask = self._masks.get(key)  # every step of every row asks: no lock once built
        if mask is None:
            with self._lock:
                mask = self._masks.get(key) or self._build(*key)
                self._masks[key] = mask
        return mask

    def _build(self, line_start, header_ok, claim_next, no_blank, eos_ok, ref_below):
        import torch

        barred: set[int] = set()
        if line_start:
            barred |= set(self.hashes.tolist())
            if header_ok:
                barred.discard(self.header)
            if claim_next is not None:
                barred |= self._digit_set
                barred.discard(self.numbers.get(claim_next, -1))
        if ref_below is not None:
            barred |= self._digit_set - {self.numbers[n] for n in range(1, ref_below)}
        if no_blank:
            barred |= set(self.blanks.tolist())
        if not eos_ok:
            barred.add(self.eos)
        return None, torch.tensor(sorted(barred), dtype=torch.long)


_vocabularies_lock = threading.Lock()


def form_vocabulary(tokenizer, eos_id: int) -> FormVocabulary:
    """The tokenizer's FormVocabulary, built once and kept on the tokenizer itself (a cache
    keyed by ``id()`` could hand a new tokenizer the ids of a freed one)."""
    with _vocabularies_lock:
        vocabulary = getattr(tokenizer, "_form_vocabulary", None)
        if vocabulary is None or vocabulary.eos != eos_id:
            vocabulary = FormVocabulary(tokenizer, eos_id)
            tokenizer._form_vocabulary = vocabulary
        return vocabulary


class FormState:
    """One row's place in the skeleton, fed the document's text as it is written.
    ``budget``: the tokens the sampler may draw (``max_new_tokens``), for the rule that
    closes the claims in time."""

    def __init__(
        self, vocabulary: FormVocabulary, head: str, *, form: str = FORM_KL3M, budget: int = 0
    ):
        self.v = vocabulary
        self.rules = form_rules(form)
        self.budget = budget
        self.steps = 0  # tokens drawn
        self.claim_from: int | None = None  # the step of the current claim's number
        self.longest = 0  # tokens of the longest whole claim so far
        self.claim_lines: list[str] = []  # the current claim's complete lines
        self.order: tuple[str, ...] = ()
        self.section = ""
        self.written: list[str] = []
        self.body = 0  # non-space characters of the current section's complete lines
        self.claims = 0  # claim starts in the claims section's complete lines
        self.line = ""
        self.last_char = ""
        self.queue: list = []  # tensors of the ids allowed at the next draws, in turn
        self.then_no_blank = False
        self.no_blank = False
        self._feed(head)
        if SECTION_RE.fullmatch(self.line):
            self.queue = [self.v.newlines]  # the prompt ends inside a header line

    # --- reading text -------------------------------------------------------------------
    def _feed(self, text: str) -> None:
        for ch in text:
            if ch == "\n":
                self._line_end(self.line)
                self.line = ""
            else:
                self.line += ch
            if not ch.isspace():
                self.last_char = ch

    def _line_end(self, line: str) -> None:
        header = SECTION_RE.fullmatch(line)
        if header:
            name = SECTION_NAMES[header.group(1).lower()]
            if not self.order:
                self.order = ORDERS.get(name, ())
            self.section = name
            self.written.append(name)
            self.body = 0
            return
        if not self.section:
            return
        self.body += len("".join(line.split()))
        if self.section == "claims":
            start = CLAIM_START_RE.match("\n" + line)
            if start and line[start.end() - 1 :].strip():
                self.claims += 1
                self.claim_lines = [line[start.end() - 1 :]]
            elif self.claims:
                self.claim_lines.append(line)

    # --- the rules ----------------------------------------------------------------------
    def _next_section(self) -> str | None:
        for name in self.order:
            if name not in self.written:
                return name
        return None

    def _filled(self, *, with_line: bool = False) -> bool:
        """The current section holds what the gate asks of it (``with_line``: counting the
        line being written, for the end token). The claims' last one must end like a
        sentence, or the parser calls it cut off."""
        if not self.section:
            return True
        if self.section == "claims":
            count = self._current_claim() if with_line else self.claims
            return (
                count >= 1
                and self.last_char in SENTENCE_ENDS
                and self._claim_long_enough(with_line=with_line)
            )
        extra = len("".join(self.line.split())) if with_line else 0
        return self.body + extra >= MINIMUM[self.section]

    def _current_claim(self) -> int:
        starts_here = CLAIM_START_RE.match("\n" + self.line) is not None
        return self.claims + (1 if starts_here else 0)

    def _claim_long_enough(self, *, with_line: bool) -> bool:
        """The current claim holds the gate's shortest claim (the parser's squashed text)."""
        if not self.rules.claim_minimum:
            return True
        lines = list(self.claim_lines)
        if with_line:
            start = CLAIM_START_RE.match("\n" + self.line)
            lines = [self.line[start.end() - 1 :]] if start else [*lines, self.line]
        return len(text_squash(" ".join(lines))) >= CLAIM_CHARS[0]

    def _claims_close(self):
        """The one token that closes the claims now that the budget cannot hold another
        claim as long as the longest so far, or None. Asked at the start of a line, after
        a whole claim; the claim being closed counts towards the longest."""
        if not self.rules.budget_end or self.claim_from is None:
            return None
        longest = max(self.longest, self.steps - self.claim_from)
        # The next claim, then the end token or the next header's first token.
        if self.budget - self.steps > longest + 1:
            return None
        return self.v.eos if self._next_section() is None else self.v.header

    def mask(self) -> tuple:
        """(tensor of the only ids allowed, or None; tensor of barred ids, or None) for the
        next draw."""
        if self.queue:
            return self.queue[0], None
        line_start = not self.line.strip(" \t")
        in_claims = self.section == "claims"
        filled = line_start and self._filled()  # asked only where a line starts
        if filled and in_claims:
            close = self._claims_close()
            if close is not None:
                return self.v.only(close), None
        header_ok = filled and self._next_section() is not None
        claim_next = None
        if line_start and in_claims:
            # 0 names no claim: no number may start a line before this claim is long enough.
            whole = self.claims == 0 or self._claim_long_enough(with_line=False)
            claim_next = self.claims + 1 if whole else 0
        ref_below = None
        if in_claims and not line_start:
            tail = self.line[-8:].lower()
            if tail.endswith(("claim ", "claims ")):
                ref_below = self._current_claim()
        eos_ok = bool(self.order) and self._next_section() is None and self._filled(with_line=True)
        key = (line_start, header_ok, claim_next, self.no_blank, eos_ok, ref_below)
        return self.v.mask(key)

    def advance(self, token: int) -> None:
        line_start = not self.line.strip(" \t")
        self.steps += 1
        if self.queue:
            self.queue.pop(0)
            if not self.queue and self.then_no_blank:
                self.no_blank, self.then_no_blank = True, False
        else:
            self.no_blank = False
            if line_start and token == self.v.header:
                due = self._next_section()
                if due is not None:
                    self.queue = [
                        self.v.only(self.v.space),
                        self.v.only(self.v.names[due]),
                        self.v.newlines,
                    ]
            elif (
                line_start
                and self.section == "claims"
                and token == self.v.numbers.get(self.claims + 1)
            ):
                self.queue = [self.v.only(self.v.dot), self.v.only(self.v.space)]
                self.then_no_blank = True
                if self.claim_from is not None:
                    self.longest = max(self.longest, self.steps - 1 - self.claim_from)
                self.claim_from = self.steps - 1
        self._feed(self.v.pieces[token])


def form_masks_apply(logits, masks) -> None:
    """Applies each row's (allowed, barred) to ``logits`` in place; None leaves a row be."""
    for row, mask in enumerate(masks):
        if mask is None:
            continue
        allowed, barred = mask
        if allowed is not None:
            allowed = allowed.to(logits.device)
            keep = logits[row, allowed].clone()
            logits[row].fill_(float("-inf"))
            logits[row, allowed] = keep
        elif barred is not None and barred.numel():
            logits[row].index_fill_(0, barred.to(logits.device), float("-inf"))


def form_masks_replay(
    vocabulary: FormVocabulary,
    *,
    head: str,
    drawn: list[int],
    form: str = FORM_KL3M,
    budget: int = 0,
) -> list:
    """The mask each of ``drawn`` was sampled under: the sampler's states, replayed."""
    state = FormState(vocabulary, head, form=form, budget=budget)
    masks = []
    for token in drawn:
        masks.append(state.mask())
        state.advance(token)
    return masks
