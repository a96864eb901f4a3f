"""The backtest (generation/backtest.py) on the committed fixture patents, with the real
offline MiniLM: planted hits are counted, unrelated inventions are not, and no patent from
on or after the cutoff reaches a generator's training."""

import datetime as dt
import json

import pytest

from generation.backends import GenerationOutput
from generation.backtest import (
    BacktestError,
    backtest_run,
    model_cutoff_check,
    record_published_before,
)
from generation.prompts import KL3M_BOTTOM_UP, KL3M_TOP_DOWN
from generation.training import patent_render
from tests.helpers import ROOT

CUTOFF = dt.date(2015, 1, 1)


def _records():
    with open(ROOT / "tests" / "fixtures" / "patents-40.jsonl") as fh:
        records = [json.loads(line) for line in fh]
    records = [r for r in records if r.get("title") and r.get("abstract") and r.get("claims")]
    for i, record in enumerate(records):
        # Two thirds before the cutoff, a third after; one undated, one only filed before.
        before = i % 3 != 2
        record["date"] = f"{2010 if before else 2018}-03-{1 + i % 28:02d}"
        record["date_type"] = "publication"
    records[0]["date"] = ""
    records[1]["date_type"] = "filing"
    return records


def _paraphrase(text: str) -> str:
    return (
        text.replace("comprising", "including")
        .replace("wherein", "in which")
        .replace(" a ", " one ")
    )


class PlantingBackend:
    """Stands in for a generator (a fake, as the subject here is the counting, not the
    model): even seeds write close paraphrases of later patents, one each; odd seeds write
    an invention unrelated to any fixture patent. Completions follow the prompt's mode."""

    def __init__(self, later):
        self.later = later
        self.planted = []

    def generate(self, prompts, seeds, params, *, heartbeat=None, decide=None):
        outputs = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            order = "top-down" if prompt == KL3M_TOP_DOWN else "bottom-up"
            if seed % 2 == 0 and seed // 2 < len(self.later):
                record = self.later[seed // 2]
                self.planted.append(record["id"])
                title, abstract = record["title"], _paraphrase(record["abstract"])
                claims = [_paraphrase(c.split(". ", 1)[-1]) for c in record["claims"][:3]]
            else:
                title = f"Folding kayak paddle {seed}"
                abstract = (
                    "A kayak paddle whose shaft folds at a sleeve joint, so that it fits in a "
                    "backpack, with blades feathered by a detent ring."
                )
                claims = [
                    "A kayak paddle comprising a two-part shaft, a sleeve joint, and a detent "
                    "ring setting the feather angle of the blades.",
                    "The kayak paddle of claim 1, wherein the sleeve joint locks with a pin.",
                ]
            claims = [c if c.endswith(".") else c + "." for c in claims]
            text = patent_render(title=title, abstract=abstract, claims=claims, order=order)
            head = KL3M_TOP_DOWN if order == "top-down" else KL3M_BOTTOM_UP
            outputs.append(GenerationOutput(text=text[len(head) :], tokens=100, finished=True))
        return outputs


@pytest.mark.django_db
def test_planted_paraphrases_are_hits_and_unrelated_inventions_are_not():
    records = _records()
    later = [r for r in records if record_published_before(r, CUTOFF) is False]
    backend = PlantingBackend(later)
    report = backtest_run(records=records, cutoff=CUTOFF, backend=backend, count=8, seed=0)
    assert report["later_patents"] == len(later) and report["passed_gate"] == 8
    assert len(backend.planted) == 4
    assert report["hits"] == 4 and report["anticipated"] == 4
    hits = [p for p in report["best_pairs"] if p["hit"]]
    assert sorted(p["later_patent"] for p in hits) == sorted(backend.planted)
    assert all("kayak" not in p["generated_title"].lower() for p in hits)
    assert report["hits_per_1000"] == 500.0
    low, high = report["hits_per_1000_interval"]
    assert low < 500 < high
    calibration = report["calibration"]
    assert calibration["random_pairs"] > 100 and 0 < calibration["threshold"] < 1
    assert calibration["own_above_threshold"] > 0.5  # a patent's own documents clear it


@pytest.mark.django_db
def test_the_run_is_recorded_for_stats(client):
    from generation.services import backtest_record

    records = _records()
    later = [r for r in records if record_published_before(r, CUTOFF) is False]
    report = backtest_run(
        records=records, cutoff=CUTOFF, backend=PlantingBackend(later), count=4, seed=0
    )
    backtest_record(model="planted", report=report)
    page = client.get("/stats/").content.decode()
    assert '<tr class="backtest-row"><td>planted</td><td>2015-01-01</td>' in page
    assert '<td class="backtest-hits">500.0 ' in page


def test_dates_decide_what_counts_as_before():
    assert record_published_before({"date": "2014-12-31"}, CUTOFF) is True
    assert record_published_before({"date": "2015-01-01"}, CUTOFF) is False
    assert record_published_before({"date": ""}, CUTOFF) is None
    # Filed before the cutoff says nothing of publication; filed after it, published after.
    assert record_published_before({"date": "2014-01-01", "date_type": "filing"}, CUTOFF) is None
    assert record_published_before({"date": "2016-01-01", "date_type": "filing"}, CUTOFF) is False


def test_a_generator_that_may_have_read_later_patents_is_refused(tmp_path):
    with pytest.raises(BacktestError, match="no training cutoff"):
        model_cutoff_check(tmp_path, CUTOFF)
    (tmp_path / "training_report.json").write_text(json.dumps({"cutoff": "2016-01-01"}))
    with pytest.raises(BacktestError, match="after the backtest's cutoff"):
        model_cutoff_check(tmp_path, CUTOFF)
    (tmp_path / "training_report.json").write_text(json.dumps({"cutoff": "2014-06-01"}))
    assert model_cutoff_check(tmp_path, CUTOFF) == dt.date(2014, 6, 1)


def test_training_with_a_cutoff_reads_nothing_from_on_or_after_it(tmp_path):
    from generation.training import TrainConfig, train

    records = _records()
    data = tmp_path / "patents.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = train(
        TrainConfig(
            base=str(ROOT / "models" / "demo-generator"),
            data=data,
            out=tmp_path / "model",
            steps=1,
            batch_size=2,
            max_length=384,
            from_scratch=True,
            sample_count=0,
            threads=1,
            cutoff=CUTOFF,
        )
    )
    certain = sum(record_published_before(r, CUTOFF) is True for r in records)
    assert report["cutoff"] == "2015-01-01"
    assert report["dataset"]["skipped_cutoff"] == len(records) - certain
    assert report["dataset"]["latest_date_read"] < "2015-01-01"
    saved = json.loads((tmp_path / "model" / "training_report.json").read_text())
    assert model_cutoff_check(tmp_path / "model", CUTOFF) == CUTOFF and saved["cutoff"]
