"""The first hour of a new user: loose ends a newcomer meets."""

import subprocess
import sys

import pytest
from django.utils import timezone

from generation.batches import job_counters_refresh
from generation.models import GenerationJob, Sample
from tests.factories import GeneratorFactory
from tests.helpers import ROOT


def _setting(name, **env):
    import os

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django; django.setup(); from django.conf import settings; print(settings.{name})",
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "SITE_URL"},
            "DJANGO_SETTINGS_MODULE": "allthepatents.settings",
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.unit
def test_site_url_follows_host_and_port_when_unset():
    assert _setting("SITE_URL", PORT="8100") == "http://127.0.0.1:8100"
    assert _setting("SITE_URL", HOST="0.0.0.0", PORT="9000") == "http://127.0.0.1:9000"
    assert (
        _setting("SITE_URL", PORT="8100", SITE_URL="https://prior-art.example/")
        == "https://prior-art.example"
    )


def test_commands_keep_faiss_loader_chatter_out_of_the_terminal():
    import os

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "import faiss; print(faiss.IndexFlatIP(4).d)"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip().endswith("4")  # faiss was loaded
    assert "Could not load library" not in result.stderr + result.stdout
    assert "Loading faiss" not in result.stderr + result.stdout


@pytest.mark.django_db
def test_favicon_and_downloads_explain_themselves(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
    assert "manage.py export_dump" in client.get("/downloads/").content.decode()


@pytest.mark.django_db
def test_random_invention_with_none_says_so(client):
    response = client.get("/patents/random/", follow=True)
    assert "No inventions are published yet" in response.content.decode()


@pytest.mark.django_db
def test_stats_credit_the_model_actually_used(client):
    gen = GeneratorFactory(name="kl3m-like", model_id="alea-institute/kl3m-002-170m-patent")
    job = GenerationJob.objects.create(
        generator=gen, count=1, model_override="var/models/demo", started_at=timezone.now()
    )
    Sample.objects.create(
        job=job, index=0, mode="top-down", seed=1, prompt="p", raw_text="t", verdict="rejected"
    )
    job_counters_refresh(job)  # as a worker does after each batch
    html = client.get("/stats/").content.decode()
    hit_rates = html.split("</table>")[0]
    assert "var/models/demo" in hit_rates and "0 / 1" in hit_rates
    assert "alea-institute/kl3m-002-170m-patent" not in html


@pytest.mark.django_db
def test_cost_per_invention_is_shown(client, admin_client):
    gen = GeneratorFactory(name="cost-gen", model_id="test/cost-model")
    job = GenerationJob.objects.create(
        generator=gen,
        count=4,
        mode="top-down",
        started_at=timezone.now(),
        tokens_generated=4000,
        worker_seconds=20.0,
        done_count=4,
        published_count=2,
    )
    html = client.get("/stats/").content.decode()
    row = html.split('class="cost-row"')[1].split("</tr>")[0]
    assert "test/cost-model" in row and "200.0" in row and "5.0" in row and "10.0" in row
    assert "50%" in row
    page = admin_client.get(f"/admin/generation/generationjob/{job.pk}/change/").content.decode()
    assert "200.0 tokens/s" in page and "10.0 s per published invention" in page


@pytest.mark.django_db
def test_job_page_names_the_workers_that_share_it(admin_client):
    """A job shared by workers (#15.4) says who did what, and who holds a batch now."""
    from datetime import timedelta

    from generation.models import JobBatch, Sample

    gen = GeneratorFactory(name="shared-gen", model_id="test/shared")
    job = GenerationJob.objects.create(generator=gen, count=6, mode="top-down", batch_size=2)
    for index, worker in ((0, "host-a:11"), (1, "host-a:11"), (2, "host-b:22")):
        Sample.objects.create(
            job=job,
            index=index,
            mode="top-down",
            seed=index,
            prompt="p",
            raw_text="t",
            verdict="rejected",
            worker=worker,
        )
    JobBatch.objects.create(
        job=job,
        start=4,
        end=6,
        owner="host-b:22:ab12cd34",
        expires_at=timezone.now() + timedelta(seconds=60),
    )
    page = admin_client.get(f"/admin/generation/generationjob/{job.pk}/change/").content.decode()
    assert "host-a:11: 2 samples" in page
    assert "host-b:22: 1 samples, holding 4-5" in page
