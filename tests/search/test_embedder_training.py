"""train_embedder: the split, hard-negative mining, and a real (small) fine-tuning run of the
packaged all-MiniLM-L6-v2 through the management command."""

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from search.embedder_training import (
    embedder_corpus_load,
    embedder_examples_load,
    hard_negatives_mine,
    patent_split,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "patents-40.jsonl"


@pytest.mark.unit
def test_examples_come_from_one_split_only_and_keep_their_patent():
    lines = FIXTURE.read_text().splitlines()
    for split in ("train", "dev", "test"):
        examples = embedder_examples_load(lines, split=split, extra_claims=2)
        assert examples
        assert {patent_split(pid) for pid, _, _ in examples} == {split}
    train = embedder_examples_load(lines, split="train", extra_claims=2)
    first_only = embedder_examples_load(lines, split="train", extra_claims=0)
    assert len(train) > len(first_only)  # other independent claims join the first


def _encoder(table: dict[str, list[float]]):
    def encode(texts):
        vectors = np.array([table[t] for t in texts], dtype="float32")
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return encode


@pytest.mark.unit
def test_hard_negative_is_the_closest_other_patent_below_the_positive():
    examples = [
        ("A", "claim a1", "doc a"),
        ("A", "claim a2", "doc a"),
        ("B", "claim b", "doc b"),
        ("C", "claim c", "doc c"),
    ]
    table = {
        "claim a1": [1.0, 0.0, 0.0],
        "claim a2": [0.99, 0.14, 0.0],  # the same patent: never a negative
        "doc a": [0.9, 0.43, 0.0],
        "claim b": [0.999, 0.0, 0.04],  # closer than A's own document: likely a positive
        "doc b": [0.0, 0.0, 1.0],
        "claim c": [0.6, 0.8, 0.0],  # the hardest that stays below 0.95 x the positive
        "doc c": [0.0, 1.0, 0.0],
    }
    negatives = hard_negatives_mine(examples, encode=_encoder(table))
    assert len(negatives) == len(examples)
    assert [n[0] for n in negatives][0] == "claim c"
    for (pid, _, _), (negative,) in zip(examples, negatives, strict=True):
        owner_texts = {t for p, c, d in examples if p == pid for t in (c, d)}
        assert negative not in owner_texts
    two = hard_negatives_mine(examples, encode=_encoder(table), count=2)
    assert all(len(n) == 2 and len(set(n)) == 2 for n in two)
    assert two[0][0] == "claim c"  # hardest first
    # A corpus document of a patent without claims can be anyone's negative; a copy of an
    # example's own document cannot.
    table["corpus x"] = [0.8, 0.6, 0.0]
    with_corpus = hard_negatives_mine(
        examples, encode=_encoder(table), corpus=["corpus x", "doc a", "corpus x"]
    )
    assert with_corpus[0] == ["corpus x"] and with_corpus[1] == ["corpus x"]
    for (pid, _, doc), (negative,) in zip(examples, with_corpus, strict=True):
        assert negative != doc


@pytest.mark.unit
def test_the_corpus_holds_the_train_splits_patents_without_claims():
    records = [
        {"id": f"P{i}", "title": f"Widget {i}", "abstract": "A widget.", "claims": claims}
        for i, claims in enumerate([[], ["1. A widget."]] * 30)
    ]
    lines = [json.dumps(r) for r in records]
    corpus = embedder_corpus_load(lines)
    expected = {
        f"Widget {i}. A widget."
        for i, r in enumerate(records)
        if not r["claims"] and patent_split(r["id"]) == "train"
    }
    assert expected and set(corpus) == expected


@pytest.mark.django_db
def test_train_embedder_command_fine_tunes_the_packaged_model(tmp_path, capsys):
    """A real run of sentence-transformers' trainer on the packaged all-MiniLM-L6-v2, with
    mined negatives: the saved model loads and pulls its training pairs closer together."""
    from sentence_transformers import SentenceTransformer

    from search.embeddings import OFFLINE_PACKAGE_NAME, embedding_model_source

    out = tmp_path / "embedder"
    call_command(
        "train_embedder",
        "--data",
        str(FIXTURE),
        "--out",
        str(out),
        "--limit",
        "16",
        "--batch-size",
        "8",
        "--epochs",
        "3",
        "--learning-rate",
        "1e-4",
        "--max-seq-length",
        "64",
        "--threads",
        "1",
        "--bf16",
        "off",
        "--hard-negatives",
        "on",
        "--negatives",
        "2",
    )
    printed = capsys.readouterr().out
    assert "mined 32 hard negatives" in printed and "EMBEDDING_MODEL=" in printed
    report = json.loads((out / "training_report.json").read_text())
    assert report["pairs"] == 16 and report["hard_negatives"] == 2

    lines = FIXTURE.read_text().splitlines()
    examples = embedder_examples_load(lines, split="train", extra_claims=2)[:16]
    claims = [c for _, c, _ in examples]
    docs = [d for _, _, d in examples]

    def pair_similarity(model):
        model.max_seq_length = 64
        a = model.encode(claims, normalize_embeddings=True)
        b = model.encode(docs, normalize_embeddings=True)
        return float(np.mean(np.sum(a * b, axis=1)))

    base = SentenceTransformer(embedding_model_source(OFFLINE_PACKAGE_NAME), device="cpu")
    tuned = SentenceTransformer(str(out), device="cpu")
    assert pair_similarity(tuned) > pair_similarity(base) + 0.01
