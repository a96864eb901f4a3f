"""Contributors over HTTP (#18): lease a unit, generate it locally with the same backend
code, submit the sampled token ids; the server proves them before it records anything."""

import time

import pytest

from generation.backends import SamplingParams, TransformersBackend
from generation.contributions import contributor_create, contributor_revoke
from generation.models import JobBatch, Sample
from generation.services import job_create


def _open_job_create(generators, model_dir, settings, **extra):
    """A job of 4 samples in units of 2 on the tiny model, open to contributors."""
    settings.GENERATION_BATCH_SIZE = 2
    settings.NEAR_COPY_EMBEDDING_CHECK = False
    return job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=4,
        dispatch=False,
        model_override=str(model_dir),
        max_new_tokens=24,
        open_to_contributors=True,
        **extra,
    )


@pytest.fixture
def open_job(generators, tiny_neox, settings):
    return _open_job_create(generators, tiny_neox, settings, seed=3)


def _post(client, path, token, body):
    return client.post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def _submit(client, token, unit, samples):
    """Submit, then do the worker's half in this process (the live test below runs a real
    worker), then read the answer as the contributor would."""
    from generation.contributions import contribution_verify

    sent = _post(
        client, "/api/contribute/submit", token, {"unit": unit["unit"], "samples": samples}
    )
    if sent.status_code != 202:
        return sent.status_code, sent.json()
    contribution = sent.json()["contribution"]
    contribution_verify(contribution_id=contribution)
    state = _post(client, "/api/contribute/status", token, {"contribution": contribution})
    return state.status_code, state.json()


def _generate(unit, model_dir):
    """What the contributor's machine does: the unit's prompts and seeds, our backend."""
    backend = TransformersBackend(str(model_dir), quantize="int8")
    s = unit["sampling"]
    params = SamplingParams(**s)
    outs = backend.generate(
        [x["prompt"] for x in unit["samples"]], [x["seed"] for x in unit["samples"]], params
    )
    return [
        {"index": x["index"], "token_ids": o.token_ids, "finished": o.finished}
        for x, o in zip(unit["samples"], outs, strict=True)
    ]


@pytest.mark.django_db
def test_a_contributor_completes_a_job_unit_by_unit(client, open_job, tiny_neox):
    contributor, token = contributor_create(name="ada")
    assert token.startswith("atp_") and token not in contributor.token_hash  # kept hashed
    for _ in range(2):
        unit = _post(client, "/api/contribute/lease", token, {}).json()
        assert unit["job"] == open_job.pk and len(unit["samples"]) == 2
        status, done = _submit(client, token, unit, _generate(unit, tiny_neox))
        assert status == 200 and done["status"] == "accepted", done
        assert done["recorded"] == 2
    assert _post(client, "/api/contribute/lease", token, {}).json()["unit"] is None
    open_job.refresh_from_db()
    assert open_job.status == "done" and open_job.done_count == 4
    samples = Sample.objects.filter(job=open_job)
    assert sorted(s.index for s in samples) == [0, 1, 2, 3]
    assert {s.contributor_id for s in samples} == {contributor.pk}
    assert not JobBatch.objects.filter(job=open_job).exists()


@pytest.mark.django_db
def test_an_edited_submission_is_refused_and_records_nothing(client, open_job, tiny_neox):
    _, token = contributor_create(name="eve")
    unit = _post(client, "/api/contribute/lease", token, {}).json()
    samples = _generate(unit, tiny_neox)
    samples[1]["token_ids"][5] = (samples[1]["token_ids"][5] + 12345) % 30000
    status, refused = _submit(client, token, unit, samples)
    assert refused["status"] == "refused" and "proof of sampling" in refused["error"]
    assert not Sample.objects.filter(job=open_job).exists()
    # The unit is still theirs: the genuine samples go through, once.
    assert _submit(client, token, unit, _generate(unit, tiny_neox))[1]["status"] == "accepted"
    again, body = _submit(client, token, unit, _generate(unit, tiny_neox))
    assert again == 409, body
    assert Sample.objects.filter(job=open_job).count() == 2


@pytest.mark.django_db
def test_another_models_text_is_refused(client, open_job, memo_model):
    _, token = contributor_create(name="mallory")
    unit = _post(client, "/api/contribute/lease", token, {}).json()
    _, refused = _submit(client, token, unit, _generate(unit, memo_model))
    assert refused["status"] == "refused" and "proof of sampling" in refused["error"]


@pytest.mark.django_db
def test_an_expired_unit_is_reissued_and_the_late_submission_refused(
    client, open_job, tiny_neox, settings
):
    settings.GENERATION_LEASE_SECONDS = 1
    _, slow = contributor_create(name="slow")
    _, quick = contributor_create(name="quick")
    first = _post(client, "/api/contribute/lease", slow, {}).json()
    time.sleep(1.2)
    settings.GENERATION_LEASE_SECONDS = 60
    second = _post(client, "/api/contribute/lease", quick, {}).json()
    assert second["samples"] == first["samples"]  # the same batch, re-issued
    late, _ = _submit(client, slow, first, _generate(first, tiny_neox))
    assert late == 409
    _, kept = _submit(client, quick, second, _generate(second, tiny_neox))
    assert kept["status"] == "accepted"
    assert {s.contributor.name for s in Sample.objects.filter(job=open_job)} == {"quick"}


