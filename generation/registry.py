"""The generators present after migrate (the seed models of the project)."""

from generation.vocabulary import BACKEND_OPENAI, BACKEND_TRANSFORMERS

SEEDS = [
    {
        "name": "kl3m-002-170m-patent",
        "model_id": "alea-institute/kl3m-002-170m-patent",
        "backend": BACKEND_TRANSFORMERS,
        "prompt_format": "kl3m",
        "is_default": True,
        "notes": "GPT-NeoX 168M, fine-tuned on patents (top-down and bottom-up).",
    },
    {
        "name": "kl3m-002-170m",
        "model_id": "alea-institute/kl3m-002-170m",
        "backend": BACKEND_TRANSFORMERS,
        "prompt_format": "kl3m",
        "notes": "The base model; same tokenizer and prompts.",
    },
    {
        "name": "42dot-llm-plm-1-3b",
        "model_id": "42dot/42dot_LLM-PLM-1.3B",
        "backend": BACKEND_TRANSFORMERS,
        "prompt_format": "fewshot",
        "notes": "LLaMA 1.3B, few-shot patent prompt.",
    },
    {
        "name": "42dot-llm-sft-1-3b",
        "model_id": "42dot/42dot_LLM-SFT-1.3B",
        "backend": BACKEND_TRANSFORMERS,
        "prompt_format": "chat-42dot",
        "default_params": {
            "temperature": 0.5,
            "top_p": 0.95,
            "top_k": 20,
            "repetition_penalty": 1.2,
        },
        "notes": "42dot chat format; card defaults.",
    },
    {
        "name": "kullm3-awq",
        "model_id": "taeminlee/KULLM3-awq",
        "backend": BACKEND_OPENAI,
        "prompt_format": "kullm3",
        "language": "ko",
        "requires_gpu": True,
        "notes": "SOLAR-10.7B 4-bit AWQ (GEMM), served by vLLM on a GPU; set OPENAI_API_BASE.",
    },
]


def generators_seed(generator_model) -> None:
    """Creates or refreshes the seed rows; takes the model class (migrations pass theirs)."""
    for row in SEEDS:
        generator_model.objects.update_or_create(name=row["name"], defaults=row)
