"""All settings, read from environment variables with defaults that need no server.

Defaults: SQLite and every data file under ``DATA_DIR`` (``./var``), an embedded Celery
broker on SQLite. ``DATABASE_URL`` switches to PostgreSQL, ``REDIS_URL`` to Redis.
The README documents every variable.
"""

import datetime as dt
import os
from pathlib import Path

import dj_database_url

from allthepatents.env import (
    EnvError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
)
from allthepatents.files import data_dir_secure, secret_key_file

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "var")
# Everything under DATA_DIR is private to the account that runs the site, whatever the umask
# it was started with: the database holds password hashes and live sessions. Every process
# of the app (web, worker, manage.py) creates its files owner-only; data_dir_secure() also
# tightens what an earlier, looser run left behind.
os.umask(0o077)
DATA_DIR.mkdir(parents=True, exist_ok=True)
data_dir_secure(DATA_DIR)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    given = env_str("SECRET_KEY")
    if given:
        return given
    # Generated once and kept, so sessions survive restarts without anyone choosing a key.
    return secret_key_file(DATA_DIR / "secret_key")


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])


def _site_url_default() -> str:
    # What `make run` serves on (HOST, PORT), so citations and robots.txt point at it.
    host = env_str("HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (reading the bind address, not binding)
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env_int('PORT', 8000, minimum=1)}"


SITE_URL = env_str("SITE_URL", _site_url_default()).rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sitemaps",
    "patents",
    "generation",
    "search",
    "axes",
]

# Reviewers sign in at /accounts/login/ (admins use /admin/).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside the others: a CSRF refusal or a 500 under /api/ is answered as JSON too.
    "allthepatents.api.ApiJsonErrorsMiddleware",
    "allthepatents.deadline.RequestDeadlineMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After auth and messages: its 400 page is the site's, rendered like any other.
    "allthepatents.middleware.NulRefusalMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allthepatents.middleware.SecurityHeadersMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes): after ADMIN_LOGIN_FAILURE_LIMIT wrong passwords from one
# client address, logins from it are refused for ADMIN_LOGIN_COOLOFF_MINUTES, even with the
# right password. The address is the one the search rate limit uses (TRUSTED_PROXY_COUNT).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("ADMIN_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "allthepatents.client.client_ip_or_none"
AXES_VERBOSE = False

