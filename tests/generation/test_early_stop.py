"""Early stop (generation/early_stop.py): a prefix decision must agree with the full gate on
every continuation. Checked on documents rendered from real patents (the committed
fixture), in both orders, with the mutations that make the gate reject them, at every
prefix; and on the constructions where a naive prefix reading goes wrong."""

import json
import random

import pytest

from generation.early_stop import END_OF_DOCUMENT, prefix_decide
from generation.parsing import patent_text_parse
from generation.prompts import BOTTOM_UP, TOP_DOWN
from generation.quality import sample_judge
from generation.training import patent_render
from tests.helpers import ROOT

pytestmark = pytest.mark.unit


def _judge(text: str, finished: bool = True) -> list[str]:
    return sample_judge(patent_text_parse(text, finished=finished))


def _records():
    with open(ROOT / "tests" / "fixtures" / "patents-40.jsonl") as fh:
        records = [json.loads(line) for line in fh]
    return [r for r in records if r.get("title") and r.get("abstract") and r.get("claims")]


def _mutations(title, abstract, claims, rng):
    """(name, title, abstract, claims): the document as it is, and broken as models break it."""
    claims = [c.split(". ", 1)[-1] if c[:3].strip(". ").isdigit() else c for c in claims][:8]
    yield "as is", title, abstract, claims
    if len(claims) > 2:
        swapped = claims[:]
        swapped[1] = swapped[1] + " See claim 7 as well."
        yield "cites a later claim", title, abstract, swapped
    yield (
        "claim 1 dependent",
        title,
        abstract,
        ["The device of claim 2, wherein " + claims[0]] + claims[1:],
    )
    yield "long title", "A " + "very " * 80 + title, abstract, claims
    yield "short claim", title, abstract, [claims[0], "A thing."] + claims[1:]
    yield "empty abstract", title, "", claims


def _renders(record, rng):
    for name, title, abstract, claims in _mutations(
        record["title"], record["abstract"], record["claims"], rng
    ):
        for order in (TOP_DOWN, BOTTOM_UP):
            text = patent_render(title=title, abstract=abstract, claims=claims, order=order)
            yield name, order, text
            # Numbering models get wrong: a number skipped, repeated, restarted.
            if len(claims) > 2:
                yield name + ", numbering", order, text.replace("\n2. ", "\n3. ", 1)
            yield name + ", trailing document", order, text + "\n\n# Patent\n\n## Title\nMore"


def test_no_prefix_decision_contradicts_the_full_gate():
    rng = random.Random(0)
    doomed = passed = ended = 0
    for record in _records():
        for name, _, full in _renders(record, rng):
            verdict = _judge(full)
            passed += not verdict
            # A prefix is read up to its last newline, so the cuts just after each newline
            # see every state it can be in; a few cuts inside lines check that rule itself.
            cuts = [i + 1 for i, ch in enumerate(full) if ch == "\n"] + [len(full)]
            cuts += rng.sample(range(len(full)), 5)
            for cut in sorted(cuts):
                decision = prefix_decide(full[:cut])
                if decision is None:
                    continue
                if decision.doomed:
                    assert verdict, (name, full[:cut][-200:], decision)
                    doomed += 1
                else:
                    # The document is over: the stopped text parses and judges the same.
                    assert _judge(full[:cut], finished=False) == verdict, (name, decision)
                    ended += 1
                break
    # The check must have had something to check, both ways.
    assert passed > 40 and doomed > 100 and ended > 20


@pytest.mark.parametrize(
    "prefix, reason",
    [
        (
            "# Patent\n\n## Claims\n\n1. A widget with a lid.\n\n3. The widget of claim 1.\n",
            "claims_not_sequential",
        ),
        ("# Patent\n\n## Claims\n\n1. A widget of claim 2 with a lid.\n", "claim1_dependent"),
        (
            "# Patent\n\n## Claims\n\n1. A widget with a lid.\n\n2. The widget of claim 2.\n",
            "bad_dependency",
        ),
        (
            "# Patent\n\n## Claims\n\n1. A widget with a lid.\n\n2. The widget of claim 0.\n",
            "bad_dependency",
        ),
        ("# Patent\n\n## Title\nAb\n", "title_length"),
        ("# Patent\n\n## Title\n\n## Abstract\n", "missing_title"),
        ("# Patent\n\n## Title\nA lid\n\n## Abstract\nShort.\n## Claims\n", "abstract_length"),
        ("# Patent\n\n## Claims\n\n1. A widget.\n\n2. Lid.\n\n3. A", "claim_length"),
        ("# Patent\n\n## Claims\n\n\n## Abstract\n", "missing_claims"),
        ("# Patent\n\n## Title\nA lid\n\n# Patent\n", END_OF_DOCUMENT),
        ("# Patent\n\n## Title\nA lid<|end|>", END_OF_DOCUMENT),
    ],
)
def test_each_rule_decides_what_the_gate_would(prefix, reason):
    decision = prefix_decide(prefix)
    assert decision is not None and decision.reason == reason
    if reason != END_OF_DOCUMENT:
        assert reason in _judge(prefix + "\n## Abstract\nA lid for a jar that seals.\n")


@pytest.mark.parametrize(
    "prefix, later",
    [
        # The citation's number is still being written: "claim 1" may become "claim 12".
        ("# Patent\n\n## Claims\n\n1. A widget.\n\n2. The widget of claim 1", "2. A lid.\n"),
        # An empty claim is dropped by the parser; the next one may still be numbered right.
        (
            "# Patent\n\n## Claims\n\n1. A widget with a lid.\n\n3. ",
            "\n2. The widget of claim 1.\n",
        ),
        # The last line may still become a claim start, ending the claim before "claim 3".
        (
            "# Patent\n\n## Claims\n\n1. A widget with a lid.\n\n2. The widget of claim\n3",
            ". A lid for it.\n",
        ),
        # ... or a section header.
        (
            "# Patent\n\n## Title\nA lid for a jar\n\n## Abstract\nA lid.\n## Clai",
            "ms\n\n1. A lid.\n",
        ),
        # "# Patent" alone on a line ends the document; "# Patents" does not.
        ("# Patent\n\n## Title\nA lid\n\n# Patent", "s of the lid\n"),
        # A title of 2 characters so far is not a title of 2 characters.
        ("# Patent\n\n## Title\nAb", "solute lid\n"),
    ],
)
def test_what_a_continuation_can_still_change_is_left_open(prefix, later):
    assert prefix_decide(prefix) is None
    assert prefix_decide(prefix + later) is None or prefix_decide(prefix + later).reason not in (
        "claims_not_sequential",
        "bad_dependency",
        "title_length",
    )
