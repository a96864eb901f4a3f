"""The site stays up under requests that take too long: a request past its deadline is
answered with the site's own page (never a killed worker), and the deadline sits below
gunicorn's timeout."""

import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import python_run


def _slow_search(monkeypatch, seconds=5.0):
    """A search that takes longer than the deadline: the real search replaced by a sleep
    (what makes a real one slow, a busy CPU or a huge claim, is not reproducible here)."""
    import search.selectors
    import search.urls  # noqa: F401  (the views bind the real names before the patch)

    calls = []

    def slow(*args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(seconds)
        raise AssertionError("the deadline did not stop the request")

    monkeypatch.setattr(search.selectors, "search_patents", slow)
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
    import search.api

    def slow(*args, **kwargs):
        time.sleep(5)

    monkeypatch.setattr(search.api, "search_workbench", slow)
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
    import search.selectors
    import search.urls  # noqa: F401  (the views bind the real names before the patch)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(search.selectors, "search_patents", broken)
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


@contextmanager
def _gunicorn(tmp_path, **env):
    """Real gunicorn, one sync worker, serving tests/slow_wsgi.py; yields its base URL and
    its log file."""
    import os
    import socket
    import subprocess
    import sys

    from tests.helpers import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "allthepatents.settings",
        "WEB_REQUEST_DEADLINE_SECONDS": "1",
        "WEB_WORKER_TIMEOUT": "6",
        **env,
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
    command = [str(gunicorn), "tests.slow_wsgi", "-c", "allthepatents/gunicorn_conf.py"]
    command += ["-b", f"127.0.0.1:{port}", "-w", "1", "--error-logfile", "-"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if "Booting worker" in log.read_text():
                break
            time.sleep(0.1)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield base, log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_under_gunicorn_a_stuck_request_is_answered_and_the_worker_lives(tmp_path):
    """The stuck request gets the site's 503 page, and the same worker (no WORKER
    TIMEOUT, booted once) answers the next request."""
    import urllib.error
    import urllib.request

    with _gunicorn(tmp_path, SEARCH_PRELOAD="0") as (base, log):
        with pytest.raises(urllib.error.HTTPError) as stuck:
            urllib.request.urlopen(f"{base}/search/?q=telephone+keyboard", timeout=20)
        assert stuck.value.code == 503, log.read_text()[-3000:]
        assert "That took too long" in stuck.value.read().decode()
        with pytest.raises(urllib.error.HTTPError) as again:
            urllib.request.urlopen(f"{base}/api/search?q=telephone+keyboard", timeout=20)
        assert again.value.code == 503
        time.sleep(1)
        assert urllib.request.urlopen(f"{base}/search/", timeout=5).status == 200
    text = log.read_text()
    assert "WORKER TIMEOUT" not in text, text[-2000:]
    assert text.count("Booting worker") == 1, text[-2000:]


def test_under_gunicorn_pages_answer_while_the_search_warms_up(tmp_path):
    """The warm-up (a minute here) runs beside the request loop: the home page and
    /healthz answer before it ends, and the worker is not killed for it."""
    import urllib.request

    with _gunicorn(tmp_path, SEARCH_PRELOAD="1") as (base, log):
        assert urllib.request.urlopen(f"{base}/search/", timeout=20).status == 200
        assert urllib.request.urlopen(f"{base}/healthz", timeout=20).status in (200, 503)
        text = log.read_text()
        assert "search warm-up in worker" not in text, "the warm-up ended before the pages"
        time.sleep(7)  # past WEB_WORKER_TIMEOUT: the warming worker is still alive
        assert urllib.request.urlopen(f"{base}/search/", timeout=20).status == 200
    text = log.read_text()
    assert "WORKER TIMEOUT" not in text, text[-2000:]
    assert text.count("Booting worker") == 1, text[-2000:]


def test_under_gunicorn_a_download_longer_than_the_worker_timeout_arrives_whole(tmp_path):
    """A dump takes minutes to reach a visitor on a slow line; gunicorn's sync worker beats
    between requests only, so its master killed the worker at WEB_WORKER_TIMEOUT and the
    file arrived cut (seen: 25.5 of 60 MB). The download now beats as it streams: a reader
    slower than the timeout gets every byte, from the worker booted once; one whose line
    broke gets the rest."""
    import hashlib
    import http.client
    from urllib.parse import urlsplit

    dumps = tmp_path / "dumps"
    dumps.mkdir()
    name = "allthepatents-2026-12-07.jsonl.gz"
    data = os.urandom(24 * 1024 * 1024)
    (dumps / name).write_bytes(data)
    with _gunicorn(tmp_path, SEARCH_PRELOAD="0", EXPORT_DIR=str(dumps), WEB_WORKER_TIMEOUT="3") as (
        base,
        log,
    ):
        url = urlsplit(base)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("GET", f"/downloads/{name}")
        response = connection.getresponse()
        assert response.status == 200, log.read_text()[-3000:]
        digest, received, started = hashlib.sha256(), 0, time.monotonic()
        # About 3 MB/s: 8 s for the file, well past the 3 s timeout.
        while block := response.read(64 * 1024):
            digest.update(block)
            received += len(block)
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        etag = response.getheader("ETag")
        connection.close()
        # A line that breaks after 5 MB, then a resumption of the rest of that version.
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("GET", f"/downloads/{name}")
        cut = connection.getresponse().read(5 * 1024 * 1024)
        connection.close()
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request(
            "GET", f"/downloads/{name}", headers={"Range": f"bytes={len(cut)}-", "If-Range": etag}
        )
        rest = connection.getresponse()
        assert rest.status == 206, log.read_text()[-3000:]
        assert rest.getheader("Content-Range") == f"bytes {len(cut)}-{len(data) - 1}/{len(data)}"
        resumed = cut + rest.read()
        connection.close()
    text = log.read_text()
    assert hashlib.sha256(resumed).digest() == hashlib.sha256(data).digest()
    assert received == len(data), f"{received:,} of {len(data):,} bytes\n" + text[-2000:]
    assert elapsed > 6, f"the reader was not slow enough to test anything ({elapsed:.1f} s)"
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert "WORKER TIMEOUT" not in text, text[-2000:]
    assert text.count("Booting worker") == 1, text[-2000:]


# --- a record of many claims is read a page at a time -----------------------------------


@pytest.fixture
def many_claims(settings):
    from tests.factories import patent_published

    settings.PATENT_CLAIMS_PER_PAGE = 10
    claims = [{"number": 1, "text": "A widget comprising a motor and a rotating brush."}]
    claims += [
        {"number": n, "text": f"The widget of claim {n - 1}, wherein part {n} is nylon."}
        for n in range(2, 26)
    ]
    return patent_published(claims=claims)


@pytest.mark.django_db
def test_an_inventions_page_shows_its_claims_a_page_at_a_time(client, many_claims):
    first = client.get(f"/p/{many_claims.public_id}/").content.decode()
    assert 'id="claim-10"' in first and 'id="claim-11"' not in first
    assert "page 1 of 3" in first and 'href="?claims_page=2#claims"' in first
    last = client.get(f"/p/{many_claims.public_id}/", {"claims_page": 3}).content.decode()
    assert 'id="claim-21"' in last and 'id="claim-1"' not in last
    # Claim 21 depends on claim 20, which is on page 2: the link goes there.
    assert 'href="?claims_page=2#claim-20"' in last
    # Nonsense and pages past the end are not errors.
    for page in ("abc", "99", "-1", "9" * 30):
        response = client.get(f"/p/{many_claims.public_id}/", {"claims_page": page})
        assert response.status_code == 200


@pytest.mark.django_db
def test_the_api_pages_claims_and_the_download_stays_whole(client, many_claims):
    url = f"/api/patents/{many_claims.public_id}"
    data = client.get(url).json()
    assert [c["number"] for c in data["claims"]] == list(range(1, 11))
    assert (data["claims_total"], data["claims_page"], data["claims_pages"]) == (25, 1, 3)
    assert data["claims_next"].endswith(f"{url}?claims_page=2")
    last = client.get(url, {"claims_page": 3}).json()
    assert [c["number"] for c in last["claims"]] == list(range(21, 26))
    assert last["claims_next"] is None
    assert client.get(url, {"claims_page": 4}).status_code == 404
    assert client.get(url, {"claims_page": "x"}).status_code == 400
    whole = client.get(f"/p/{many_claims.public_id}.json").json()
    assert len(whole["claims"]) == 25