@pytest.mark.django_db
def test_tokens_are_checked_and_leases_limited(client, open_job, settings):
    contributor, token = contributor_create(name="grace")
    assert _post(client, "/api/contribute/lease", "atp_wrong", {}).status_code == 401
    assert client.post("/api/contribute/lease").status_code == 401
    settings.CONTRIBUTOR_MAX_LEASES = 1
    assert _post(client, "/api/contribute/lease", token, {}).json()["unit"]
    assert _post(client, "/api/contribute/lease", token, {}).status_code == 429
    contributor_revoke(contributor=contributor)
    assert _post(client, "/api/contribute/lease", token, {}).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_contribute_command_completes_units_over_http(
    live_server, redis_worker, generators, tiny_neox, settings
):
    """The contributor's own command, in its own process, against a live HTTP server (the
    test server thread: the units go over real sockets as JSON) and a real worker that
    proves and records what it submits."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    job = _open_job_create(generators, tiny_neox, settings)
    contributor, token = contributor_create(name="lin")
    run = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "contribute",
            "--server",
            live_server.url,
            "--token",
            token,
            "--model",
            str(tiny_neox),
            "--idle-exit",
        ],
        cwd=ROOT,
        env={**os.environ, "GENERATION_QUANTIZE": "int8"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 units done" in run.stdout
    job.refresh_from_db()
    assert job.status == "done" and job.done_count == 4
    assert set(Sample.objects.filter(job=job).values_list("contributor", flat=True)) == {
        contributor.pk
    }


@pytest.mark.django_db
def test_an_invention_names_its_contributor(client, open_job):
    from generation.models import Contributor
    from patents.services import patent_publish

    contributor = Contributor.objects.create(name="<b>ada</b>", token_hash="x" * 64)
    patent = patent_publish(
        title="Self-stirring mug",
        abstract="A mug whose base holds a motor that turns a magnetic stirrer in the drink.",
        claims=["1. A mug comprising a vessel and a motor in its base."],
        job=open_job,
        provenance={"contributor": contributor.name},
    )
    Sample.objects.create(
        job=open_job,
        index=0,
        mode="top-down",
        seed=1,
        prompt="p",
        raw_text="t",
        verdict="published",
        patent=patent,
        contributor=contributor,
    )
    html = client.get(patent.get_absolute_url()).content.decode()
    assert "Contributed by</dt><dd>&lt;b&gt;ada&lt;/b&gt;" in html  # and escaped
    api = client.get(f"/api/patents/{patent.public_id}").json()
    assert api["provenance"]["contributor"] == "<b>ada</b>"
    assert "/api/contribute/submit" in client.get("/api/openapi.json").json()["paths"]
    documented = client.get("/api/openapi.json").json()["paths"]["/api/contribute/submit"]
    # What submit really answers: 202 (the proof runs later), never a 422.
    assert {"202", "409", "503"} <= set(documented["post"]["responses"])
    assert "422" not in documented["post"]["responses"]
    credits = client.get("/contributors/").content.decode()
    row = credits.split('class="contributor-row"')[1].split("</tr>")[0]
    assert "&lt;b&gt;ada&lt;/b&gt;" in row and "<td>1</td><td>1</td><td>100%</td>" in row


def _signup_client():
    """A browser-like client (CSRF enforced) with an address of its own: rate-limit windows
    outlive a test."""
    import secrets

    from django.test import Client

    return Client(
        enforce_csrf_checks=True,
        REMOTE_ADDR=f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.9",
    )


def _sign_up(client, name):
    page = client.get("/contributors/signup/")
    assert page.status_code == 200
    return client.post(
        "/contributors/signup/",
        {"name": name, "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
    )


@pytest.mark.django_db
def test_public_sign_up_is_off_by_default(settings):
    from generation.models import Contributor

    settings.CONTRIBUTOR_SIGNUP = False
    client = _signup_client()
    assert client.get("/contributors/signup/").status_code == 404
    assert client.post("/contributors/signup/", {"name": "mallory"}).status_code in (403, 404)
    assert b"Become a contributor" not in client.get("/contributors/").content
    assert not Contributor.objects.exists()


@pytest.mark.django_db
def test_public_sign_up_gives_a_working_token_once_and_is_limited(client, open_job, settings):
    from generation.models import Contributor

    settings.CONTRIBUTOR_SIGNUP = True
    settings.CONTRIBUTOR_SIGNUP_PER_HOUR = 2
    browser = _signup_client()
    assert b"Become a contributor" in browser.get("/contributors/").content

    made = _sign_up(browser, "  Ada   Lovelace ")
    assert made.status_code == 200 and made["Cache-Control"] == "no-store"
    token = made.context["token"]
    assert token.startswith("atp_") and token.encode() in made.content
    ada = Contributor.objects.get()
    assert (ada.name, ada.signed_up) == ("Ada Lovelace", True)
    assert token not in (ada.token_hash, ada.token_prefix)  # only its hash is kept
    # The token is a contributor's like any other: it leases a unit of the open job.
    assert _post(client, "/api/contribute/lease", token, {}).json()["unit"]

    taken = _sign_up(browser, "ada lovelace")
    assert taken.status_code == 409 and b"taken" in taken.content
    # Two sign-ups an hour from one address; a third waits (and creates nothing).
    limited = _sign_up(browser, "Charles Babbage")
    assert limited.status_code == 429 and Contributor.objects.count() == 1
    # Bad names from another address: too short, control characters, markup is escaped.
    other = _signup_client()
    assert _sign_up(other, "ab").status_code == 400
    assert _sign_up(other, "bell\x07").status_code == 400
    other = _signup_client()
    marked = _sign_up(other, "<b>Bold</b>")
    assert marked.status_code == 200
    assert b"<b>Bold</b>" not in marked.content and b"&lt;b&gt;Bold&lt;/b&gt;" in marked.content
