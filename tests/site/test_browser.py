"""The real browser against the live stack, started the way `make run` starts it (gunicorn,
a Celery worker, Redis) on a scratch data directory. Screenshots go to test-artifacts/."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import ROOT, redis_flush, redis_url_or_skip, require

ARTIFACTS = ROOT / "test-artifacts"
ADMIN_PASSWORD = "e2e-Admin-pw-7731"  # noqa: S105 (a scratch site's test account)
HEALTH_TOKEN = "e2e-health-token"  # noqa: S105


def _health_request(base):
    return urllib.request.Request(
        f"{base}/healthz?detail=1", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_site(tmp_path_factory, memo_model_path):
    url = redis_url_or_skip()
    require(shutil.which("chromium") is not None, "Debian's chromium is not installed")
    redis_flush(url)
    data = tmp_path_factory.mktemp("live")
    port = _free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "REDIS_URL": url,
        "PORT": str(port),
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "DATABASE_URL": "",
        "SQLITE_PATH": str(data / "db.sqlite3"),
        "GENERATION_QUANTIZE": "none",
        "HF_HUB_OFFLINE": "1",
        "WEB_WORKERS": "2",
        "SEARCH_RATE_LIMIT": "0",
        "PYTHONUNBUFFERED": "1",
        "HEALTHZ_TOKEN": HEALTH_TOKEN,
        "HEALTHZ_CACHE_SECONDS": "0",
        "SEARCH_ALERT_CACHE_SECONDS": "0",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
    )
    subprocess.run(
        [sys.executable, "-m", "tests.e2e_seed"], cwd=ROOT, env=env, check=True, timeout=600
    )
    log = open(data / "run.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(_health_request(base), timeout=2) as r:  # noqa: S310
                if r.status == 200 and b'"worker": {"ok": true' in r.read():
                    break
        except Exception:  # noqa: S110 (still starting)
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            raise RuntimeError((data / "run.log").read_text()[-4000:])
        time.sleep(0.5)
    ARTIFACTS.mkdir(exist_ok=True)
    yield {"base": base, "env": env, "memo": memo_model_path, "log": data / "run.log"}
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def memo_model_path(memo_model):
    return memo_model


@pytest.fixture(scope="module")
def page(live_site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1200, "height": 900}
        )
        yield context.new_page()
        browser.close()


def test_visitor_searches_reads_follows_a_claim_and_downloads(live_site, page):
    base = live_site["base"]
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/")
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    page.fill("textarea#q", "telephone keyboard display dialing")
    page.click("button[type=submit]")
    page.wait_for_selector("ol.results li")
    page.screenshot(path=str(ARTIFACTS / "search-results.png"), full_page=True)
    page.click("ol.results li h2 a")
    page.wait_for_selector("ol.claims")
    link = page.locator("ol.claims li.dependent a[href^='#claim-']").first
    target = link.get_attribute("href")
    link.click()
    assert page.url.endswith(target)
    assert page.locator(f"li{target}").is_visible()
    page.screenshot(path=str(ARTIFACTS / "invention.png"), full_page=True)
    with page.expect_download() as download:
        page.click("text=JSON")
    path = download.value.path()
    import json

    data = json.loads(open(path).read())
    assert data["content_hash"] and data["claims"]
    page.goto(base + "/patents/")
    page.click("a[rel=next]")
    assert "page=2" in page.url and page.locator("ul.patent-list li").count() == 5
    page.goto(base + "/stats/")
    page.screenshot(path=str(ARTIFACTS / "stats.png"), full_page=True)
    assert not errors


def test_a_long_claim_pasted_on_the_home_page_is_searched(live_site, page):
    """The home page's form sent its text in the URL: a claim of a few thousand characters
    met gunicorn's "Request Line is too large" page instead of results. It posts now, as
    the search page does (a long query is stored and named by a short id)."""
    claim = (
        "1. A telephone comprising a keyboard, a display and a dialing circuit, "
        + ("wherein the keyboard is coupled to the display and the dialing circuit, ") * 80
    )
    assert len(claim) > 5000
    page.goto(live_site["base"] + "/")
    page.fill("textarea#q", claim)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "Request Line" not in page.content()
    page.wait_for_selector("ol.results li")
    from urllib.parse import urlsplit

    from search.requests import MAX_QUERY_STRING

    assert len(urlsplit(page.url).query) <= MAX_QUERY_STRING and "qid=" in page.url
    assert page.input_value("textarea#q") == claim.strip()


def test_admin_starts_a_job_watches_it_finish_and_finds_the_invention(live_site, page):
    base = live_site["base"]
    page.goto(base + "/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.goto(base + "/admin/generation/generationjob/add/")
    # The form preselects the default generator.
    assert page.locator("#id_generator option:checked").inner_text() == "kl3m-002-170m-patent"
    page.fill("#id_model_override", str(live_site["memo"]))
    page.fill("#id_count", "3")
    page.fill("#id_temperature", "0.7")
    page.fill("#id_max_new_tokens", "200")
    page.fill("#id_seed", "11")
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    # At 1280 px every column of the job list stays clear of the filter panel.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "admin-jobs-1280.png"))
    last = page.locator("#result_list thead th").last.bounding_box()
    panel = page.locator("#changelist-filter").bounding_box()
    assert last["x"] + last["width"] <= panel["x"] + 1, (last, panel)
    page.set_viewport_size({"width": 1200, "height": 900})
    page.click("#result_list tbody tr th a")
    page.wait_for_selector("progress.job-progress")
    # The bar is updated by the page's own script (polling); no eval here: the CSP forbids it.
    deadline = time.monotonic() + 120
    while "3 / 3 (done)" not in page.inner_text(".job-progress-text").lower():
        assert time.monotonic() < deadline, page.inner_text(".job-progress-text")
        time.sleep(0.5)
    # When the job ends the page reloads itself: every field is current, not only the bar.
    page.wait_for_load_state()
    deadline = time.monotonic() + 30
    while "Done" not in page.inner_text(".field-status") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "Done" in page.inner_text(".field-status")
    assert page.inner_text(".field-done_count .readonly").strip() == "3"
    assert page.locator("progress.job-progress").get_attribute("value") == "3"
    page.screenshot(path=str(ARTIFACTS / "admin-job.png"), full_page=True)
    page.goto(base + "/search/?q=magnetic+stirrer+mug+motor&search=1")
    deadline = time.monotonic() + 60
    while "Self-stirring mug" not in page.content() and time.monotonic() < deadline:
        time.sleep(1)
        page.reload()
    assert "Self-stirring mug" in page.content() or "Folding ladder hook" in page.content()


def test_a_reviewer_marks_an_invention_and_sees_the_figure_change(live_site, page):
    """A member of the Reviewers group signs in, marks a generated invention as relevant
    prior art from its page, and /stats/ counts it."""
    base = live_site["base"]
    code = (
        "import django; django.setup()\n"
        "from django.contrib.auth.models import Group, User\n"
        "u = User.objects.create_user('reviewer1', password='a long pass phrase 42')\n"
        "u.groups.add(Group.objects.get(name='Reviewers'))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=live_site["env"], check=True, timeout=120
    )
    context = page.context.browser.new_context(viewport={"width": 1200, "height": 900})
    reviewer = context.new_page()
    try:
        reviewer.goto(base + "/stats/")
        assert "No verdicts yet" in reviewer.content()
        reviewer.goto(base + "/accounts/login/?next=/patents/")
        reviewer.fill("#id_username", "reviewer1")
        reviewer.fill("#id_password", "a long pass phrase 42")
        reviewer.click("button[type=submit]")
        reviewer.wait_for_url("**/patents/")
        reviewer.locator("main a[href^='/p/']").first.click()
        reviewer.wait_for_selector("form.verdict-form")
        reviewer.check("input[name=verdict][value=relevant]")
        reviewer.fill("input[name=note]", "anticipates claim 1 of a later filing")
        reviewer.click("form.verdict-form button[type=submit]")
        reviewer.wait_for_selector(".messages li")
        assert "is recorded" in reviewer.inner_text(".messages")
        reviewer.goto(base + "/stats/")
        rows = reviewer.locator("tr.verdict-stats")
        assert rows.count() == 1
        assert rows.first.locator("td.share-relevant").inner_text().startswith("1 · 100%")
        reviewer.screenshot(path=str(ARTIFACTS / "stats-verdicts.png"), full_page=True)
    finally:
        context.close()


def test_staff_read_backtests_on_stats_and_aim_from_the_coverage_view(live_site, page):
    """A backtest's row on /stats/ and the searches per CPC area on /coverage/, as an admin
    sees them (the screenshots the docs show). The backtest is recorded through the service
    with the figures of the run in bench/README.md (a real run takes minutes)."""
    base = live_site["base"]
    code = (
        "import django; django.setup()\n"
        "from generation.services import backtest_record\n"
        "backtest_record(model='var/models/backtest-2018', report={'cutoff': '2018-01-01',"
        " 'generated': 200, 'passed_gate': 118, 'later_patents': 759, 'hits': 19,"
        " 'anticipated': 85, 'threshold': 0.349, 'generation_cpu_seconds': 298.0,"
        " 'hits_per_1000': 95.0, 'hits_per_1000_interval': [62.0, 144.0],"
        " 'share_anticipated': 0.112, 'share_anticipated_interval': [0.092, 0.136],"
        " 'calibration': {'random_pairs': 249500, 'own_above_threshold': 0.996}})\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=live_site["env"], check=True, timeout=120
    )
    context = page.context.browser.new_context(viewport={"width": 1200, "height": 900})
    staff = context.new_page()
    try:
        staff.goto(base + "/admin/login/?next=/coverage/")
        staff.fill("#id_username", "admin")
        staff.fill("#id_password", ADMIN_PASSWORD)
        staff.click("input[type=submit], button[type=submit]")
        staff.wait_for_url("**/coverage/")
        before = staff.locator("tr.coverage-row", has_text="H04M").count()
        for _ in range(3):
            staff.goto(base + "/search/?q=telephone+keyboard+display&cpc=H04M")
            staff.wait_for_selector("main")
        staff.goto(base + "/coverage/")
        row = staff.locator("tr.coverage-row", has_text="H04M")
        assert before == 0 and row.count() == 1
        assert row.locator("td").nth(1).inner_text() == "3"
        staff.screenshot(path=str(ARTIFACTS / "coverage.png"), full_page=True)
        staff.goto(base + "/stats/")
        backtest = staff.locator("tr.backtest-row")
        assert backtest.count() == 1
        assert backtest.locator("td.backtest-hits").inner_text().startswith("95.0")
        staff.screenshot(path=str(ARTIFACTS / "stats.png"), full_page=True)
    finally:
        context.close()


def _long_claim(chars: int = 12_000) -> str:
    """A real-looking claim of ``chars`` characters: the fixture's first claims, run on."""
    import json

    lines = (ROOT / "tests" / "fixtures" / "patents-40.jsonl").read_text().splitlines()
    parts = ["1. A telephone comprising a keyboard, a display and dialing circuitry"]
    for line in lines:
        for claim in json.loads(line)["claims"][:3]:
            parts.append(claim.split(". ", 1)[-1].rstrip("."))
    text = "; wherein ".join(parts)
    while len(text) < chars:
        text += "; wherein " + text
    return text[:chars].rsplit(" ", 1)[0] + "."


