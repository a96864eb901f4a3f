"""Jobs aimed at a CPC area or a search (generation/aiming.py), and the coverage view that
says where to aim them (search.models.SearchTally)."""

import json

import pytest
from django.core.management import call_command

from generation.aiming import AimError, aim_at_cpc, aim_at_search, claim_preamble
from generation.batches import job_prompts
from generation.models import GenerationJob, Sample
from generation.services import job_create
from patents.importing import reference_import_records
from patents.models import Patent
from search.models import SearchTally
from tests.helpers import ROOT


@pytest.fixture
def references(db):
    with open(ROOT / "tests" / "fixtures" / "patents-40.jsonl") as fh:
        lines = [line for line in fh if line.strip()]
    reference_import_records(enumerate(lines, start=1))
    # The keyword index (publish hooks run after commit, which these tests never reach);
    # without a dense index the searches rank by keywords alone.
    from search.services import search_documents_sync

    search_documents_sync()
    return Patent.objects.filter(origin=Patent.Origin.REFERENCE)


@pytest.mark.unit
def test_a_claims_preamble_names_the_invention_not_its_elements():
    assert claim_preamble("A wheeled hand truck comprising: a frame; two wheels.") == (
        "A wheeled hand truck comprising"
    )
    assert claim_preamble("A lidar system, wherein the detector counts photons.") == (
        "A lidar system, wherein"
    )
    assert len(claim_preamble("word " * 100).split()) == 14


@pytest.mark.django_db
def test_a_job_aimed_at_a_cpc_area_seeds_its_prompts_from_the_areas_patents(references, generators):
    hand_truck = references.get(title__icontains="hand truck")
    aim = aim_at_cpc(cpc="B62B")
    assert aim["kind"] == "cpc" and aim["value"] == "B62B"
    assert [s["source_id"] for s in aim["seeds"]] == [hand_truck.source_id]
    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=2,
        mode=GenerationJob.Mode.MIXED,
        dispatch=False,
        aim=aim,
    )
    prompts, _, modes = job_prompts(job=job, indexes=[0, 1])
    by_mode = dict(zip(modes, prompts, strict=True))
    assert by_mode["top-down"].endswith(f"## Title\n{hand_truck.title}\n\n## Abstract\n")
    first_claim = hand_truck.claims.order_by("number").first().text
    assert by_mode["bottom-up"].endswith("1. " + claim_preamble(first_claim))
    assert claim_preamble(first_claim) != first_claim  # the subject, not the claim
    with pytest.raises(AimError, match="no reference patent"):
        aim_at_cpc(cpc="H99Z")


@pytest.mark.django_db
def test_generate_aims_at_a_search_and_the_job_page_says_so(
    references, generators, memo_model, admin_client
):
    call_command(
        "generate",
        "--model",
        str(memo_model),
        "--aim-query",
        "photon counting lidar detector",
        "--count",
        "2",
        "--mode",
        "top-down",
        "--inline",
    )
    job = GenerationJob.objects.latest("pk")
    assert job.aim["kind"] == "search" and job.aim["value"] == "photon counting lidar detector"
    lidar = references.get(title__icontains="LIDAR")
    assert job.aim["seeds"][0]["source_id"] == lidar.source_id
    prompts = list(
        Sample.objects.filter(job=job).order_by("index").values_list("prompt", flat=True)
    )
    titles = [s["title"] for s in job.aim["seeds"]]
    assert prompts[0].startswith(f"# Patent\n\n## Title\n{lidar.title}\n")
    assert all(p.split("\n")[3] in titles for p in prompts)  # the seeds in turn
    page = admin_client.get(f"/admin/generation/generationjob/{job.pk}/change/").content.decode()
    assert "search <strong>photon counting lidar detector</strong>" in page
    assert lidar.source_id in page
    with pytest.raises(AimError):
        aim_at_search(query="   ")


@pytest.mark.django_db
def test_searches_are_counted_by_area_only_and_the_coverage_view_shows_the_gap(
    references, client, admin_client, generators
):
    secret = "a confidential claim to a wheeled hand truck with a folding frame"
    for _ in range(3):
        assert client.get("/api/search", {"q": secret, "origin": "reference"}).status_code == 200
    assert (
        client.get("/api/search", {"q": "lidar photon detector", "origin": "all"}).status_code
        == 200
    )
    tallies = {t.cpc: t.searches for t in SearchTally.objects.all()}
    assert tallies["B62B"] == 3 and tallies["G01S"] >= 1
    stored = json.dumps(list(SearchTally.objects.values()), default=str)
    assert "confidential" not in stored and "hand truck" not in stored
    job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=1,
        dispatch=False,
        aim=aim_at_cpc(cpc="B62B"),
    )
    GenerationJob.objects.filter(aim__kind="cpc").update(published_count=1)
    assert client.get("/coverage/").status_code == 302  # admins only
    page = admin_client.get("/coverage/").content.decode()
    assert '<tr class="coverage-row"><td>B62B</td><td>3</td>' in page
    assert "aim_cpc=B62B" in page
