"""Fine-tuning recipe: both task orders of the seed model, from JSON Lines patents.

Heavy imports stay inside functions. The output directory loads through the generator
registry as is (``generate --model DIR``).
"""

import datetime as dt
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
from patents.vocabulary import BOTTOM_UP, MODES, TOP_DOWN

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SIZES = {
    "micro": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
    },
    "tiny": {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
    },
    "small": {
        "num_hidden_layers": 8,
        "hidden_size": 512,
        "intermediate_size": 1024,
        "num_attention_heads": 8,
    },
}


def patent_render(*, title: str, abstract: str, claims: list[str], order: str) -> str:
    """Exactly the generation prompts' format (see generation.prompts), without EOS."""
    claims_md = "\n\n".join(f"{i}. {text}" for i, text in enumerate(claims, start=1))
    if order == TOP_DOWN:
        return f"{KL3M_TOP_DOWN}\n{title}\n\n## Abstract\n{abstract}\n\n## Claims\n\n{claims_md}"
    return f"{KL3M_BOTTOM_UP}\n\n{claims_md}\n\n## Abstract\n{abstract}\n\n## Title\n{title}"


@dataclass
class DatasetReport:
    patents: int = 0
    skipped_incomplete: int = 0
    skipped_too_long: int = 0
    truncated: int = 0
    skipped_cutoff: int = 0  # published on or after the cutoff, or not known to be before it
    latest_date_read: str = ""
    examples: dict = field(default_factory=lambda: dict.fromkeys(MODES, 0))