def test_a_12000_character_claim_typed_into_the_form_returns_results(live_site, page):
    """Through the real gunicorn: a GET this long would exceed its 4,094-byte request
    line; the form posts, and the result page stays linkable by a stored query id."""
    base = live_site["base"]
    claim = _long_claim()
    assert len(claim) >= 11_900
    page.goto(base + "/search/")
    page.fill("textarea#q", claim)
    page.select_option("select[name=origin]", "all")
    page.click("button[type=submit]")
    page.wait_for_selector("ol.results li")
    assert "qid=" in page.url and "origin=all" in page.url
    assert page.locator("ol.results li").count() >= 1
    assert len(page.input_value("textarea#q")) == len(claim)
    page.screenshot(path=str(ARTIFACTS / "search-long-claim.png"), full_page=True)
    # The link works on its own (a fresh request, no form state).
    with urllib.request.urlopen(page.url, timeout=60) as r:  # noqa: S310 (local test site)
        assert r.status == 200 and b'class="results"' in r.read()
    # A short query stays a plain linkable GET.
    page.goto(base + "/search/")
    page.fill("textarea#q", "telephone keyboard")
    page.click("button[type=submit]")
    page.wait_for_selector("ol.results li")
    assert "q=telephone+keyboard" in page.url


def test_the_api_takes_a_12000_character_claim_as_json_by_post(live_site):
    import json

    base = live_site["base"]
    body = json.dumps({"q": _long_claim(), "k": 5, "origin": "all"}).encode()
    request = urllib.request.Request(
        f"{base}/api/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:  # noqa: S310 (local test site)
        data = json.loads(r.read())
    assert r.status == 200 and len(data["results"]) == 5
    assert data["query"].startswith("1. A telephone")


def _fixture_record(n: int) -> dict:
    import json

    lines = (ROOT / "tests" / "fixtures" / "patents-40.jsonl").read_text().splitlines()
    return json.loads(lines[n])


def test_examiner_workbench_elements_exports_report_and_alert_feed(live_site, page):
    """#16 end to end: paste a claim, expand a result's element table, export CSV, open
    and print the report, subscribe to the search's feed and see a newly published
    matching invention arrive in it."""
    import csv
    import io
    import json

    base = live_site["base"]
    # A record the seed did not publish (it publishes the first 25): its claim is the query.
    record = next(
        r
        for r in (_fixture_record(n) for n in range(25, 40))
        if r["title"] and r["abstract"] and r["claims"] and ";" in r["claims"][0]
    )
    claim = record["claims"][0]
    page.goto(base + "/search/")
    page.fill("textarea#q", claim)
    page.select_option("select[name=origin]", "all")
    page.click("button[type=submit]")
    page.wait_for_selector("ol.results li")
    chart = page.locator("details.element-chart").first
    chart.locator("summary").click()
    table = chart.locator("table")
    assert table.is_visible() and table.locator("tbody tr").count() >= 2
    page.screenshot(path=str(ARTIFACTS / "workbench-element-table.png"), full_page=True)

    with page.expect_download() as download:
        page.click("p.exports a:text('CSV')")
    rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert rows and rows[0]["rank"] == "1" and rows[0]["content_hash"]

    results_url = page.url
    page.click("p.exports a:text('Printable report')")
    page.wait_for_selector("article.search-report")
    assert page.locator(".report-elements li").count() >= 2
    assert page.locator("section.report-result").count() == len(rows)
    page.emulate_media(media="print")
    assert not page.locator("header.site-header").is_visible()
    page.screenshot(path=str(ARTIFACTS / "search-report-print.png"), full_page=True)
    page.pdf(path=str(ARTIFACTS / "search-report.pdf"))
    page.emulate_media(media="screen")

    page.goto(results_url)
    feed_url = page.locator("p.alerts a").get_attribute("href")
    with urllib.request.urlopen(base + feed_url, timeout=30) as r:  # noqa: S310 (local site)
        before = r.read().decode()
    assert "<feed" in before and record["title"] not in before
    publish = (
        "import json, os, sys, django; django.setup(); "
        "from patents.records import claims_normalise; from patents.services import patent_publish; "
        "r = json.loads(sys.argv[1]); "
        "patent_publish(title=r['title'], abstract=r['abstract'], "
        "claims=claims_normalise(r['claims']), provenance={'generator_model': 'e2e/alert'})"
    )
    subprocess.run(
        [sys.executable, "-c", publish, json.dumps(record)],
        cwd=ROOT,
        env={**live_site["env"], "DJANGO_SETTINGS_MODULE": "allthepatents.settings"},
        check=True,
        timeout=120,
    )
    # The worker indexes it (the publish hook); the feed then carries it.
    deadline = time.monotonic() + 90
    while True:
        with urllib.request.urlopen(base + feed_url, timeout=30) as r:  # noqa: S310
            after = r.read().decode()
        if record["title"] in after or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert record["title"] in after, live_site["log"].read_text()[-3000:]


def test_web_workers_load_the_embedder_and_index_before_taking_requests(live_site):
    """No visitor pays for the cold start: each gunicorn worker loads the embedder and the
    index as it starts (beside its request loop, so pages answer meanwhile)."""
    log = live_site["log"].read_text()
    warmed = [line for line in log.splitlines() if "search warm-up in worker" in line]
    assert len(warmed) == int(live_site["env"]["WEB_WORKERS"]), log[-3000:]
    assert all("embedder and index loaded" in line for line in warmed), warmed


def _get_json(url):
    import json

    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (the local test site)
        return r.status, json.loads(r.read())


def _index_file(index_dir: str) -> str:
    import json

    with open(os.path.join(index_dir, "manifest.json")) as fh:
        return os.path.join(index_dir, json.load(fh)["file"])


def _rebuild(env: dict) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "search_index", "rebuild", "--no-progress"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )


