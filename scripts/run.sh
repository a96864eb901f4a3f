#!/usr/bin/env bash
# Starts the whole app in one terminal: gunicorn (web) and a Celery worker. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONUNBUFFERED=1

"$BIN/python" manage.py migrate --noinput
"$BIN/python" manage.py collectstatic --noinput -v0
"$BIN/python" manage.py ensure_admin

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap cleanup INT TERM EXIT

"$BIN/gunicorn" allthepatents.wsgi -c allthepatents/gunicorn_conf.py -b "$HOST:$PORT" -w "${WEB_WORKERS:-2}" \
  --access-logfile - --graceful-timeout 10 &
pids+=($!)
"$BIN/celery" -A allthepatents worker -Q default,generation,indexing \
  -c "${WORKER_CONCURRENCY:-1}" -l "${LOG_LEVEL:-info}" &
pids+=($!)
echo "All the Patents: http://$HOST:$PORT/  (admin: http://$HOST:$PORT/admin/)  Ctrl-C stops."
wait -n
