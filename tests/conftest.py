import pytest

from tests.helpers import ROOT, WorkerProcess, db_env, redis_flush, redis_url_or_skip


@pytest.fixture
def fixture_jsonl():
    return ROOT / "tests" / "fixtures" / "patents-40.jsonl"


@pytest.fixture
def redis_worker(tmp_path, settings):
    """A real Celery worker over real Redis, on the test database (needs committed data:
    use with ``@pytest.mark.django_db(transaction=True)``)."""
    url = redis_url_or_skip()
    redis_flush(url)
    env = {
        **db_env(),
        "REDIS_URL": url,
        "DATA_DIR": str(settings.DATA_DIR),
        "GENERATION_LEASE_SECONDS": "3",
        "GENERATION_QUANTIZE": "none",
    }
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def worker_factory(tmp_path, settings):
    """Starts workers on demand (for kill -9 and restart tests)."""
    url = redis_url_or_skip()
    redis_flush(url)
    started = []

    def start(**extra_env):
        env = {
            **db_env(),
            "REDIS_URL": url,
            "DATA_DIR": str(settings.DATA_DIR),
            "GENERATION_LEASE_SECONDS": "3",
            "GENERATION_QUANTIZE": "none",
            **extra_env,
        }
        worker = WorkerProcess(env=env, log_path=tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # The manifest storage needs collectstatic; page tests don't need hashed names.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