def test_index_truncated_then_deleted_while_the_site_runs(live_site):

    base, env = live_site["base"], live_site["env"]
    index_dir = os.path.join(env["DATA_DIR"], "index")
    query = f"{base}/api/search?q=telephone+keyboard+display"
    assert _get_json(query)[1]["engine"] == "hybrid"
    path = _index_file(index_dir)
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 3])
    status, body = _get_json(query)
    assert status == 200 and body["engine"] == "keyword" and body["results"]
    health = _get_json(_health_request(base))[1]
    assert health["index"]["ok"] is False
    _rebuild(env)
    assert _get_json(query)[1]["engine"] == "hybrid"
    os.remove(_index_file(index_dir))
    status, body = _get_json(query)
    assert status == 200 and body["engine"] == "keyword"
    _rebuild(env)
    assert _get_json(query)[1]["engine"] == "hybrid"


def test_sqlite_concurrent_writes_reach_no_user(live_site):
    """A worker publishes while an admin edits and visitors read: no 5xx, no 'locked'."""
    import http.cookiejar
    import re
    import threading
    import urllib.parse

    base, env = live_site["base"], live_site["env"]
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "generate",
            "--model",
            str(live_site["memo"]),
            "--count",
            "60",
            "--temperature",
            "1.0",
            "--max-new-tokens",
            "200",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = opener.open(f"{base}/admin/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
    opener.open(
        urllib.request.Request(
            f"{base}/admin/login/?next=/admin/",
            data=urllib.parse.urlencode(
                {"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": token}
            ).encode(),
            headers={"Referer": f"{base}/admin/login/"},
        )
    )
    failures = []
    stop = time.monotonic() + 20

    def visitor():
        while time.monotonic() < stop:
            for path in ("/", "/patents/", "/api/search?q=mug+motor", "/stats/"):
                try:
                    with urllib.request.urlopen(base + path, timeout=30) as r:  # noqa: S310
                        r.read()
                except Exception as exc:
                    failures.append(f"{path}: {exc}")

    def admin_editor():
        n = 0
        while time.monotonic() < stop:
            page = opener.open(f"{base}/admin/generation/generator/").read().decode()
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            ids = re.findall(r'name="form-(\d+)-id" value="(\d+)"', page)
            form = {
                "csrfmiddlewaretoken": token,
                "form-TOTAL_FORMS": str(len(ids)),
                "form-INITIAL_FORMS": str(len(ids)),
                "_save": "Save",
            }
            for i, pk in ids:
                form[f"form-{i}-id"] = pk
                form[f"form-{i}-enabled"] = "on"
            try:
                opener.open(
                    urllib.request.Request(
                        f"{base}/admin/generation/generator/",
                        data=urllib.parse.urlencode(form).encode(),
                        headers={"Referer": f"{base}/admin/generation/generator/"},
                    )
                ).read()
            except Exception as exc:
                failures.append(f"admin edit: {exc}")
            n += 1

    threads = [threading.Thread(target=visitor) for _ in range(3)]
    threads.append(threading.Thread(target=admin_editor))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    log = open(os.path.join(env["DATA_DIR"], "run.log")).read()
    assert "database is locked" not in log
