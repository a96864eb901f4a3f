"""Health of the parts the site depends on, each checked with a short timeout."""

import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection


def database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}


def broker_check() -> dict:
    url = settings.CELERY_BROKER_URL
    timeout = settings.HEALTHZ_TIMEOUT
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            client.ping()
            return {"ok": True, "kind": "redis"}
        if url.startswith("sqla+sqlite:///"):
            path = Path(url.removeprefix("sqla+sqlite:///"))
            conn = sqlite3.connect(str(path), timeout=timeout)
            try:
                conn.execute("SELECT 1")
            finally:
                conn.close()
            return {"ok": True, "kind": "embedded (SQLite)"}
        return {"ok": None, "kind": urlparse(url).scheme, "detail": "not checked"}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}


def _workers_by_heartbeat() -> list[str]:
    from generation.signals import HEARTBEAT_SECONDS, heartbeat_dir

    folder = heartbeat_dir()
    if not folder.exists():
        return []
    fresh = time.time() - 3 * HEARTBEAT_SECONDS
    return sorted(p.name for p in folder.iterdir() if p.stat().st_mtime >= fresh)


def worker_check(*, broker_ok: bool) -> dict:
    if not broker_ok:
        return {"ok": False, "detail": "broker down"}
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://")):
        # The embedded broker has no broadcast: workers vouch for themselves on disk.
        names = _workers_by_heartbeat()
        return {"ok": bool(names), "workers": names, "detail": "by heartbeat file"}
    from allthepatents.celery import app

    try:
        replies = app.control.ping(timeout=settings.HEALTHZ_TIMEOUT) or []
    except Exception as exc:
        return {"ok": False, "detail": f"ping failed: {exc}"[:300]}
    names = [name for reply in replies for name in reply]
    return {"ok": bool(names), "workers": names}


def index_check() -> dict:
    from search.selectors import index_health

    try:
        return index_health()
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}


_probe_lock = threading.Lock()
_probe_cache: dict = {"at": 0.0, "value": None}


def _slow_probes() -> dict:
    """Broker, worker ping and index: up to a few seconds each, so computed at most once
    per HEALTHZ_CACHE_SECONDS per process (concurrent pollers wait for one probe)."""
    with _probe_lock:
        age = time.monotonic() - _probe_cache["at"]
        if _probe_cache["value"] is not None and age < settings.HEALTHZ_CACHE_SECONDS:
            return {**_probe_cache["value"], "age_seconds": round(age, 1)}
        broker = broker_check()
        value = {
            "broker": broker,
            "worker": worker_check(broker_ok=bool(broker.get("ok"))),
            "index": index_check(),
        }
        _probe_cache.update(at=time.monotonic(), value=value)
        return {**value, "age_seconds": 0.0}


def probe_cache_clear() -> None:
    with _probe_lock:
        _probe_cache.update(at=0.0, value=None)


def health_liveness() -> tuple[dict, bool]:
    """The public answer: is the site up (the database answers)? No detail, no error text."""
    ok = bool(database_check()["ok"])
    return {"ok": ok}, ok


def health_report() -> tuple[dict, bool]:
    """The detailed report, for staff or the HEALTHZ_TOKEN holder."""
    db = database_check()
    report = {"database": db, **_slow_probes()}
    report["ok"] = bool(db["ok"])
    return report, bool(db["ok"])