def training_examples(
    records, *, tokenizer, max_length: int, mix: float, seed: int, report: DatasetReport
) -> list[list[int]]:
    """Token id lists, one per patent, in an order drawn with probability ``mix`` for
    top-down. Long patents lose whole claims from the end, never part of one."""
    rng = random.Random(seed)
    eos = tokenizer.eos_token
    out = []
    for record in records:
        if not record.get("claims_complete"):
            report.skipped_incomplete += 1
            continue
        title = (record.get("title") or "").strip()
        abstract = (record.get("abstract") or "").strip()
        from patents.text import claims_texts

        # A "(canceled)" claim would teach the model to write one, which the gate rejects.
        claims = claims_texts(record.get("claims"))
        if not (title and abstract and claims):
            report.skipped_incomplete += 1
            continue
        order = TOP_DOWN if rng.random() < mix else BOTTOM_UP
        kept = len(claims)
        while True:
            text = (
                patent_render(title=title, abstract=abstract, claims=claims[:kept], order=order)
                + eos
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= max_length or kept == 1:
                break
            # Drop claims in proportion to the overshoot, at least one, whole claims only.
            kept = max(1, min(kept - 1, int(kept * max_length / len(ids))))
        if len(ids) > max_length:
            report.skipped_too_long += 1
            continue
        if kept < len(claims):
            report.truncated += 1
        report.patents += 1
        report.examples[order] += 1
        out.append(ids)
    return out


def model_from_scratch(*, base: Path, size: str):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    data = json.loads((base / "config.json").read_text())
    data.pop("_name_or_path", None)
    data.update(
        SIZES[size],
        num_key_value_heads=SIZES[size]["num_attention_heads"],
        use_cache=True,
        max_position_embeddings=2048,
    )
    return GPTNeoXForCausalLM(GPTNeoXConfig(**data))


def _batches(examples, batch_size, rng, pad_id):
    import torch

    order = list(range(len(examples)))
    rng.shuffle(order)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        chunk = [examples[i] for i in order[start : start + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        yield ids, mask, labels


def perplexity(model, examples, *, batch_size: int, pad_id: int) -> float:
    import torch

    model.eval()
    total_loss, total_tokens = 0.0, 0
    with torch.inference_mode():
        for ids, mask, labels in _batches(
            examples, min(batch_size, len(examples)) or 1, random.Random(0), pad_id
        ):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            tokens = int((labels[:, 1:] != -100).sum())
            total_loss += float(loss) * tokens
            total_tokens += tokens
    model.train()
    return math.exp(total_loss / max(total_tokens, 1))


@dataclass
class TrainConfig:
    base: str
    data: Path
    out: Path
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-4
    max_length: int = 512
    mix: float = 0.5
    eval_fraction: float = 0.05
    seed: int = 0
    from_scratch: bool = False
    size: str = "tiny"
    checkpoint_every: int = 200
    resume: bool = True
    sample_count: int = 20
    sample_max_new_tokens: int = 512
    limit: int | None = None
    threads: int = 2
    # Only patents certainly published before this date are read (generation/backtest.py).
    cutoff: "dt.date | None" = None


def train(cfg: TrainConfig, *, progress: Callable[[int, float], None] | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from patents.records import jsonl_lines

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    base = Path(cfg.base).expanduser()
    tokenizer = AutoTokenizer.from_pretrained(str(base) if base.is_dir() else cfg.base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    records = []
    for _, line in jsonl_lines(cfg.data):
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
        if cfg.limit and len(records) >= cfg.limit:
            break
    report = DatasetReport()
    if cfg.cutoff is not None:
        from generation.backtest import record_published_before

        before = [r for r in records if record_published_before(r, cfg.cutoff) is True]
        report.skipped_cutoff = len(records) - len(before)
        records = before
        report.latest_date_read = max((r["date"][:10] for r in records), default="")
    examples = training_examples(
        records,
        tokenizer=tokenizer,
        max_length=cfg.max_length,
        mix=cfg.mix,
        seed=cfg.seed,
        report=report,
    )
    if len(examples) < 2:
        raise ValueError("fewer than two usable patents (complete claims, title, abstract)")
    rng = random.Random(cfg.seed)
    rng.shuffle(examples)
    n_eval = max(1, int(len(examples) * cfg.eval_fraction))
    eval_set, train_set = examples[:n_eval], examples[n_eval:]

    cfg.out.mkdir(parents=True, exist_ok=True)
    checkpoint = cfg.out / "checkpoint"
    step = 0
    if cfg.resume and (checkpoint / "state.pt").exists():
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        step = state["step"]
    elif cfg.from_scratch:
        model = model_from_scratch(base=base, size=cfg.size)
        state = None
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base) if base.is_dir() else cfg.base)
        state = None
    model.config.use_cache = False  # training
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / max(cfg.steps, 1))
    )
    if state:
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
    pad_id = tokenizer.pad_token_id
    losses = []
    data_rng = random.Random(cfg.seed + step)
    first_eval = perplexity(model, eval_set, batch_size=cfg.batch_size, pad_id=pad_id)
    while step < cfg.steps:
        for ids, mask, labels in _batches(
            train_set, min(cfg.batch_size, len(train_set)), data_rng, pad_id
        ):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            step += 1
            losses.append(float(loss))
            if progress:
                progress(step, float(loss))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _checkpoint_save(model, optim, sched, step, checkpoint)
            if step >= cfg.steps:
                break
    train_seconds = time.monotonic() - started
    final_eval = perplexity(model, eval_set, batch_size=cfg.batch_size, pad_id=pad_id)
    model.config.use_cache = True
    model.save_pretrained(cfg.out)
    tokenizer.save_pretrained(cfg.out)
    if base.is_dir():
        for name in TOKENIZER_FILES:
            if (base / name).exists():
                shutil.copy(base / name, cfg.out / name)
    model.generation_config.use_cache = True
    model.generation_config.save_pretrained(cfg.out)
    report_data = {
        "base": cfg.base,
        "cutoff": cfg.cutoff.isoformat() if cfg.cutoff else None,
        "from_scratch": cfg.from_scratch,
        "size": cfg.size if cfg.from_scratch else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": step,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "mix": cfg.mix,
        "dataset": report.__dict__,
        "train_examples": len(train_set),
        "eval_examples": len(eval_set),
        "loss_first_10": sum(losses[:10]) / max(1, len(losses[:10])),
        "loss_last_10": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "perplexity_before": first_eval,
        "perplexity": final_eval,
        "train_seconds": round(train_seconds, 1),
    }
    if cfg.sample_count:
        from patents.nearcopy import patent_text, shingles

        # Training patents as shingle sets: a sample that passes the gate but recites one of
        # them is memorised, not invented (the site's near-copy check would reject it).
        seen = [
            shingles(patent_text(abstract=r.get("abstract") or "", claims=r.get("claims") or []))
            for r in records
            if r.get("claims_complete")
        ]
        report_data["hit_rate"] = hit_rate_measure(
            cfg.out,
            count=cfg.sample_count,
            max_new_tokens=cfg.sample_max_new_tokens,
            seed=cfg.seed,
            training_shingles=seen,
        )
    (cfg.out / "training_report.json").write_text(json.dumps(report_data, indent=2))
    return report_data


def _checkpoint_save(model, optim, sched, step, checkpoint: Path):
    import torch

    tmp = checkpoint.with_name("checkpoint.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(
        {"step": step, "optim": optim.state_dict(), "sched": sched.state_dict()}, tmp / "state.pt"
    )
    shutil.rmtree(checkpoint, ignore_errors=True)
    tmp.rename(checkpoint)


def hit_rate_measure(
    model_dir: Path,
    *,
    count: int,
    max_new_tokens: int,
    seed: int,
    training_shingles: list[set] | None = None,
) -> dict:
    """Share of sampled inventions per mode that pass the quality gate, and of those, how
    many are near-copies (5-word-shingle Jaccard >= the gate's threshold) of a training
    patent."""
    from generation.backends import TransformersBackend
    from generation.parsing import patent_text_parse
    from generation.quality import sample_judge
    from generation.sampling import SamplingParams
    from patents.nearcopy import JACCARD_NEAR_COPY, jaccard, patent_text, shingles

    backend = TransformersBackend(str(model_dir), quantize="none")
    params = SamplingParams(max_new_tokens=max_new_tokens)  # the job defaults otherwise
    out = {}
    for mode, prompt in ((TOP_DOWN, KL3M_TOP_DOWN), (BOTTOM_UP, KL3M_BOTTOM_UP)):
        passed, copies, closest, reasons = 0, 0, [], {}
        for start in range(0, count, 8):
            n = min(8, count - start)
            outputs = backend.generate([prompt] * n, [seed + start + i for i in range(n)], params)
            for o in outputs:
                parsed = patent_text_parse(prompt + o.text, finished=o.finished)
                why = sample_judge(parsed)
                passed += not why
                if not why and training_shingles:
                    mine = shingles(
                        patent_text(
                            abstract=parsed.abstract, claims=[c.text for c in parsed.claims]
                        )
                    )
                    best = max((jaccard(mine, other) for other in training_shingles), default=0)
                    closest.append(round(best, 3))
                    copies += best >= JACCARD_NEAR_COPY
                for r in why:
                    reasons[r] = reasons.get(r, 0) + 1
        out[mode] = {
            "samples": count,
            "passed": passed,
            "rate": passed / count,
            "reasons": reasons,
            "passed_near_copies_of_training": copies,
            "passed_closest_training_jaccard": closest,
        }
    return out
