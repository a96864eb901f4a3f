"""Prompts, parser and quality gate, on exact strings and on real patents."""

import json
import random

import pytest

from generation.parsing import patent_text_parse
from generation.prompts import DOT42_SYSTEM, prompt_render
from generation.quality import REPETITION_MAX, repetition_ratio, sample_judge
from patents.records import claims_normalise


@pytest.mark.unit
def test_kl3m_prompts_are_exact():
    assert prompt_render(prompt_format="kl3m", mode="top-down") == "# Patent\n\n## Title"
    assert prompt_render(prompt_format="kl3m", mode="bottom-up") == "# Patent\n\n## Claims"
    assert (
        prompt_render(prompt_format="kl3m", mode="top-down", topic="Mug")
        == "# Patent\n\n## Title\nMug\n\n## Abstract\n"
    )
    assert (
        prompt_render(prompt_format="kl3m", mode="bottom-up", topic="A mug.")
        == "# Patent\n\n## Claims\n\n1. A mug."
    )


@pytest.mark.unit
def test_42dot_sft_prompt_is_exact():
    prompt = prompt_render(prompt_format="chat-42dot", mode="top-down", topic="a mug")
    assert DOT42_SYSTEM == (
        "호기심 많은 인간 (human)과 인공지능 봇 (AI bot)의 대화입니다. 봇의 이름은 42dot LLM이고 "
        "포티투닷 (42dot)에서 개발했습니다. 봇은 인간의 질문에 대해 친절하게 유용하고 상세한 답변을 "
        "제공합니다. "
    )
    assert prompt.startswith(DOT42_SYSTEM + "<human>: ")
    assert prompt.endswith(" <bot>:")
    assert "a mug" in prompt and "## Claims" in prompt


@pytest.mark.unit
def test_fewshot_and_kullm3_prompts():
    few = prompt_render(prompt_format="fewshot", mode="bottom-up", language="ko")
    assert few.endswith("# Patent\n\n## Claims") and "청구" not in few.split("# Patent")[-1]
    assert few.count("# Patent") == 2
    kullm = prompt_render(prompt_format="kullm3", mode="top-down")
    assert kullm.startswith(
        "[INST] <<SYS>>\n당신은 고려대학교 NLP&AI 연구실에서 만든 AI 챗봇입니다."
    )
    assert kullm.endswith(" [/INST]") and "\n<</SYS>>\n\n" in kullm


def _fixture_patents(path):
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.append(
            {
                "title": record["title"],
                "abstract": record["abstract"],
                "claims": claims_normalise(record["claims"]),
            }
        )
    return out


def render(p, mode):
    claims = "\n\n".join(f"{c['number']}. {c['text']}" for c in p["claims"])
    if mode == "top-down":
        return (
            f"# Patent\n\n## Title\n{p['title']}\n\n## Abstract\n{p['abstract']}\n\n"
            f"## Claims\n\n{claims}"
        )
    return (
        f"# Patent\n\n## Claims\n\n{claims}\n\n## Abstract\n{p['abstract']}\n\n"
        f"## Title\n{p['title']}"
    )


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["top-down", "bottom-up"])
def test_parser_recovers_real_patents_in_both_orders(fixture_jsonl, mode):
    patents = _fixture_patents(fixture_jsonl)
    for p in patents:
        parsed = patent_text_parse(render(p, mode) + "<|end|>", finished=True)
        assert parsed.order == mode
        assert parsed.title == " ".join(p["title"].split())
        assert parsed.abstract == " ".join(p["abstract"].split())
        assert [c.number for c in parsed.claims] == [c["number"] for c in p["claims"]]
        assert [c.depends_on for c in parsed.claims] == [c["depends_on"] for c in p["claims"]]
    passed = sum(not sample_judge(patent_text_parse(render(p, mode))) for p in patents)
    assert passed >= 0.9 * len(patents)  # real, complete patents pass the gate


@pytest.mark.unit
def test_parser_truncated_output_flags_last_claim(fixture_jsonl):
    p = _fixture_patents(fixture_jsonl)[0]
    text = render(p, "top-down")
    cut = text[: len(text) - 25]  # mid-word in the last claim
    parsed = patent_text_parse(cut, finished=False)
    assert parsed.last_claim_truncated
    assert "truncated_claim" in sample_judge(parsed)


@pytest.mark.unit
def test_parser_tolerates_garbage_repeats_and_missing_sections(fixture_jsonl):
    p = _fixture_patents(fixture_jsonl)[1]
    text = render(p, "top-down")
    trailing = patent_text_parse(text + "<|end|>\n\n# Patent\n\n## Title\nAnother")
    assert trailing.title == " ".join(p["title"].split())
    doubled = patent_text_parse(text + "\n\n## Abstract\nA second abstract.\n")
    assert "repeated_section" in doubled.issues
    assert doubled.abstract == " ".join(p["abstract"].split())
    no_abstract = patent_text_parse(text.replace("## Abstract", "## Summary"))
    assert "missing_abstract" in sample_judge(no_abstract) or not no_abstract.abstract
    assert sample_judge(patent_text_parse("lorem ipsum")) == ["unparseable"]
    assert sample_judge(patent_text_parse("")) == ["unparseable"]
    rng = random.Random(0)
    for _ in range(200):  # garbled: random slices and shuffles never raise
        chars = list(text)
        rng.shuffle(chars[rng.randrange(len(chars)) :])
        patent_text_parse("".join(chars)[: rng.randrange(1, len(chars))], finished=False)


@pytest.mark.unit
def test_gate_rejects_structural_faults():
    base = (
        "# Patent\n\n## Title\nA cup\n\n## Abstract\nA drinking cup with a handle, made of "
        "steel and glass.\n\n## Claims\n\n"
    )
    ok = patent_text_parse(base + "1. A cup with a handle.\n\n2. The cup of claim 1, in steel.")
    assert sample_judge(ok) == []
    gaps = patent_text_parse(base + "1. A cup with a handle.\n\n3. The cup of claim 1, red.")
    assert "claims_not_sequential" in sample_judge(gaps)
    forward = patent_text_parse(base + "1. A cup with a handle.\n\n2. The cup of claim 3, red.")
    assert "bad_dependency" in sample_judge(forward)
    dependent_first = patent_text_parse(base + "1. The cup of claim 2, red.\n\n2. A cup here.")
    assert "claim1_dependent" in sample_judge(dependent_first)
    loop = patent_text_parse(base + "1. A cup " + "with a handle and " * 200 + "a lid.")
    assert "repetition" in sample_judge(loop)


@pytest.mark.unit
def test_repetition_threshold_sits_above_real_patents(fixture_jsonl):
    ratios = sorted(
        repetition_ratio(" ".join([p["abstract"]] + [c["text"] for c in p["claims"]]))
        for p in _fixture_patents(fixture_jsonl)
    )
    assert ratios[-1] < REPETITION_MAX
    assert repetition_ratio("the same words again " * 50) > REPETITION_MAX
