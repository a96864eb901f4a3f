import os
import shutil

import pytest

# The daily dump (EXPORT_DAILY) would have every test that publishes enqueue one, and every
# worker a test starts write it: on only where a test asks (workers inherit this).
os.environ["EXPORT_DAILY"] = "0"

from tests.helpers import ROOT, WorkerProcess, db_env, redis_flush, redis_url_or_skip, shared_path


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
def _fresh_health_probes():
    from allthepatents.health import probe_cache_clear
    from allthepatents.kept import kept_clear

    probe_cache_clear()
    kept_clear()  # the public pages' counts and heads, kept per process


@pytest.fixture(autouse=True)
def _no_daily_dump(settings):
    settings.EXPORT_DAILY = False


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # The manifest storage needs collectstatic; page tests don't need hashed names.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def _cached_model(name: str, build):
    """Models are built once per data directory and reused by later runs."""
    from django.conf import settings as dj_settings

    out = dj_settings.DATA_DIR / "test-models" / name
    if not (out / "config.json").exists() or not any(out.glob("*.safetensors")):
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def kl3m_source():
    return shared_path("models", "kl3m-002-170m-patent")


@pytest.fixture(scope="session")
def tiny_neox(kl3m_source):
    from tests.tiny_models import tiny_neox_build

    return _cached_model("tiny-neox-v1", lambda out: tiny_neox_build(kl3m_source, out))


@pytest.fixture(scope="session")
def tiny_llama(kl3m_source):
    from tests.tiny_models import tiny_llama_build

    return _cached_model(
        "tiny-llama-v1", lambda out: tiny_llama_build(out, tokenizer_source=kl3m_source)
    )


@pytest.fixture(scope="session")
def hashed_neox(kl3m_source):
    from tests.tiny_models import tiny_neox_hashed

    return _cached_model("hashed-neox-v1", lambda out: tiny_neox_hashed(kl3m_source, out))


@pytest.fixture(scope="session")
def memo_model(kl3m_source):
    from tests.tiny_models import tiny_neox_memorised

    return _cached_model("memo-neox-v1", lambda out: tiny_neox_memorised(kl3m_source, out))


@pytest.fixture(scope="session")
def doomed_model(kl3m_source):
    from tests.tiny_models import DOOMED_PATENT, tiny_neox_memorised

    return _cached_model(
        "doomed-neox-v1",
        lambda out: tiny_neox_memorised(kl3m_source, out, texts=[DOOMED_PATENT]),
    )


@pytest.fixture
def generators(db):
    """The seed registry rows (transactional tests flush the migration's data)."""
    from generation.models import Generator
    from generation.registry import generators_seed

    generators_seed(Generator)
    return {g.name: g for g in Generator.objects.all()}


@pytest.fixture(scope="module")
def memo_embeddings():
    """Each distinct text goes through the real MiniLM once per module; the rebuilds these
    tests provoke reuse those vectors instead of recomputing them."""
    import search.embeddings as embeddings

    real = embeddings.embed
    memo = {}

    def embed(texts, **kwargs):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            for text, vector in zip(missing, real(missing, **kwargs), strict=True):
                memo[text] = vector
        if not texts:
            return real(texts, **kwargs)
        return np.stack([memo[t] for t in texts])

    embeddings.embed = embed
    yield
    embeddings.embed = real


# The fast tier may use only these fixtures (the two autouse ones here only touch settings).
UNIT_FIXTURES = {
    "request",
    "tmp_path",
    "tmp_path_factory",
    "capsys",
    "monkeypatch",
    "settings",
    "fixture_jsonl",
    "memo_embeddings",  # lazy: wraps embed, loads nothing until a test embeds
    "_fresh_health_probes",
    "_plain_static_storage",
}


def pytest_collection_modifyitems(config, items):
    """A test marked ``unit`` that asks for a database or a service fixture is a mistake in
    the tier, not a slow unit test: refuse it at collection."""
    for item in items:
        if not item.get_closest_marker("unit"):
            continue
        params = set(getattr(getattr(item, "callspec", None), "params", {}) or {})
        extra = {
            name
            for name in set(item.fixturenames) - UNIT_FIXTURES - params
            # pytest-django's and Faker's own autouse plumbing, not a database or service
            if not name.startswith("_")
            and name not in ("django_db_blocker", "django_test_environment")
        }
        if item.get_closest_marker("django_db") or extra:
            raise pytest.UsageError(
                f"{item.nodeid} is marked unit but needs {sorted(extra) or 'the database'}"
            )
