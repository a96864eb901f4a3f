"""Contributors over HTTP: lease a unit, generate it locally with the same backend
code, submit the sampled token ids; the server proves them before it records anything."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from generation.backends import TransformersBackend
from generation.batches import job_counters_refresh
from generation.contributions import contributor_create, contributor_revoke
from generation.models import GenerationJob, JobBatch, Sample
from generation.sampling import SamplingParams
from generation.selectors import contributors_credits
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
        open_to_contributors=True,
        **{"max_new_tokens": 24, **extra},
    )


@pytest.fixture
def open_job(generators, hashed_neox, settings):
    return _open_job_create(generators, hashed_neox, settings, seed=3)


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
    """What the contributor's machine does: the unit's prompts and seeds, our backend, in
    the precision the contribute command samples in on this CPU."""
    from generation.contributions import contributor_precision

    backend = TransformersBackend(str(model_dir), quantize=contributor_precision(unit["precision"]))
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
def test_a_contributor_completes_a_job_unit_by_unit(client, open_job, hashed_neox):
    contributor, token = contributor_create(name="ada")
    assert token.startswith("atp_") and token not in contributor.token_hash  # kept hashed
    for _ in range(2):
        unit = _post(client, "/api/contribute/lease", token, {}).json()
        assert unit["job"] == open_job.pk and len(unit["samples"]) == 2
        status, done = _submit(client, token, unit, _generate(unit, hashed_neox))
        assert status == 200 and done["status"] == "accepted", done
        assert done["recorded"] == 2
    assert _post(client, "/api/contribute/lease", token, {}).json()["unit"] is None
    open_job.refresh_from_db()
    assert open_job.status == "done" and open_job.done_count == 4
    samples = Sample.objects.filter(job=open_job)
    assert sorted(s.index for s in samples) == [0, 1, 2, 3]
    assert {s.contributor_id for s in samples} == {contributor.pk}
    assert not JobBatch.objects.filter(job=open_job).exists()
    # The public credits, which the job's counters keep, say what the samples say.
    contributor_create(name="bob")  # signed up, nothing sent yet
    published = samples.filter(verdict=Sample.Verdict.PUBLISHED).count()
    credits = {c["name"]: (c["samples"], c["published"]) for c in contributors_credits()}
    assert credits == {"ada": (4, published), "bob": (0, 0)}


@pytest.mark.django_db
def test_an_edited_submission_is_refused_and_records_nothing(client, open_job, hashed_neox):
    _, token = contributor_create(name="eve")
    unit = _post(client, "/api/contribute/lease", token, {}).json()
    samples = _generate(unit, hashed_neox)
    samples[1]["token_ids"][5] = (samples[1]["token_ids"][5] + 12345) % 30000
    status, refused = _submit(client, token, unit, samples)
    assert refused["status"] == "refused" and "proof of sampling" in refused["error"]
    assert not Sample.objects.filter(job=open_job).exists()
    # The refused unit went back to the pool; leased again, the genuine samples go through,
    # once.
    unit = _post(client, "/api/contribute/lease", token, {}).json()
    assert _submit(client, token, unit, _generate(unit, hashed_neox))[1]["status"] == "accepted"
    again, body = _submit(client, token, unit, _generate(unit, hashed_neox))
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
    client, open_job, hashed_neox, settings
):
    settings.GENERATION_LEASE_SECONDS = 1
    _, slow = contributor_create(name="slow")
    _, quick = contributor_create(name="quick")
    first = _post(client, "/api/contribute/lease", slow, {}).json()
    time.sleep(1.2)
    settings.GENERATION_LEASE_SECONDS = 60
    second = _post(client, "/api/contribute/lease", quick, {}).json()
    assert second["samples"] == first["samples"]  # the same batch, re-issued
    late, _ = _submit(client, slow, first, _generate(first, hashed_neox))
    assert late == 409
    _, kept = _submit(client, quick, second, _generate(second, hashed_neox))
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
    live_server, redis_worker, generators, hashed_neox, settings
):
    """The contributor's own command, in its own process, against a live HTTP server (the
    test server thread: the units go over real sockets as JSON) and a real worker that
    proves and records what it submits. Each unit takes longer to generate than its lease
    (2 s): the command renews it as it goes, as a slow machine must."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    settings.GENERATION_LEASE_SECONDS = 2
    # As a site's web and workers share their settings: units name the precision the
    # worker (GENERATION_QUANTIZE=none) proves in.
    settings.GENERATION_QUANTIZE = "none"
    job = _open_job_create(generators, hashed_neox, settings, max_new_tokens=2000)
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
            str(hashed_neox),
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
    job_counters_refresh(open_job)  # as recording a batch does
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


# What an outside probe got accepted, each refused now.


