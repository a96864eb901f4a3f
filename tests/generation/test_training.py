"""The fine-tuning recipe on 50 real patents with a micro model: loss falls, and the result
loads through the generator registry and generates."""

import gzip
import json

import pytest

from generation.training import DatasetReport, patent_render, training_examples
from tests.helpers import shared_path


@pytest.mark.unit
def test_render_matches_the_generation_prompts():
    text = patent_render(
        title="Mug", abstract="A mug.", claims=["A mug.", "The mug of claim 1."], order="top-down"
    )
    assert text == (
        "# Patent\n\n## Title\nMug\n\n## Abstract\nA mug.\n\n## Claims\n\n"
        "1. A mug.\n\n2. The mug of claim 1."
    )
    text = patent_render(title="Mug", abstract="A mug.", claims=["A mug."], order="bottom-up")
    assert text == "# Patent\n\n## Claims\n\n1. A mug.\n\n## Abstract\nA mug.\n\n## Title\nMug"


def test_long_patents_lose_whole_claims_and_incomplete_ones_are_skipped(kl3m_source):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(kl3m_source)
    claims = [f"{i}. A widget part number {i} " + "with detail " * 20 + "." for i in range(1, 30)]
    records = [
        {"title": "Widget", "abstract": "A widget.", "claims": claims, "claims_complete": True},
        {"title": "Half", "abstract": "Half.", "claims": ["1. A half."], "claims_complete": False},
    ]
    report = DatasetReport()
    examples = training_examples(
        records, tokenizer=tok, max_length=400, mix=1.0, seed=0, report=report
    )
    assert report.skipped_incomplete == 1 and report.truncated == 1 and len(examples) == 1
    text = tok.decode(examples[0])
    assert len(examples[0]) <= 400 and text.endswith(".<|end|>")
    kept = text.count("A widget part number")
    assert 1 <= kept < 29 and f"number {kept} with detail" in text
    assert f"number {kept + 1} " not in text


def test_canceled_claims_are_left_out_of_training_text(kl3m_source):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(kl3m_source)
    record = {
        "title": "Mug",
        "abstract": "A mug.",
        "claims": ["1-3. (canceled)", "4. A mug with a handle.", "5. (Cancelled)"],
        "claims_complete": True,
    }
    examples = training_examples(
        [record], tokenizer=tok, max_length=400, mix=1.0, seed=0, report=DatasetReport()
    )
    text = tok.decode(examples[0])
    assert "1. A mug with a handle." in text and "ancel" not in text


@pytest.mark.django_db
def test_micro_training_lowers_loss_and_the_model_generates(tmp_path, kl3m_source, generators):
    source = shared_path("data", "patents.jsonl.gz")
    data = tmp_path / "fifty.jsonl"
    with gzip.open(source, "rt") as fh, open(data, "w") as out:
        n = 0
        for line in fh:
            record = json.loads(line)
            short = (
                50 < len(record["abstract"]) < 700
                and record["claims"]
                and len(record["claims"][0]) < 500
            )
            if record.get("claims_complete") and short:
                out.write(line)
                n += 1
            if n == 50:
                break
    from django.core.management import call_command

    out_dir = tmp_path / "model"
    call_command(
        "train_patent_model",
        "--base",
        str(kl3m_source),
        "--data",
        str(data),
        "--out",
        str(out_dir),
        "--from-scratch",
        "--size",
        "micro",
        "--steps",
        "20",
        "--batch-size",
        "2",
        "--max-length",
        "768",
        "--lr",
        "3e-3",
        "--samples",
        "2",
        "--sample-max-new-tokens",
        "24",
        "--checkpoint-every",
        "10",
    )
    report = json.loads((out_dir / "training_report.json").read_text())
    assert report["loss_last_10"] < report["loss_first_10"]
    assert report["perplexity"] < report["perplexity_before"]
    assert report["dataset"]["patents"] == 50
    assert set(report["hit_rate"]) == {"top-down", "bottom-up"}
    assert (out_dir / "checkpoint" / "state.pt").exists()

    from generation.batches import job_run
    from generation.services import generator_resolve, job_create

    gen, override = generator_resolve(str(out_dir))
    assert override == str(out_dir)
    job = job_create(
        generator=gen, model_override=override, count=2, max_new_tokens=24, dispatch=False
    )
    assert job_run(job_id=job.pk) == "done"
    job.refresh_from_db()
    assert job.done_count == 2 and job.tokens_generated > 0
