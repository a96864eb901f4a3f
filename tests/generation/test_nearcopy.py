"""Near-copy check: a lightly edited copy of a real patent is caught, another topic is not."""

import json
import random

import pytest

from generation.batches import job_run
from generation.models import Sample
from generation.services import job_create
from patents.importing import reference_import_records
from patents.models import MinHashBand
from patents.nearcopy import jaccard, near_copy_find, shingles
from patents.records import jsonl_lines


def _edit(text: str, every: int, rng: random.Random) -> str:
    words = text.split()
    for i in range(0, len(words), every):
        words[i] = rng.choice(["said", "the", "a", "unit", "member", "element"])
    return " ".join(words)


@pytest.fixture
def references(db, fixture_jsonl):
    reference_import_records(jsonl_lines(fixture_jsonl))
    return [json.loads(line) for line in fixture_jsonl.read_text().splitlines()]


def test_bands_are_stored_on_import(references):
    assert MinHashBand.objects.values("patent").distinct().count() == len(references)


def test_edited_copy_is_caught_and_other_topics_are_not(references):
    rng = random.Random(1)
    caught = 0
    for record in references[:10]:
        claims = [_edit(c.split(". ", 1)[-1], 10, rng) for c in record["claims"]]
        found = near_copy_find(abstract=_edit(record["abstract"], 10, rng), claims=claims)
        caught += found is not None and found.patent.source_id == record["id"]
    assert caught == 10
    # A different invention that borrows the claim language of the field is not a copy.
    other = near_copy_find(
        abstract="A bicycle saddle clamp with a toothed arc that sets the saddle angle.",
        claims=[
            "A saddle clamp comprising a lower jaw, an upper jaw, a bolt drawing the jaws "
            "together, and a toothed arc between the jaws setting the angle of a saddle.",
            "The saddle clamp of claim 1, wherein the arc has teeth spaced at one degree.",
        ],
    )
    assert other is None


def test_distinct_real_patents_are_far_apart(references):
    sets = [shingles(r["abstract"] + " " + " ".join(r["claims"])) for r in references]
    worst = max(jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :])
    assert worst < 0.2


@pytest.mark.django_db
def test_the_gate_rejects_a_near_copy_with_the_closest_document(references, generators, memo_model):
    from patents.importing import reference_import_records
    from tests.tiny_models import MEMO_PATENTS

    # The memorised model recites MEMO_PATENTS[0]: import it as a reference patent first.
    text = MEMO_PATENTS[0]
    title = text.split("## Title\n")[1].split("\n")[0]
    abstract = text.split("## Abstract\n")[1].split("\n\n")[0]
    claims = [c.strip() for c in text.split("## Claims\n\n")[1].split("\n\n")]
    reference_import_records(
        [(1, json.dumps({"id": "USMEMO1", "title": title, "abstract": abstract, "claims": claims}))]
    )
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=4,
        dispatch=False,
        model_override=str(memo_model),
        temperature=0.7,
        max_new_tokens=200,
        seed=5,
    )
    job_run(job_id=job.pk)
    rejected = [s for s in Sample.objects.filter(job=job) if "near_copy" in s.reasons]
    assert rejected
    details = rejected[0].details["near_copy"]
    assert details["source_id"] == "USMEMO1" and details["similarity"] >= 0.2
    # The gate names the step that objected (#17.4): shingles caught a verbatim recital.
    assert rejected[0].details["gate_step"] == "shingle_near_copy"
