"""The form's rules (generation/form.py) on the kl3m tokenizer the demo generator ships with."""

import functools

import pytest

from generation.form import FORM_KL3M, FORM_KL3M_2, FormState, form_vocabulary
from tests.helpers import ROOT

pytestmark = pytest.mark.unit


@functools.cache
def _vocabulary():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / "models" / "demo-generator")
    return tok, form_vocabulary(tok, tok.eos_token_id)


def _state(vocabulary, text, *, form=FORM_KL3M, budget=0):
    tok, v = vocabulary
    head, _, rest = text.partition("|")
    state = FormState(v, head, form=form, budget=budget)
    for token in tok(rest, add_special_tokens=False)["input_ids"] if rest else []:
        state.advance(token)
    return state


def _allowed(state, token_id) -> bool:
    allowed, barred = state.mask()
    if allowed is not None:
        return token_id in allowed.tolist()
    return token_id not in barred.tolist()


def test_a_header_comes_only_when_due_and_is_written_in_full():
    vocabulary = _vocabulary()
    tok, v = vocabulary
    state = _state(vocabulary, "# Patent\n\n## Title|\nSelf-stirring mug\n\n")
    assert _allowed(state, v.header)
    state.advance(v.header)
    for expected in (v.space, v.names["abstract"]):
        allowed, _ = state.mask()
        assert allowed.tolist() == [expected]
        state.advance(expected)
    allowed, _ = state.mask()
    assert all("\n" in v.pieces[i] and not v.pieces[i].strip() for i in allowed.tolist())
    # An abstract shorter than the gate's 30 characters: no header yet; "# " never.
    state = _state(vocabulary, "# Patent\n\n## Title|\nMug\n\n## Abstract\nA mug.\n\n")
    assert not _allowed(state, v.header)
    assert not _allowed(state, tok("#", add_special_tokens=False)["input_ids"][0])


def test_claims_are_numbered_in_turn_and_cite_earlier_claims():
    vocabulary = _vocabulary()
    tok, v = vocabulary
    head = "# Patent\n\n## Claims|\n\n1. A mug comprising a base and a motor.\n\n"
    state = _state(vocabulary, head)
    assert _allowed(state, v.numbers[2]) and not _allowed(state, v.numbers[3])
    state.advance(v.numbers[2])
    assert state.mask()[0].tolist() == [v.dot]
    state = _state(vocabulary, head + "2. The mug of claim ")
    assert _allowed(state, v.numbers[1]) and not _allowed(state, v.numbers[2])
    state = _state(vocabulary, "# Patent\n\n## Claims|\n\n1. A mug of claim ")
    assert not _allowed(state, v.numbers[1])


def test_the_end_waits_for_every_section_and_a_whole_last_claim():
    vocabulary = _vocabulary()
    tok, v = vocabulary
    top = "# Patent\n\n## Title|\nSelf-stirring mug\n\n## Abstract\nA mug with a motor in its base that stirs.\n\n"
    assert not _allowed(_state(vocabulary, top), v.eos)
    claims = top + "## Claims\n\n1. A mug comprising a base and a motor"
    assert not _allowed(_state(vocabulary, claims), v.eos)  # cut off mid-sentence
    assert _allowed(_state(vocabulary, claims + "."), v.eos)
    # Bottom-up ends with the title: no end before it.
    bottom = "# Patent\n\n## Claims|\n\n1. A mug comprising a base and a motor.\n\n"
    assert not _allowed(_state(vocabulary, bottom), v.eos)
    done = (
        bottom + "## Abstract\nA mug with a motor in its base that stirs.\n\n## Title\nStirring mug"
    )
    assert _allowed(_state(vocabulary, done), v.eos)


TOP = (
    "# Patent\n\n## Title|\nSelf-stirring mug\n\n## Abstract\n"
    "A mug with a motor in its base that stirs the drink.\n\n## Claims\n\n"
    "1. A mug comprising a base, a motor in the base and a stirrer driven by the motor.\n\n"
    "2. The mug of claim 1, wherein the motor is battery powered.\n\n"
)


def _tokens(vocabulary, text) -> int:
    tok, _ = vocabulary
    return len(tok(text.partition("|")[2], add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("mode", ["top-down", "bottom-up"])
def test_kl3m_2_closes_the_claims_when_the_budget_cannot_hold_another_claim(mode):
    """After a whole claim, with fewer tokens left than the longest claim so far (and the
    end token) need, kl3m-2 forces the end (top-down) or the next header (bottom-up); with
    room for one more, or under kl3m, the model goes on choosing."""
    vocabulary = _vocabulary()
    tok, v = vocabulary
    head, forced = TOP, v.eos
    if mode == "bottom-up":  # the same two claims, written first
        head, forced = "# Patent\n\n## Claims|\n\n" + TOP.split("## Claims\n\n", 1)[1], v.header
    drawn = _tokens(vocabulary, head)
    first_claim = _tokens(
        vocabulary,
        "|1. A mug comprising a base, a motor in the base and a stirrer driven by the motor.\n\n",
    )
    tight = _state(vocabulary, head, form=FORM_KL3M_2, budget=drawn + first_claim)
    assert tight.mask()[0].tolist() == [forced]
    roomy = _state(vocabulary, head, form=FORM_KL3M_2, budget=drawn + first_claim + 2)
    assert roomy.mask()[0] is None and _allowed(roomy, v.numbers[3])
    old = _state(vocabulary, head, form=FORM_KL3M, budget=drawn + first_claim)
    assert old.mask()[0] is None and _allowed(old, v.numbers[3])
    # Mid-claim the rule waits for the claim's end: no forced token inside a sentence.
    inside = _state(
        vocabulary, head + "3. The mug of", form=FORM_KL3M_2, budget=drawn + first_claim
    )
    assert inside.mask()[0] is None


def test_kl3m_2_lets_a_claim_end_only_once_it_holds_the_gates_shortest_claim():
    """The gate rejects a claim under 10 characters; kl3m-2 gives neither the next claim's
    number, a header nor the end to a claim that short (kl3m did)."""
    vocabulary = _vocabulary()
    tok, v = vocabulary
    short = TOP.rsplit("2. ", 1)[0] + "2. The mug.\n\n"
    new = _state(vocabulary, short, form=FORM_KL3M_2, budget=10_000)
    assert not _allowed(new, v.numbers[3]) and not _allowed(new, v.numbers[2])
    assert not _allowed(_state(vocabulary, short[:-2], form=FORM_KL3M_2, budget=10_000), v.eos)
    old = _state(vocabulary, short, form=FORM_KL3M)
    assert _allowed(old, v.numbers[3])
    assert _allowed(_state(vocabulary, short[:-2], form=FORM_KL3M), v.eos)
    # A continuation line makes it long enough.
    longer = short + "wherein the mug is red.\n"
    assert _allowed(_state(vocabulary, longer, form=FORM_KL3M_2, budget=10_000), v.numbers[3])
