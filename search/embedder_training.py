"""Adapting the sentence embedder to patent language (``manage.py train_embedder``).

all-MiniLM-L6-v2 has never seen claims. It is fine-tuned contrastively on (claim, title +
abstract) pairs of the reference corpus with sentence-transformers' own trainer and
MultipleNegativesRankingLoss (the other pairs of a batch are the negatives), so that a
pasted claim lands next to the document it claims.

Patents are split by a hash of their id: ``train`` (70 %) teaches, ``dev`` (15 %) tunes
settings, ``test`` (15 %) is only ever reported. ``search_eval --split`` uses the same
function, so evaluation never sees a training pair.

Training and mining import nothing of Django at module level, so that the GPU bench
(``bench/embedder_gpu.py``) runs this very code on a machine that has only torch and
sentence-transformers.
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


def patent_split(source_id: str) -> str:
    """train / dev / test by a stable hash of the patent id (70 / 15 / 15)."""
    bucket = int(hashlib.sha256(source_id.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < 70:
        return "train"
    return "dev" if bucket < 85 else "test"


def document_text(title: str, abstract: str) -> str:
    """What the index embeds for a patent's document vector (and training's positive)."""
    if title and abstract:
        return f"{title}. {abstract}"
    return title or abstract


def reference_records_read(lines: Iterable[str]):
    """(record, parsed) for each line of the shared JSON Lines format that parses; a bad
    line is skipped (training and evaluation read what the importer would import)."""
    from patents.records import RecordError, reference_record_parse

    for line in lines:
        try:
            record = json.loads(line)
            yield record, reference_record_parse(record)
        except (ValueError, RecordError):
            continue


def embedder_examples_load(
    lines: Iterable[str], *, split: str = "train", extra_claims: int = 0
) -> list[tuple[str, str, str]]:
    """(patent id, claim, title + abstract) for each patent of ``split`` that has both: its
    first claim, and with ``extra_claims`` up to that many of its other independent claims
    against the same document (an examiner pastes whichever claim is at issue)."""
    examples = []
    for _, parsed in reference_records_read(lines):
        if patent_split(parsed["source_id"]) != split or not parsed["claims"]:
            continue
        doc = document_text(parsed["title"], parsed["abstract"])
        if not doc:
            continue
        pid = parsed["source_id"]
        examples.append((pid, parsed["claims"][0]["text"], doc))
        others = [c for c in parsed["claims"][1:] if c["depends_on"] is None]
        examples.extend((pid, c["text"], doc) for c in others[:extra_claims])
    return examples


def embedder_pairs_load(
    lines: Iterable[str], *, split: str = "train", extra_claims: int = 0
) -> list[tuple[str, str]]:
    """(claim, title + abstract) pairs: ``embedder_examples_load`` without the ids."""
    return [
        (claim, doc)
        for _, claim, doc in embedder_examples_load(lines, split=split, extra_claims=extra_claims)
    ]


def embedder_corpus_load(lines: Iterable[str], *, split: str = "train") -> list[str]:
    """The documents (title + abstract) of the patents of ``split`` that have no claims, so
    no training pair: the rest of the reference corpus, for ``hard_negatives_mine``'s
    ``corpus``. Patents of the other splits are never read, so that evaluation's queries,
    targets and unseen distractors stay out of training. Measured with the GPU bench's
    ``-corpus`` recipes: no gain over mining the pairs alone, so ``train_embedder`` does not
    use it."""
    docs = []
    for _, parsed in reference_records_read(lines):
        if patent_split(parsed["source_id"]) != split or parsed["claims"]:
            continue
        doc = document_text(parsed["title"], parsed["abstract"])
        if doc:
            docs.append(doc)
    return docs


def hard_negatives_mine(
    examples: list[tuple[str, str, str]],
    *,
    encode: Callable[[list[str]], "object"],
    max_ratio: float = 0.95,
    count: int = 1,
    corpus: list[str] | None = None,
) -> list[list[str]]:
    """``count`` hard negatives per example: the texts most similar to its claim among the
    other patents' documents and claims, below ``max_ratio`` times the similarity of its own
    document (a candidate scoring as high as the positive is more likely a missed positive
    than a negative; NV-Retriever's "TopK-PercPos").

    Claims are candidates as well as documents because that is the failure seen on the site:
    another patent's claim outranking the target's abstract. ``corpus`` adds documents of
    patents without a pair (``embedder_corpus_load``): the searched corpus is mostly such
    patents, and they are what outranks a target there. ``encode`` maps texts to unit
    vectors (rows), e.g. the base model's bulk encoder. Returns one list of ``count``
    negatives per example, hardest first."""
    import numpy as np

    if not examples:
        return []
    owners = [pid for pid, _, _ in examples]
    claims = [claim for _, claim, _ in examples]
    doc_index: dict[str, int] = {}
    docs: list[str] = []
    doc_owner: list[str] = []
    for pid, _, doc in examples:
        if pid not in doc_index:
            doc_index[pid] = len(docs)
            docs.append(doc)
            doc_owner.append(pid)
    claim_vecs = np.asarray(encode(claims), dtype="float32")
    doc_vecs = np.asarray(encode(docs), dtype="float32")
    # The same patent under another record id would be its own example's false negative.
    known = set(docs)
    corpus = list(dict.fromkeys(text for text in corpus or [] if text not in known))
    corpus_vecs = (
        np.asarray(encode(corpus), dtype="float32")
        if corpus
        else np.zeros((0, doc_vecs.shape[1]), dtype="float32")
    )
    pool = np.concatenate([doc_vecs, claim_vecs, corpus_vecs])
    pool_text = docs + claims + corpus
    # A corpus document belongs to no example (an empty owner matches no patent id).
    pool_owner = np.array(doc_owner + owners + [""] * len(corpus))
    negatives = []
    for start in range(0, len(examples), 512):
        block = claim_vecs[start : start + 512]
        sims = block @ pool.T
        for row, i in enumerate(range(start, start + len(block))):
            own = owners[i]
            positive = float(sims[row, doc_index[own]])
            scores = sims[row].copy()
            scores[pool_owner == own] = -np.inf
            scores[scores >= max_ratio * positive] = -np.inf
            top = np.argsort(-scores)[:count]
            chosen = [pool_text[j] for j in top if np.isfinite(scores[j])]
            # Too few qualify: the next other patents' documents, each once.
            for step in range(1, len(docs)):
                if len(chosen) >= count:
                    break
                j = (doc_index[own] + step) % len(docs)
                if doc_owner[j] != own and docs[j] not in chosen:
                    chosen.append(docs[j])
            while len(chosen) < count:  # a corpus of fewer patents than that: repeat
                chosen.append(chosen[-1] if chosen else docs[(doc_index[own] + 1) % len(docs)])
            negatives.append(chosen)
    return negatives


def model_source(name: str) -> str:
    """A model name or directory as SentenceTransformer loads it: the offline package's name
    resolves to its directory. A directory is taken as it is, without importing the site's
    settings (the GPU bench has no Django)."""
    if Path(name).is_dir():
        return name
    from search.embeddings import embedding_model_source

    return embedding_model_source(name)


def base_encoder(base: str, *, bf16: bool, threads: int | None = None):
    """The untrained model as an ``encode`` for ``hard_negatives_mine`` (bf16 where the CPU
    computes it natively: mining only ranks, and 16 bits keep the order)."""
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(model_source(base), device="cpu")
    # The opening of a claim names its subject; half the window halves the mining time.
    model.max_seq_length = min(model.max_seq_length, 128)
    if bf16:
        model = model.to(torch.bfloat16)

    def encode(texts: list[str]):
        vectors = model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True
        )
        return vectors.float().cpu().numpy()

    return encode


def embedder_train(
    *,
    pairs: list[tuple[str, str]],
    out: Path,
    negatives: list[list[str]] | None = None,
    base: str,
    epochs: int = 2,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    max_seq_length: int = 256,
    seed: int = 13,
    threads: int | None = None,
    bf16: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Fine-tunes ``base`` on ``pairs`` and saves a SentenceTransformer directory at ``out``
    with ``training_report.json`` beside the weights. Returns the report."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    if len(pairs) < 2:
        raise ValueError("need at least two training pairs")
    torch.manual_seed(seed)
    if threads:
        # A one-off batch job, unlike the web and worker processes: use every core.
        torch.set_num_threads(threads)
    model = SentenceTransformer(model_source(base), device="cpu")
    model.max_seq_length = max_seq_length
    columns = {"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]}
    if negatives is not None:
        if len(negatives) != len(pairs) or len({len(n) for n in negatives}) != 1:
            raise ValueError("the same number of negatives for every pair")
        # MultipleNegativesRankingLoss scores every anchor against every positive and
        # negative of the batch: the mined ones are the hard part.
        for j in range(len(negatives[0])):
            columns[f"negative_{j + 1}"] = [n[j] for n in negatives]
    dataset = Dataset.from_dict(columns)
    loss = losses.MultipleNegativesRankingLoss(model)
    out.mkdir(parents=True, exist_ok=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_ratio=0.1,
        # A duplicate text in a batch would be its own false negative.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=bf16,
    )

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if progress:
                progress(state.global_step, state.max_steps)

    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[_Progress()]
    )
    started = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - started
    model.save(str(out))
    report = {
        "base": base,
        "pairs": len(pairs),
        "hard_negatives": len(negatives[0]) if negatives else 0,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_seq_length": max_seq_length,
        "seed": seed,
        "split": "train (sha256 of the patent id mod 100 < 70)",
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "bf16": bf16,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2))
    return report