def _send(client, token, unit, samples):
    """Submit only (no check): the answer the contributor gets at once."""
    return _post(
        client, "/api/contribute/submit", token, {"unit": unit["unit"], "samples": samples}
    )


def _lease(client, token):
    unit = _post(client, "/api/contribute/lease", token, {}).json()
    assert unit.get("unit"), unit
    return unit


def _strikes(name):
    from generation.models import Contributor

    return Contributor.objects.get(name=name).strikes


def _draw(unit, model_dir, *, seed_shift=0, **change):
    """The unit's samples drawn some other way than the unit says."""
    import dataclasses

    from generation.contributions import contributor_precision

    backend = TransformersBackend(str(model_dir), quantize=contributor_precision(unit["precision"]))
    params = dataclasses.replace(SamplingParams(**unit["sampling"]), **change)
    outs = backend.generate(
        [x["prompt"] for x in unit["samples"]],
        [x["seed"] + seed_shift for x in unit["samples"]],
        params,
    )
    return [
        {"index": x["index"], "token_ids": o.token_ids, "finished": o.finished}
        for x, o in zip(unit["samples"], outs, strict=True)
    ]


@pytest.mark.django_db
def test_samples_drawn_another_way_than_the_units_are_refused(
    client, open_job, hashed_neox, settings
):
    """Other seeds, other temperatures, greedy decoding, and one sample copied to every
    index: each is a text the model could have written, but not the unit's draw."""
    settings.CONTRIBUTOR_MAX_STRIKES = 100  # this test counts refusals, not suspensions
    _, token = contributor_create(name="steerer")
    unit = _lease(client, token)
    genuine = _generate(unit, hashed_neox)
    attempts = {
        "temperature 1.6": _draw(unit, hashed_neox, temperature=1.6),
        "temperature 0.5": _draw(unit, hashed_neox, temperature=0.5),
        "greedy": _draw(unit, hashed_neox, top_k=1),
        "other seeds": _draw(unit, hashed_neox, seed_shift=7919),
        "one sample copied": [{**s, "token_ids": genuine[0]["token_ids"]} for s in genuine],
    }
    for what, samples in attempts.items():
        _, refused = _submit(client, token, unit, samples)
        assert refused.get("status") == "refused", (what, refused)
        assert "proof of sampling" in refused["error"], (what, refused)
        unit = _lease(client, token)  # a refused unit went back to the pool at once
    assert not Sample.objects.filter(job=open_job).exists()
    assert _strikes("steerer") == len(attempts)
    # The genuine samples of the same unit still pass, and a pass clears the strikes.
    _, accepted = _submit(client, token, unit, _generate(unit, hashed_neox))
    assert accepted["status"] == "accepted", accepted
    assert _strikes("steerer") == 0


@pytest.mark.django_db
def test_empty_and_cut_short_samples_are_refused_and_the_indexes_return(
    client, open_job, hashed_neox, settings
):
    from generation.models import Contribution, Contributor

    settings.CONTRIBUTOR_MAX_STRIKES = 2
    _, token = contributor_create(name="waster")
    unit = _lease(client, token)
    empty = [{"index": x["index"], "token_ids": [], "finished": False} for x in unit["samples"]]
    sent = _send(client, token, unit, empty)
    assert sent.status_code == 400 and "cut short" in sent.json()["error"]
    assert not JobBatch.objects.filter(owner__endswith=unit["unit"]).exists()  # back in the pool
    unit = _lease(client, token)
    prefixes = [{**s, "token_ids": s["token_ids"][:12]} for s in _generate(unit, hashed_neox)]
    sent = _send(client, token, unit, prefixes)
    assert sent.status_code == 400 and "cut short" in sent.json()["error"]
    assert not Sample.objects.exists() and not Contribution.objects.exists()
    waster = Contributor.objects.get(name="waster")
    assert not waster.active and "cut short" in waster.suspended_reason  # two strikes
    assert _post(client, "/api/contribute/lease", token, {}).status_code == 401
    open_job.refresh_from_db()
    assert open_job.done_count == 0


@pytest.mark.django_db
def test_a_refused_unit_goes_back_and_its_samples_are_not_kept(client, open_job, hashed_neox):
    from generation.models import Contribution

    _, token = contributor_create(name="eve2")
    unit = _lease(client, token)
    samples = _generate(unit, hashed_neox)
    samples[1]["token_ids"][5] = (samples[1]["token_ids"][5] + 12345) % 30000
    _, refused = _submit(client, token, unit, samples)
    assert refused["status"] == "refused"
    row = Contribution.objects.get()
    assert all(set(s) == {"index", "tokens", "finished", "sha256"} for s in row.samples)
    assert not JobBatch.objects.filter(owner__endswith=unit["unit"]).exists()
    # Resubmitting the refused unit finds it gone: a refusal never renews a lease.
    again = _send(client, token, unit, samples)
    assert again.status_code == 409
    assert _post(client, "/api/contribute/renew", token, {"unit": unit["unit"]}).status_code == 409


