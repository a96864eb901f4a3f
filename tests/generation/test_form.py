"""The form's rules (generation/form.py) on the kl3m tokenizer the demo generator ships with."""

import functools

import pytest

from generation.form import FormState, form_vocabulary
from tests.helpers import ROOT

pytestmark = pytest.mark.unit


@functools.cache
def _vocabulary():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / "models" / "demo-generator")
    return tok, form_vocabulary(tok, tok.eos_token_id)


def _state(vocabulary, text):
    tok, v = vocabulary
    head, _, rest = text.partition("|")
    state = FormState(v, head)
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
