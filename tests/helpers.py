"""Helpers for tests that start real processes (Celery workers) against the test database."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip with a visible reason on a developer's machine; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    require(path.exists(), f"{path} is absent (../shared is not checked out here)")
    return path


def python_run(code: str, *, data_dir, timeout: float = 60, **env):
    """``python -c code`` in a fresh process of the project, on its own DATA_DIR, with
    ``env`` added to this one's environment: what a start with those settings does."""
    full = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "allthepatents.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def redis_url_or_skip() -> str:
    url = settings.REDIS_URL
    require(bool(url), "REDIS_URL is not set: no Redis server to test against")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        require(False, f"Redis at {url} does not answer: {exc}")
    return url


def redis_flush(url: str) -> None:
    """Drops messages left by earlier runs: their job ids may match this run's new rows."""
    import redis

    redis.Redis.from_url(url).flushdb()


def db_env() -> dict:
    """Environment that points a child process at the test database this test uses."""
    conf = connection.settings_dict
    env = {}
    if conf["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(conf["NAME"])
        env["DATABASE_URL"] = ""
    else:
        user = conf.get("USER") or ""
        password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        env["DATABASE_URL"] = (
            f"postgresql://{auth}{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}"
            f"/{conf['NAME']}"
        )
    return env


class WorkerProcess:
    """A real ``celery worker`` in its own process group, logging to a file."""

    def __init__(
        self,
        *,
        env: dict,
        log_path: Path,
        queues: str = "default,generation,indexing",
        pool: str = "solo",
    ):
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_path
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "allthepatents",
                "worker",
                "-P",
                pool,
                "-c",
                "1",
                "-Q",
                queues,
                "-n",
                self.name,
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_text()[-4000:]}")
            if " ready." in self.log_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.2, message=""):
    """Polls ``predicate``; on timeout fails with ``message``, which may be a callable so
    that a worker's log is read when the wait ends, not when it starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    text = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout}s: {text}")


class QuietHandler:
    """Mixin for test HTTP handlers: reply with a body, log nothing."""

    def reply(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def http_serve(handler, *, path: str = "/"):
    """A threaded HTTP server on a free local port: (server, its URL + path). Stop it with
    ``server.shutdown(); server.server_close()``."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}{path}"


def api_pages(client, url: str, key: str) -> tuple[list, int]:
    """Every item under ``key`` a keyset-paged API endpoint gives from ``url`` on,
    following each page's ``next``; and how many pages that took."""
    items, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        page = response.json()
        items += page[key]
        url, pages = page["next"], pages + 1
    return items, pages