@pytest.mark.django_db(transaction=True)
def test_the_lease_cap_holds_under_parallel_requests(generators, hashed_neox, settings):
    """16 lease requests at once from one token, each on its own database connection:
    at most CONTRIBUTOR_MAX_LEASES units end up held."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from generation.contributions import ContributionError, work_unit_lease

    settings.CONTRIBUTOR_MAX_LEASES = 2
    job = _open_job_create(generators, hashed_neox, settings)
    job.count = 32
    job.save(update_fields=["count"])
    contributor, _ = contributor_create(name="hoarder")

    def lease(_):
        try:
            return bool(work_unit_lease(contributor=contributor))
        except ContributionError as exc:
            return exc.kind
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lease, range(16)))
    assert answers.count(True) == 2, answers
    assert JobBatch.objects.filter(owner__startswith=f"contributor:{contributor.pk}:").count() == 2


@pytest.mark.django_db
def test_submissions_are_rate_limited_per_token(client, open_job, settings):
    settings.CONTRIBUTOR_SUBMITS_PER_MINUTE = 2
    _, token = contributor_create(name="flooder")
    unit = _lease(client, token)
    bad = {"unit": unit["unit"], "samples": "junk"}
    answers = [_post(client, "/api/contribute/submit", token, bad).status_code for _ in range(3)]
    assert answers == [400, 400, 429]
    # Another token is counted on its own.
    _, other = contributor_create(name="bystander")
    assert _post(client, "/api/contribute/submit", other, bad).status_code == 409


@pytest.mark.django_db
def test_indexes_must_be_integers(client, open_job, hashed_neox):
    _, token = contributor_create(name="coercer")
    unit = _lease(client, token)
    genuine = _generate(unit, hashed_neox)
    for bad in ("0", 1.7, True, None):
        samples = [dict(genuine[0], index=bad), genuine[1]]
        sent = _send(client, token, unit, samples)
        assert sent.status_code == 400 and "integer index" in sent.json()["error"], bad


@pytest.mark.django_db
def test_a_check_that_waits_keeps_its_unit_and_a_revoked_token_records_nothing(
    client, open_job, hashed_neox, settings
):
    from generation.contributions import contribution_verify
    from generation.models import Contribution

    contributor, token = contributor_create(name="patient")
    unit = _lease(client, token)
    sent = _send(client, token, unit, _generate(unit, hashed_neox))
    assert sent.status_code == 202
    # The check waited behind the site's own work for longer than a lease. (The clock is
    # moved, not slept on: a short lease would run out while a slow CPU still generates.)
    owner = JobBatch.objects.get(owner__endswith=unit["unit"]).owner
    JobBatch.objects.filter(owner=owner).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert contribution_verify(contribution_id=sent.json()["contribution"]).status == "accepted"

    unit = _lease(client, token)
    sent = _send(client, token, unit, _generate(unit, hashed_neox))
    contributor_revoke(contributor=contributor)
    checked = contribution_verify(contribution_id=sent.json()["contribution"])
    assert checked.status == "refused" and "revoked" in checked.error
    assert Sample.objects.filter(job=open_job).count() == 2
    assert not JobBatch.objects.filter(owner__endswith=unit["unit"]).exists()
    assert Contribution.objects.filter(status="pending").count() == 0


@pytest.mark.django_db
def test_units_name_the_model_the_job_runs(client, generators, memo_model, settings):
    """The unit names the model the job runs (its folder, which the contributor has too);
    what is published from it names the model publicly (never the server's path). A model
    that recites whole patents, so that some samples pass the gate and are published."""
    from generation.contributions import contribution_verify
    from generation.selectors import model_public_name

    job = _open_job_create(
        generators, memo_model, settings, seed=3, max_new_tokens=200, temperature=0.7
    )
    _, token = contributor_create(name="provenance")
    unit = _lease(client, token)
    assert unit["model"] == str(memo_model) == job.model_override
    assert unit["lease_seconds"] > 0
    sent = _send(client, token, unit, _generate(unit, memo_model))
    checked = contribution_verify(contribution_id=sent.json()["contribution"])
    assert checked.status == "accepted", checked.error
    recorded = Sample.objects.filter(job=job, patent__isnull=False).select_related("patent")
    assert recorded.exists()
    for sample in recorded:
        patent = sample.patent
        assert patent.generator_model == model_public_name(str(memo_model))
        assert not patent.generator_model.startswith("/")
        assert patent.generator_revision.startswith("sha256:")
        assert patent.contributor == "provenance"


@pytest.mark.unit
@pytest.mark.parametrize(
    "taken, attempt",
    [
        ("Ada", "ada"),
        ("Ada", "Аda"),  # Cyrillic A
        ("Ada", "Ａｄａ"),  # full width
        ("Ada", "A d a"),
        ("Ada", "Ádá"),
        ("Paul", "PauI"),  # capital i for l
        ("Bob", "B0b"),
        ("Amore", "Arnore"),  # rn for m
        ("Ada", "A\u200bda"),  # a zero-width space
    ],
)
def test_look_alike_names_share_a_skeleton(taken, attempt):
    from generation.names import name_skeleton

    assert name_skeleton(taken) == name_skeleton(attempt)


@pytest.mark.unit
def test_different_names_and_reserved_ones():
    from generation.names import name_is_reserved, name_skeleton

    assert name_skeleton("Ada") != name_skeleton("Ida Lovelace")
    assert name_skeleton("Grace") != name_skeleton("Gracie")
    for reserved in ("admin", "ADMIN", "Аdmin", "Site admin team", "All the Patents", "root"):
        assert name_is_reserved(reserved), reserved
    assert not name_is_reserved("Ada Lovelace")


@pytest.mark.django_db
def test_sign_up_refuses_look_alikes_and_reserved_names(settings):
    settings.CONTRIBUTOR_SIGNUP = True
    settings.CONTRIBUTOR_SIGNUP_PER_HOUR = 50
    browser = _signup_client()
    assert _sign_up(browser, "Ada Lovelace").status_code == 200
    for attempt in ("ada lovelace", "Аda Lovelace", "Ada  Lovelace", "ADA LOVELACE"):
        assert _sign_up(browser, attempt).status_code == 409, attempt
    assert _sign_up(browser, "Administrator").status_code == 400
    assert _sign_up(browser, "allthepatents").status_code == 400


@pytest.mark.django_db(transaction=True)
def test_a_check_lost_with_its_worker_is_queued_again_when_a_worker_starts(
    generators, hashed_neox, settings, worker_factory
):
    """kill -9 just after a worker took the check: the message is gone with it (here: the
    broker flushed), and the submission would stay pending for ever while its unit is held.
    The next worker to start sends every pending check again."""
    from django.conf import settings as dj_settings

    from generation.contributions import contribution_receive, work_unit_lease
    from generation.models import Contribution
    from tests.helpers import redis_flush, wait_for

    job = _open_job_create(generators, hashed_neox, settings)
    contributor, _ = contributor_create(name="orphan")
    unit = work_unit_lease(contributor=contributor)
    received = contribution_receive(
        contributor=contributor, unit_id=unit["unit"], samples=_generate(unit, hashed_neox)
    )
    redis_flush(dj_settings.REDIS_URL)  # the message died with the worker that took it
    worker_factory()
    wait_for(
        lambda: Contribution.objects.get(pk=received.pk).status != "pending",
        timeout=120,
        message="the pending check was never run again",
    )
    assert Contribution.objects.get(pk=received.pk).status == "accepted"
    # The unit's samples are the contributor's (the worker's recovery may run the rest of
    # the job itself).
    assert Sample.objects.filter(job=job, contributor=contributor).count() == 2


@pytest.mark.django_db
def test_credits_of_samples_recorded_before_the_jobs_kept_them_are_filled_in(open_job):
    """Jobs that ran before the jobs' counters held their contributors' credits get them from
    their samples when the site migrates; /contributors/ then says what the samples say."""
    import importlib

    from django.apps import apps

    fill = importlib.import_module(
        "generation.migrations.0018_job_contributor_counts"
    ).contributor_counts_fill
    ada, _ = contributor_create(name="ada")
    bob, _ = contributor_create(name="bob")
    for index, (by, verdict) in enumerate(
        [(ada, "published"), (ada, "rejected"), (bob, "rejected"), (None, "published")]
    ):
        Sample.objects.create(
            job=open_job,
            index=index,
            mode="top-down",
            seed=index,
            prompt="p",
            raw_text="t",
            verdict=verdict,
            contributor=by,
        )
    assert {c["name"]: c["samples"] for c in contributors_credits()} == {"ada": 0, "bob": 0}
    fill(apps, None)
    credits = [(c["name"], c["samples"], c["published"]) for c in contributors_credits()]
    assert credits == [("ada", 2, 1), ("bob", 1, 0)]
    kept = GenerationJob.objects.get(pk=open_job.pk).contributor_counts
    job_counters_refresh(open_job)  # the worker's refresh agrees with the migration's
    assert GenerationJob.objects.get(pk=open_job.pk).contributor_counts == kept
