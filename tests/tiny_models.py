"""Tiny models with real configs and tokenizers and random weights, saved to a directory and
loaded back through the production loader (generation.backends)."""

import json
import math
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_neox_build(
    source: Path, out: Path, *, layers: int = 2, hidden: int = 64, seed: int = 0
) -> Path:
    """A GPT-NeoX with the kl3m config scaled down, and kl3m's own tokenizer files."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config_data = json.loads((source / "config.json").read_text())
    config_data.update(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    config_data.pop("_name_or_path", None)
    config = GPTNeoXConfig(**config_data)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES + ("generation_config.json",):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    return out


def tiny_llama_build(out: Path, *, tokenizer_source: Path, seed: int = 0) -> Path:
    """A tiny LLaMA (the 42dot architecture); it borrows the kl3m tokenizer since the 42dot
    tokenizer files cannot be downloaded here."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32768,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, out / name)
    return out


MEMO_PATENTS = [
    "# Patent\n\n## Title\nSelf-stirring mug\n\n## Abstract\nA mug with a small motor in "
    "its base that turns a magnetic stirrer inside the cup.\n\n## Claims\n\n1. A mug "
    "comprising a base, a motor in the base and a magnetic stirrer.\n\n2. The mug of claim 1, "
    "wherein the motor is battery powered.",
    "# Patent\n\n## Title\nFolding ladder hook\n\n## Abstract\nA hook that folds flat against "
    "a ladder rail and swings out to hold a paint can.\n\n## Claims\n\n1. A ladder hook "
    "comprising a hinge, an arm and a lip for holding a can.\n\n2. The ladder hook of claim 1, "
    "wherein the arm is steel.",
]


# A document the gate rejects on its fourth line of claims (claim 2 is missing), with a
# long tail after it: what an early stop saves.
DOOMED_PATENT = (
    "# Patent\n\n## Title\nSelf-stirring mug\n\n## Abstract\nA mug with a small motor in its "
    "base that turns a magnetic stirrer inside the cup.\n\n## Claims\n\n1. A mug comprising a "
    "base, a motor in the base and a magnetic stirrer.\n\n3. The mug of claim 1, wherein the "
    "motor is battery powered.\n\n4. The mug of claim 3, wherein the battery is charged "
    "through a coil in a saucer under the mug, and the saucer carries a switch, a lamp and a "
    "clock, and the clock turns the motor on each morning before the owner wakes.\n\n5. The "
    "mug of claim 4, wherein the lamp shows the charge of the battery and the state of the "
    "motor, and the switch turns the lamp and the clock off at night."
)


def tiny_neox_memorised(
    source: Path, out: Path, *, steps: int = 300, texts: list[str] | None = None
) -> Path:
    """A tiny GPT-NeoX trained for a few seconds to recite short patents (by default two
    that pass the quality gate), so that an end-to-end job has known outputs."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    tiny_neox_build(source, out, layers=2, hidden=64)
    tok = AutoTokenizer.from_pretrained(out)
    model = GPTNeoXForCausalLM.from_pretrained(out)
    texts = [t + tok.eos_token for t in (texts or MEMO_PATENTS)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    model.save_pretrained(out)
    return out


def tiny_neox_hashed(source: Path, out: Path, *, layers: int = 2, hidden: int = 64) -> Path:
    """A tiny GPT-NeoX whose weights are the same bits on every machine: each is an integer
    hash of its index, scaled by correctly rounded float64 operations (random init goes
    through RNG and math code whose rounding need not match from one CPU to another). Its output
    layer is scaled up so that the next-token distributions are peaked like a trained
    model's: top_p then cuts some rows to a few tokens, the boundary most sensitive to
    float differences. For samples generated on one machine and proved on another
    (tests/proof_samples.py)."""
    import torch

    tiny_neox_build(source, out, layers=layers, hidden=hidden)
    from transformers import GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM.from_pretrained(out)
    head = model.get_output_embeddings().weight
    at = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            index = torch.arange(at, at + param.numel(), dtype=torch.int64)
            at += param.numel()
            uniform = _hash32(index).to(torch.float64) / 2**32 - 0.5  # on [-0.5, 0.5)
            fan_in = param.shape[-1] if param.dim() > 1 else hidden
            gain = 4.0 if param is head else 1.0
            # Unit variance per input, times gain (sqrt: correctly rounded on every machine).
            scale = gain * math.sqrt(12.0 / fan_in)
            param.copy_((uniform * scale).view(param.shape).to(param.dtype))
    model.save_pretrained(out)
    return out


def _hash32(index):
    """A 32-bit integer hash of each element (xorshift-multiply rounds as in Wellons'
    lowbias32, with multipliers under 2^31 so that no int64 product overflows). A plain
    multiplicative hash of consecutive indices is a Weyl sequence: the rows of a matrix
    came out shifted copies of each other."""
    x = (index * 0x7FEB352D + 12345) % 2**32
    x = x ^ (x >> 16)
    x = (x * 0x5BD1E995) % 2**32
    x = x ^ (x >> 15)
    x = (x * 0x7FEB352D) % 2**32
    return x ^ (x >> 16)


def weights_digest(model_dir: Path) -> str:
    """sha256 over the model's tensors by name, in float32 bytes."""
    import hashlib

    import torch
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in sorted(load_file(str(path)).items()):
            digest.update(name.encode())
            digest.update(tensor.to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