ROOT_URLCONF = "allthepatents.urls"
WSGI_APPLICATION = "allthepatents.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "generation.context.reviewer",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
SQLITE_PATH = env_path("SQLITE_PATH", DATA_DIR / "db.sqlite3")
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            "OPTIONS": {
                # WAL lets the web read while the worker writes; IMMEDIATE transactions and
                # a busy timeout make writers queue instead of failing with "locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # A file, not :memory:, so worker processes started by tests see the same data.
            "TEST": {"NAME": str(DATA_DIR / "test-db.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security (production switches by env) ---------------------------------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
# Reverse proxies in front of the site whose X-Forwarded-For entries are trusted (0: none,
# the client is REMOTE_ADDR). Used by the search rate limit and the login lockout.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
if env_bool("BEHIND_HTTPS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- Celery ------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # Unacked messages come back after this; jobs also recover through their lease.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    # Embedded broker: kombu's SQLAlchemy transport on a SQLite file, so that a machine
    # without Redis still runs web + worker.
    CELERY_BROKER_URL = env_str(
        "CELERY_BROKER_URL", f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite3'}"
    )
    CELERY_RESULT_BACKEND = env_str(
        "CELERY_RESULT_BACKEND", f"db+sqlite:///{DATA_DIR / 'celery-results.sqlite3'}"
    )
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# The cache holds rate-limit counters shared by all web processes.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    )
}

# --- Generation ----------------------------------------------------------------------------
HF_HOME = env_path("HF_HOME", DATA_DIR / "hf-cache")
# Read by huggingface_hub when it is first imported, which is always after settings.
os.environ.setdefault("HF_HOME", str(HF_HOME))
GENERATION_DEVICE = env_choice("GENERATION_DEVICE", "auto", ("auto", "cpu", "cuda"))
# auto: bf16 (weights and KV cache) where the CPU computes bf16 natively, else dynamic int8.
# At 1,024 tokens, batch 16, on an AMX Xeon: bf16 221 tok/s, int8 170, the card's recipe 47
# (bench/generation.py); gate pass rate unchanged (bench/int8_quality.py). none: fp32.
GENERATION_QUANTIZE = env_choice(
    "GENERATION_QUANTIZE",
    "auto",
    ("auto", "bf16", "bf16-kv16", "bf16-kv8", "int8", "int8-bf16", "int8-kv16", "int8-kv8", "none"),
)
# New kl3m jobs sample along the document's skeleton (generation/form.py).
GENERATION_DECODE_FORM = env_bool("GENERATION_DECODE_FORM", True)
# End a sample's decoding once the gate's verdict is certain (generation/early_stop.py).
GENERATION_EARLY_STOP = env_bool("GENERATION_EARLY_STOP", True)
# 128: a small model's step has a fixed cost (3-4 ms for the demo generator) beside 0.2 ms
# a row, so the more rows the cheaper a published invention: 0.36 against 0.31 of the
# batch-of-16 path's CPU-seconds, top-down, at 64 and 128 rows (bench/early_stop.py --batch
# 16,64,128). A large model runs the batch in forward batches that fit
# GENERATION_KV_BUDGET_MB, so for it the size sets only the lease.
GENERATION_BATCH_SIZE = env_int("GENERATION_BATCH_SIZE", 128, minimum=1)
# The KV cache one forward batch may hold (rows x layers x positions x width): kl3m-002-170m
# in fp32 takes 109 MB a row at 768 new tokens, 142 MB at 1,024 (16 rows, as before); the
# demo generator in bf16 3.4 MB.
GENERATION_KV_BUDGET_MB = env_int("GENERATION_KV_BUDGET_MB", 2400, minimum=1)
GENERATION_MAX_COUNT = env_int("GENERATION_MAX_COUNT", 10000, minimum=1)
GENERATION_LEASE_SECONDS = env_int("GENERATION_LEASE_SECONDS", 120, minimum=1)
# Messages sent per job: up to this many workers share one job, batch by batch.
GENERATION_JOB_FANOUT = env_int("GENERATION_JOB_FANOUT", 4, minimum=1)
# Work units one contributor may hold at once (#18).
CONTRIBUTOR_MAX_LEASES = env_int("CONTRIBUTOR_MAX_LEASES", 2, minimum=1)
# Public sign-up for contributor tokens (/contributors/signup/): off, admins make accounts.
# On, anyone may take a token; every sample is still proved before it counts, and sign-ups
# are limited per client address and hour.
CONTRIBUTOR_SIGNUP = env_bool("CONTRIBUTOR_SIGNUP", False)
CONTRIBUTOR_SIGNUP_PER_HOUR = env_int("CONTRIBUTOR_SIGNUP_PER_HOUR", 3, minimum=1)
# Submissions one contributor token may make per minute (/api/contribute/submit).
CONTRIBUTOR_SUBMITS_PER_MINUTE = env_int("CONTRIBUTOR_SUBMITS_PER_MINUTE", 6, minimum=1)
# Refused units in a row (a failed proof, a cut-short sample) that suspend a token.
CONTRIBUTOR_MAX_STRIKES = env_int("CONTRIBUTOR_MAX_STRIKES", 3, minimum=1)
# How long a submitted unit stays the contributor's while it waits for a worker's check:
# a check queued behind the site's own work must not find its unit re-issued.
CONTRIBUTOR_CHECK_HOLD_SECONDS = env_int("CONTRIBUTOR_CHECK_HOLD_SECONDS", 3600, minimum=1)
GENERATION_SOFT_TIME_LIMIT = env_int("GENERATION_SOFT_TIME_LIMIT", 6 * 3600, minimum=1)
GENERATION_HARD_TIME_LIMIT = env_int("GENERATION_HARD_TIME_LIMIT", 6 * 3600 + 300, minimum=1)
OPENAI_API_BASE = env_str("OPENAI_API_BASE", "")
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_MODEL = env_str("OPENAI_MODEL", "")
# Requests in flight to the OpenAI-compatible endpoint per batch (vLLM batches them).
GENERATION_HTTP_CONCURRENCY = env_int("GENERATION_HTTP_CONCURRENCY", 16, minimum=1)
TORCH_THREADS = env_int("TORCH_THREADS", 1, minimum=1)

# --- Search ----------------------------------------------------------------------------------
INDEX_DIR = env_path("INDEX_DIR", DATA_DIR / "index")
EMBEDDING_MODEL = env_str("EMBEDDING_MODEL", "patent-minilm")
# A long index build saves a partial index this often (vectors), so search starts early.
SEARCH_INDEX_CHECKPOINT = env_int("SEARCH_INDEX_CHECKPOINT", 10_000, minimum=1)
# Torch threads while indexing (0: every core; queries stay on TORCH_THREADS). One by
# default: two threads on two cores collapsed to about 3 vectors a second as soon as other
# work shared the machine.
SEARCH_INDEX_THREADS = env_int("SEARCH_INDEX_THREADS", 1, minimum=0)
# Searching processes map the index file read-only instead of reading it: one copy in the
# page cache for every gunicorn and Celery process of the machine.
SEARCH_INDEX_MMAP = env_bool("SEARCH_INDEX_MMAP", True)
# `search_index update|rebuild` embeds a large build in this many one-thread processes
# (0: one per core); the worker's indexing task stays in its own process.
SEARCH_INDEX_PROCESSES = env_int("SEARCH_INDEX_PROCESSES", 0, minimum=0)
# An IVF index takes new vectors into a small exact delta file, so that publishing writes
# what it adds instead of the whole index again (17 GB at a million patents); the delta is
# merged into the main file when it holds this many vectors (an exact scan of 50,000
# vectors costs a query about 5 ms).
SEARCH_INDEX_DELTA_MAX = env_int("SEARCH_INDEX_DELTA_MAX", 50_000, minimum=1)
# A sharded build (`search_index shards`): vectors a shard holds (a CPU worker embeds 20,000
# in a few minutes; the shard's vectors wait in the database, 30 MB, until merged), and the
# seconds a running shard may go without a heartbeat before another worker takes it over.
SEARCH_SHARD_SIZE = env_int("SEARCH_SHARD_SIZE", 20_000, minimum=100)
SEARCH_SHARD_LEASE = env_int("SEARCH_SHARD_LEASE", 900, minimum=30)
# Where embeddings are computed: auto (a CUDA GPU when the process sees one, else the CPU).
EMBEDDING_DEVICE = env_choice("EMBEDDING_DEVICE", "auto", ("auto", "cpu", "cuda"))
# A search's query: auto (bf16 where the CPU computes it natively), bf16 or fp32.
EMBEDDING_QUERY_PRECISION = env_choice(
    "EMBEDDING_QUERY_PRECISION", "auto", ("auto", "bf16", "fp32")
)
# Bulk indexing precision: auto (bf16 where the CPU has AVX512-BF16/AMX), fp32 or bf16.
EMBEDDING_BULK_PRECISION = env_choice(
    "EMBEDDING_BULK_PRECISION", "auto", ("auto", "bf16", "fp16", "fp32", "int8", "int8-all")
)
# Exact search reads every vector per query (memory-bound: 6.5 ms at 62k vectors on one
# core). HNSW was tried above that and missed real neighbours (claims are clustered: 0.88 to
# 0.94 of the exact top 100 on the site corpus, four points of recall@10; bench/hnsw_recall.py).
# IVF with 8-bit scalar quantisation and an exact re-rank of the best 200 kept recall@10 at
# 0.992 of exact over 5.6 million vectors, p95 19.5 ms on one core (bench/scale.py).
# Keyword search sends a query's rarest terms only: at most SEARCH_KEYWORD_TERMS of them,
# leaving out terms in more than SEARCH_KEYWORD_COMMON_SHARE of the documents (by shares
# estimated from a sample, once the corpus has 50,000 documents; search/keyword.py).
SEARCH_KEYWORD_TERMS = env_int("SEARCH_KEYWORD_TERMS", 12, minimum=1)
SEARCH_KEYWORD_COMMON_SHARE = env_float("SEARCH_KEYWORD_COMMON_SHARE", 0.01, minimum=0.0)
# ... and stops before their estimated matches together pass SEARCH_KEYWORD_MATCHES (0: no
# bound): both engines score every match, so this bounds a pasted claim's keyword time.
SEARCH_KEYWORD_MATCHES = env_int("SEARCH_KEYWORD_MATCHES", 5000, minimum=0)
# Which engine answers keyword queries: the database's own (SQLite FTS5, PostgreSQL full
# text), or Tantivy (a BM25 engine with files under INDEX_DIR/keyword, fed from the database
# by the indexing worker): PostgreSQL's full text did not fit 200 ms at a million patents.
SEARCH_KEYWORD_ENGINE = env_choice("SEARCH_KEYWORD_ENGINE", "database", ("database", "tantivy"))
# Days a search's CPC-area count is kept (search.models.SearchTally; the coverage view).
SEARCH_TALLY_DAYS = env_int("SEARCH_TALLY_DAYS", 90, minimum=1)
SEARCH_IVF_THRESHOLD = env_int("SEARCH_IVF_THRESHOLD", 300_000, minimum=1)
SEARCH_IVF_NPROBE = env_int("SEARCH_IVF_NPROBE", 192, minimum=1)
SEARCH_IVF_RERANK = env_int("SEARCH_IVF_RERANK", 1600, minimum=1)
for _gone, _instead in (
    ("SEARCH_HNSW_THRESHOLD", "SEARCH_IVF_THRESHOLD"),
    ("SEARCH_HNSW_EF_SEARCH", "SEARCH_IVF_NPROBE"),
):
    if _gone in os.environ:
        raise EnvError(f"{_gone} is no longer read (the approximate index is IVF): set {_instead}")
# Hybrid ranking: alpha * dense + (1 - alpha) * keyword, each min-max normalised per query.
# A claim vector's score counts SEARCH_CLAIM_MARGIN less than a document vector's: claims
# read like claims, so a pasted claim scores high against any claim. Both tuned together on
# the dev split with distractors that keep their claims, for the stock and the adapted
# embedder (`search_eval --split dev --distractor-claims --variants`): 0.8 / 0.15 against
# the old 0.7 / 0.05 raised recall@10 from 0.885 to 0.902 (adapted) and 0.742 to 0.795
# (stock). Larger margins measured a little better still, but that protocol cannot credit a
# claim match (a query's own patent is indexed without its claims), so the margin stops here.
SEARCH_HYBRID_ALPHA = env_float("SEARCH_HYBRID_ALPHA", 0.8, minimum=0.0, maximum=1.0)
SEARCH_CLAIM_MARGIN = env_float("SEARCH_CLAIM_MARGIN", 0.15, minimum=0.0, maximum=2.0)
# Queries longer than this many words are embedded in pieces cut at claim elements and
# averaged (0: the whole text, truncated by the encoder at 256 word pieces).
SEARCH_QUERY_CHUNK_WORDS = env_int("SEARCH_QUERY_CHUNK_WORDS", 0, minimum=0)
# A filter that keeps at most this many vectors is ranked exactly over just those vectors;
# a broader one searches the whole index deep enough to fill the page (see dense_search).
SEARCH_EXACT_SUBSET_MAX = env_int("SEARCH_EXACT_SUBSET_MAX", 50_000, minimum=0)
# Claim-element mapping: a passage meets an element at this cosine or above.
SEARCH_ELEMENT_THRESHOLD = env_float("SEARCH_ELEMENT_THRESHOLD", 0.5)
# Search alerts (/search/feed.atom): how similar a new invention must be, how long a feed is
# cached (a poll inside that is a cache read).
SEARCH_ALERT_MIN_SIMILARITY = env_float("SEARCH_ALERT_MIN_SIMILARITY", 0.5)
SEARCH_ALERT_CACHE_SECONDS = env_int("SEARCH_ALERT_CACHE_SECONDS", 600, minimum=0)
SEARCH_MAX_QUERY_CHARS = env_int("SEARCH_MAX_QUERY_CHARS", 20_000, minimum=100)
SEARCH_MAX_K = 100
SEARCH_RATE_LIMIT = env_int("SEARCH_RATE_LIMIT", 120, minimum=0)  # requests/minute/client
SEARCH_RATE_WINDOW = env_int("SEARCH_RATE_WINDOW", 60, minimum=1)
# /api/ledger: entries a client may ask for in a window (0: no limit). A page of 1,000 with
# their inventions costs a web process about 0.2 s, so the default keeps one client to a
# fifth of one process; a mirror starts from a dump and asks for the day's entries.
LEDGER_API_RATE_LIMIT = env_int("LEDGER_API_RATE_LIMIT", 60_000, minimum=0)
LEDGER_API_RATE_WINDOW = env_int("LEDGER_API_RATE_WINDOW", 60, minimum=1)
# Queries too long for a URL are stored under a short id (/search/?qid=...): at most this
# many stored per client and hour, this many in all (the oldest go first), and none kept
# longer than this many days after its last use.
SEARCH_STORED_QUERIES_PER_HOUR = env_int("SEARCH_STORED_QUERIES_PER_HOUR", 60, minimum=1)
SEARCH_STORED_QUERIES_MAX = env_int("SEARCH_STORED_QUERIES_MAX", 100_000, minimum=1)
SEARCH_STORED_QUERY_DAYS = env_int("SEARCH_STORED_QUERY_DAYS", 180, minimum=1)
EXPORT_DIR = env_path("EXPORT_DIR", DATA_DIR / "dumps")
# A worker writes a dump a day (at the day's first publication or withdrawal) and keeps the
# newest EXPORT_KEEP (0: all).
EXPORT_DAILY = env_bool("EXPORT_DAILY", True)
EXPORT_KEEP = env_int("EXPORT_KEEP", 7, minimum=0)
# Behind nginx: the internal location that serves EXPORT_DIR (``/_dumps/``); /downloads/
# then answers with X-Accel-Redirect and nginx sends the file (docs/operating.md).
DOWNLOADS_ACCEL_REDIRECT = env_str("DOWNLOADS_ACCEL_REDIRECT", "")
# Without it, large files (16 MB and more) sent at once from this machine's web processes,
# each holding a web worker while it lasts (0: no limit). One of `make run`'s two is left
# for the site.
DOWNLOADS_MAX_STREAMS = env_int("DOWNLOADS_MAX_STREAMS", 1, minimum=0)
if DOWNLOADS_ACCEL_REDIRECT and not (
    DOWNLOADS_ACCEL_REDIRECT.startswith("/") and DOWNLOADS_ACCEL_REDIRECT.endswith("/")
):
    raise EnvError(
        f"DOWNLOADS_ACCEL_REDIRECT={DOWNLOADS_ACCEL_REDIRECT!r} is not a path that starts and "
        "ends with / (such as /_dumps/)"
    )
# Paraphrase check against the embedding index in the quality gate (loads MiniLM in workers).
NEAR_COPY_EMBEDDING_CHECK = env_bool("NEAR_COPY_EMBEDDING_CHECK", True)
NEAR_COPY_EMBEDDING_THRESHOLD = env_float("NEAR_COPY_EMBEDDING_THRESHOLD", 0.95)

# Size limits on every imported or generated record; a record over one is reported as a bad
# line, not stored. The longest claim among the 12,607 shared patents is 18,664 characters.
RECORD_MAX_TITLE_CHARS = env_int("RECORD_MAX_TITLE_CHARS", 2_000, minimum=1)
RECORD_MAX_ABSTRACT_CHARS = env_int("RECORD_MAX_ABSTRACT_CHARS", 20_000, minimum=1)
RECORD_MAX_CLAIM_CHARS = env_int("RECORD_MAX_CLAIM_CHARS", 40_000, minimum=1)
RECORD_MAX_CLAIMS = env_int("RECORD_MAX_CLAIMS", 1_000, minimum=1)
# Title, abstract and claims together: the largest of the 12,607 shared patents is 57 k
# characters; a 40 MB record made every page and answer of it 40 MB.
# A page of claims on an invention's page and in /api/patents/<id>; the downloads are whole.
PATENT_CLAIMS_PER_PAGE = env_int("PATENT_CLAIMS_PER_PAGE", 100, minimum=1)
RECORD_MAX_TOTAL_CHARS = env_int("RECORD_MAX_TOTAL_CHARS", 500_000, minimum=1)

HEALTHZ_TIMEOUT = env_float("HEALTHZ_TIMEOUT", 1.0)
# RFC 3161 trusted timestamps of the ledger's daily heads (off when the URL is empty).
LEDGER_TSA_URL = env_str("LEDGER_TSA_URL", "")
LEDGER_TSA_CERT = env_path("LEDGER_TSA_CERT", None)  # the TSA's certificate (PEM), to pin it
LEDGER_TSA_INTERVAL = env_int("LEDGER_TSA_INTERVAL", 3600, minimum=60)  # newest head, seconds
LEDGER_TSA_TIMEOUT = env_float("LEDGER_TSA_TIMEOUT", 10.0)
# Seconds a web request may wait on the broker to enqueue a task (see celery.task_send).
BROKER_SEND_TIMEOUT = env_float("BROKER_SEND_TIMEOUT", 2.0)
# A web request running longer is answered with the site's "took too long" page (0 = no
# limit); gunicorn's worker timeout is WEB_WORKER_TIMEOUT, by default this plus 30 s.
WEB_REQUEST_DEADLINE_SECONDS = env_float("WEB_REQUEST_DEADLINE_SECONDS", 25.0, minimum=0.0)
WEB_WORKER_TIMEOUT = env_int(
    "WEB_WORKER_TIMEOUT", int(WEB_REQUEST_DEADLINE_SECONDS) + 30, minimum=1
)
if WEB_REQUEST_DEADLINE_SECONDS and WEB_WORKER_TIMEOUT <= WEB_REQUEST_DEADLINE_SECONDS:
    raise EnvError(
        f"WEB_WORKER_TIMEOUT={WEB_WORKER_TIMEOUT} must exceed WEB_REQUEST_DEADLINE_SECONDS="
        f"{WEB_REQUEST_DEADLINE_SECONDS:g}: gunicorn would kill the worker before the site answers"
    )
# /healthz?detail=1 (broker, worker, index) for staff, or with this bearer token.
HEALTHZ_TOKEN = env_str("HEALTHZ_TOKEN", "")
HEALTHZ_CACHE_SECONDS = env_float("HEALTHZ_CACHE_SECONDS", 10.0)
# How long a web process keeps the counts and ledger heads its public pages show (each a
# scan of a million rows or more; allthepatents/kept.py). 0: computed for every request.
PUBLIC_FIGURES_SECONDS = env_float("PUBLIC_FIGURES_SECONDS", 60.0, minimum=0.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice(
            "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
        ).upper(),
    },
    # faiss logs each instruction-set library it tries at INFO: noise in every command.
    "loggers": {"faiss.loader": {"level": "WARNING"}},
}
