"""Faults and bad input: a dead broker, hostile queries, deploy settings, rate limits."""

import os
import secrets
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from generation.models import GenerationJob
from tests.helpers import ROOT, wait_for

DEAD_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def dead_broker(settings):
    """Points the web side's Celery producer and health checks at a port nobody serves."""
    from allthepatents.celery import app

    def reset_pool():
        # Producer pools are bound to the URL they were made with: drop the app's references
        # (closing them would close kombu's shared pool for the good URL too).
        app._pool = None
        app.amqp._producer_pool = None

    old = app.conf.broker_url
    app.conf.broker_url = DEAD_BROKER
    reset_pool()
    settings.CELERY_BROKER_URL = DEAD_BROKER
    settings.HEALTHZ_TIMEOUT = 0.3
    yield
    app.conf.broker_url = old
    reset_pool()


@pytest.mark.django_db
def test_broker_down_site_answers_and_job_is_kept(client, admin_client, generators, dead_broker):
    from tests.factories import patent_published

    patent = patent_published(n=1)
    assert client.get("/").status_code == 200
    assert client.get(patent.get_absolute_url()).status_code == 200
    assert client.get("/search/", {"q": "widget"}).status_code == 200
    assert client.get("/api/search", {"q": "widget"}).status_code == 200
    health = admin_client.get("/healthz", {"detail": 1}).json()
    assert health["broker"]["ok"] is False and health["worker"]["ok"] is False
    gen = generators["kl3m-002-170m-patent"]
    form = {
        "generator": gen.pk,
        "model_override": "",
        "mode": "top-down",
        "count": 3,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": 50,
        "repetition_penalty": 1.1,
        "max_new_tokens": 64,
        "seed": 1,
        "topics_text": "",
    }
    response = admin_client.post("/admin/generation/generationjob/add/", form)
    assert response.status_code == 302
    job = GenerationJob.objects.get()
    # The dispatch ran on commit; in this test's transaction, run it as the commit would.
    from generation.services import job_dispatch

    assert job_dispatch(job_id=job.pk) is False
    job.refresh_from_db()
    assert job.status == "queued" and "broker is unavailable" in job.last_error
    changelist = admin_client.post(
        "/admin/generation/generationjob/",
        {"action": "start_jobs", "_selected_action": [job.pk]},
        follow=True,
    )
    assert b"could not be dispatched" in changelist.content
    assert GenerationJob.objects.filter(pk=job.pk, status="queued").exists()


@pytest.mark.django_db(transaction=True)
def test_job_left_queued_by_a_dead_broker_runs_when_a_worker_starts(
    generators, tiny_neox, worker_factory
):
    from generation.services import job_create

    job = job_create(
        generator=generators["kl3m-002-170m-patent"],
        count=2,
        model_override=str(tiny_neox),
        max_new_tokens=16,
        dispatch=False,
    )
    GenerationJob.objects.filter(pk=job.pk).update(last_error="Not dispatched: broker down")
    worker = worker_factory()  # its start-up re-dispatches queued jobs
    wait_for(
        lambda: GenerationJob.objects.get(pk=job.pk).status == "done",
        timeout=120,
        message=lambda: worker.log_text()[-6000:],
    )


@pytest.mark.django_db
def test_job_control_needs_the_permission(client, generators):
    staff = User.objects.create_user("clerk", password="pw-123456789", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_generationjob"))
    client.force_login(staff)
    assert client.get("/admin/generation/generationjob/add/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="add_generationjob"))
    assert client.get("/admin/generation/generationjob/add/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="run_generation"))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    assert client.get("/admin/generation/generationjob/add/").status_code == 200
    anonymous = client.__class__()
    assert anonymous.get("/admin/generation/generationjob/").status_code == 302


@pytest.mark.django_db
def test_forms_need_csrf(generators):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    admin = User.objects.create_superuser("root", password="pw-123456789")
    strict.force_login(admin)
    response = strict.post("/admin/generation/generationjob/add/", {"count": 1})
    assert response.status_code == 403


@pytest.mark.django_db
def test_api_is_rate_limited_per_client(client, settings):
    settings.SEARCH_RATE_LIMIT = 3
    settings.SEARCH_RATE_WINDOW = 60
    addr = {"REMOTE_ADDR": "203.0.113.77"}
    codes = [client.get("/api/search", {"q": "widget"}, **addr).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/search", {"q": "widget"}, **addr)
    assert int(limited["Retry-After"]) >= 1 and limited.json()["error"]
    other = client.get("/api/search", {"q": "widget"}, REMOTE_ADDR="203.0.113.78")
    assert other.status_code == 200


def test_production_settings_pass_check_deploy(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "allthepatents.settings",
        "DEBUG": "0",
        "DATA_DIR": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "allthepatents.example",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_COOKIES": "1",
        "SECURE_HSTS_SECONDS": "31536000",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout


HOSTILE_TEXT = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            '"',
            "*",
            "NEAR",
            "OR",
            "--",
            ";",
            "' OR 1=1 --",
            "\x00",
            "a\x00b",
            "NEAR(a b)",
            '"unclosed',
            "title:*",
            "^",
            "AND NOT",
            "()",
            "\\",
            "x" * 20_001,
            "é" * 1_000_000,
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=50),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.sampled_from(["", "ten", "1e9", "NaN", "-0", "3.5", "0x10"]),
)
DATES = st.one_of(
    st.dates().map(str),
    st.sampled_from(["", "2020-13-45", "yesterday", "0000-00-00", "2020/01/01"]),
)


@pytest.mark.django_db
@override_settings(SEARCH_RATE_LIMIT=0)
@hsettings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    q=HOSTILE_TEXT,
    k=NUMBERS,
    page=NUMBERS,
    before=DATES,
    after=DATES,
    path=st.sampled_from(["/search/", "/api/search"]),
)
def test_hostile_queries_never_cause_a_5xx(client, q, k, page, before, after, path):
    response = client.get(
        path, {"q": q, "k": k, "page": page, "before": before, "after": after, "search": "1"}
    )
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.status_code == 400
        if path.startswith("/api/"):
            assert response.json()["error"]
        else:
            assert b'class="error"' in response.content
