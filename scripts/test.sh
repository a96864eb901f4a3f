#!/usr/bin/env bash
# Lint, then the test suite on SQLite, and again on PostgreSQL when TEST_DATABASE_URL is set.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# Redis for the tests that need a real broker: use one that answers, or start one.
REDIS_TEST_URL=${REDIS_URL:-redis://127.0.0.1:6379/15}
redis_ok() { "$BIN/python" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$1" 2>/dev/null; }
if ! redis_ok "$REDIS_TEST_URL"; then
  if command -v redis-server >/dev/null; then
    echo "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do redis_ok "$REDIS_TEST_URL" && break; sleep 0.1; done
  fi
fi
if redis_ok "$REDIS_TEST_URL"; then
  export REDIS_URL=$REDIS_TEST_URL
else
  echo "NOTE: no Redis available: tests that need it are skipped (they fail when CI=true)."
  unset REDIS_URL
fi

export DATA_DIR=${TEST_DATA_DIR:-$PWD/var/test}
mkdir -p "$DATA_DIR"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
# The same sampling path on every CPU (auto would pick bf16 on some), so that a test's
# expectations of a model's output hold wherever it runs.
export GENERATION_QUANTIZE=${GENERATION_QUANTIZE:-int8}
# Likewise the query embedder: tests compare the site's ranking with an exhaustive fp32 one.
export EMBEDDING_QUERY_PRECISION=${EMBEDDING_QUERY_PRECISION:-fp32}

echo "== lint (ruff, with bandit rules)"
"$BIN/ruff" check . || exit 1

run_pytest() {
  "$BIN/pytest" "$@"
  rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests"; return 1; fi
  return "$rc"
}

echo "== tests on SQLite"
DATABASE_URL= run_pytest "$@" || exit 1

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  echo "== tests on PostgreSQL ($TEST_DATABASE_URL)"
  DATABASE_URL=$TEST_DATABASE_URL run_pytest "$@" || exit 1
fi
