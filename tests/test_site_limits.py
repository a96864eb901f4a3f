"""The site stays up under requests that take too long: a request past its deadline is
answered with the site's own page (never a killed worker), and the deadline sits below
gunicorn's timeout."""

import time
from pathlib import Path

import pytest

from tests.helpers import python_run


def _slow_search(monkeypatch, seconds=5.0):
    """A search that takes longer than the deadline: the real search replaced by a sleep
    (what makes a real one slow, a busy CPU or a huge claim, is not reproducible here)."""
    import search.views

    calls = []

    def slow(*args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(seconds)
        raise AssertionError("the deadline did not stop the request")

    monkeypatch.setattr(search.views, "search_patents", slow)
    return calls


@pytest.mark.django_db
def test_a_request_past_its_deadline_gets_the_sites_page(client, settings, monkeypatch):
    settings.WEB_REQUEST_DEADLINE_SECONDS = 0.3
    calls = _slow_search(monkeypatch)
    response = client.get("/search/", {"q": "a telephone keyboard"})
    assert calls, "the search view was not reached"
    assert response.status_code == 503
    assert response["Retry-After"]
    body = response.content.decode()
    assert "That took too long" in body and 'href="/search/"' in body
    # The alarm is gone: a later request in the same process is not interrupted.
    monkeypatch.undo()
    time.sleep(0.4)
    assert client.get("/healthz").status_code in (200, 503)


@pytest.mark.django_db
def test_an_api_request_past_its_deadline_gets_a_json_503(client, settings, monkeypatch):
    settings.WEB_REQUEST_DEADLINE_SECONDS = 0.3
    import search.views

    def slow(*args, **kwargs):
        time.sleep(5)

    monkeypatch.setattr(search.views, "_limited_search", slow)
    response = client.get("/api/search", {"q": "a telephone keyboard"})
    assert response.status_code == 503
    assert "limit" in response.json()["error"]


@pytest.mark.django_db
def test_an_outer_alarm_survives_a_request(client, settings):
    """pytest-timeout (and any caller) may hold SIGALRM: a request restores it."""
    import signal

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        settings.WEB_REQUEST_DEADLINE_SECONDS = 5
        client.get("/healthz")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 1.0
        time.sleep(remaining + 0.2)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.django_db
def test_an_unexpected_error_gets_the_sites_500_page(client, settings, monkeypatch):
    import search.views

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(search.views, "search_patents", broken)
    client.raise_request_exception = False
    response = client.get("/search/", {"q": "a telephone keyboard"})
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


def test_gunicorn_kills_a_worker_only_well_after_the_sites_deadline(tmp_path):
    done = python_run(
        "import allthepatents.gunicorn_conf as c, django.conf as d;"
        "print(c.timeout, d.settings.WEB_REQUEST_DEADLINE_SECONDS)",
        data_dir=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    timeout, deadline = done.stdout.split()
    assert float(timeout) >= float(deadline) + 10


def test_a_worker_timeout_under_the_deadline_fails_at_start(tmp_path):
    done = python_run(
        "import allthepatents.settings",
        data_dir=tmp_path,
        WEB_REQUEST_DEADLINE_SECONDS="30",
        WEB_WORKER_TIMEOUT="20",
    )
    assert done.returncode != 0
    assert "WEB_WORKER_TIMEOUT=20 must exceed" in done.stderr


def test_under_gunicorn_a_stuck_request_is_answered_and_the_worker_lives(tmp_path):
    """Real gunicorn, one sync worker: the stuck request gets the site's 503 page, and the
    same worker (same pid, no WORKER TIMEOUT) answers the next request."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.helpers import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "allthepatents.settings",
        "SEARCH_PRELOAD": "0",
        "WEB_REQUEST_DEADLINE_SECONDS": "1",
        "WEB_WORKER_TIMEOUT": "6",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    log = tmp_path / "gunicorn.log"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(gunicorn),
                "tests.slow_wsgi",
                "-c",
                "allthepatents/gunicorn_conf.py",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "1",
                "--error-logfile",
                "-",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/search/", timeout=2).read()
                break
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as stuck:
            urllib.request.urlopen(f"{base}/search/?q=telephone+keyboard", timeout=20)
        assert stuck.value.code == 503, log.read_text()[-3000:]
        assert "That took too long" in stuck.value.read().decode()
        with pytest.raises(urllib.error.HTTPError) as again:
            urllib.request.urlopen(f"{base}/api/search?q=telephone+keyboard", timeout=20)
        assert again.value.code == 503
        time.sleep(1)
        assert urllib.request.urlopen(f"{base}/search/", timeout=5).status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert "WORKER TIMEOUT" not in text, text[-2000:]
    assert text.count("Booting worker") == 1, text[-2000:]
