"""Prompt formats of the supported generators, as exact strings."""

from patents.vocabulary import BOTTOM_UP, TOP_DOWN  # noqa: F401 (re-exported)

KL3M_TOP_DOWN = "# Patent\n\n## Title"
KL3M_BOTTOM_UP = "# Patent\n\n## Claims"

DOT42_SYSTEM = (
    "호기심 많은 인간 (human)과 인공지능 봇 (AI bot)의 대화입니다. 봇의 이름은 42dot LLM이고 "
    "포티투닷 (42dot)에서 개발했습니다. 봇은 인간의 질문에 대해 친절하게 유용하고 상세한 답변을 "
    "제공합니다. "
)

KULLM3_SYSTEM = (
    "당신은 고려대학교 NLP&AI 연구실에서 만든 AI 챗봇입니다. 당신의 이름은 'KULLM'으로, 한국어로는 "
    "'구름'을 뜻합니다. 당신은 비도덕적이거나, 성적이거나, 불법적이거나 또는 사회 통념적으로 허용되지 "
    "않는 발언은 하지 않습니다. 사용자와 즐겁게 대화하며, 사용자의 응답에 가능한 정확하고 친절하게 "
    "응답함으로써 최대한 도와주려고 노력합니다. 질문이 이상하다면, 어떤 부분이 이상한지 설명합니다. "
    "거짓 정보를 발언하지 않도록 주의합니다."
)

FEWSHOT_EXAMPLE_EN = (
    "# Patent\n\n## Title\nAdjustable bicycle saddle clamp\n\n## Abstract\nA saddle clamp for a "
    "bicycle seat post has two jaws drawn together by a single bolt, and a toothed arc that sets "
    "the saddle angle in fixed steps.\n\n## Claims\n\n1. A saddle clamp comprising: a lower jaw "
    "fixed to a seat post; an upper jaw; a bolt drawing the jaws together; and a toothed arc "
    "between the jaws setting the angle of a saddle.\n\n2. The saddle clamp of claim 1, wherein "
    "the toothed arc has teeth spaced at one degree.\n\n"
)
FEWSHOT_EXAMPLE_KO = (
    "# Patent\n\n## Title\n각도 조절식 자전거 안장 클램프\n\n## Abstract\n자전거 시트포스트용 안장 "
    "클램프는 하나의 볼트로 조여지는 두 개의 조와 안장 각도를 단계적으로 정하는 톱니 원호를 "
    "가진다.\n\n## Claims\n\n1. 시트포스트에 고정된 하부 조; 상부 조; 상기 조들을 조이는 볼트; 및 "
    "상기 조들 사이에서 안장의 각도를 정하는 톱니 원호를 포함하는 안장 클램프.\n\n2. 제1항에 있어서, "
    "상기 톱니 원호의 톱니는 1도 간격인 안장 클램프.\n\n"
)


def _instruction(*, mode: str, topic: str, language: str) -> str:
    order = (
        "title, abstract, then numbered claims"
        if mode == TOP_DOWN
        else "numbered claims, then abstract, then title"
    )
    about = f" about {topic}" if topic else ""
    lang = " Write in Korean." if language == "ko" else ""
    return (
        f"Write a new patent{about} in this markdown format, in this order: {order}. "
        "Use the headings '# Patent', '## Title', '## Abstract' and '## Claims', and number "
        f"the claims 1., 2., 3.{lang}"
    )


def prompt_render(*, prompt_format: str, mode: str, topic: str = "", language: str = "en") -> str:
    """The exact prompt a generator is given for one sample.

    ``topic`` seeds the sample: a title for top-down, a first claim for bottom-up (kl3m),
    or the subject of the instruction (chat formats).
    """
    topic = (topic or "").strip()
    if mode not in (TOP_DOWN, BOTTOM_UP):
        raise ValueError(f"unknown mode {mode!r}")
    if prompt_format == "kl3m":
        if mode == TOP_DOWN:
            return KL3M_TOP_DOWN + (f"\n{topic}\n\n## Abstract\n" if topic else "")
        return KL3M_BOTTOM_UP + (f"\n\n1. {topic}" if topic else "")
    if prompt_format == "fewshot":
        example = FEWSHOT_EXAMPLE_KO if language == "ko" else FEWSHOT_EXAMPLE_EN
        base = KL3M_TOP_DOWN if mode == TOP_DOWN else KL3M_BOTTOM_UP
        if topic:
            base += f"\n{topic}\n\n## Abstract\n" if mode == TOP_DOWN else f"\n\n1. {topic}"
        return example + base
    if prompt_format == "chat-42dot":
        instruction = _instruction(mode=mode, topic=topic, language=language)
        return f"{DOT42_SYSTEM}<human>: {instruction} <bot>:"
    if prompt_format == "kullm3":
        instruction = _instruction(mode=mode, topic=topic, language=language)
        return f"[INST] <<SYS>>\n{KULLM3_SYSTEM}\n<</SYS>>\n\n{instruction} [/INST]"
    raise ValueError(f"unknown prompt format {prompt_format!r}")


def prompt_continues_document(prompt_format: str) -> bool:
    """Whether the model's output continues the prompt's markdown (then parse both)."""
    return prompt_format in ("kl3m", "fewshot")


def prompt_document_part(*, prompt_format: str, prompt: str) -> str:
    """The part of the prompt that belongs to the generated document (few-shot example cut)."""
    if prompt_format == "fewshot":
        example_end = prompt.rfind("# Patent")
        return prompt[example_end:]
    if prompt_format == "kl3m":
        return prompt
    return ""
