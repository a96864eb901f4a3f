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
alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
on_signal() {
  # Ctrl-C already reached every process of the terminal's group and each is stopping
  # (Celery finishes its task, gunicorn its requests): wait for that instead of sending
  # a second signal that turns a clean stop into "exited with signal 15".
  trap - INT TERM EXIT
  for _ in $(seq 150); do alive || break; sleep 0.1; done
  stop_all
  echo "stopped."
  exit 0
}
on_exit() {
  trap - INT TERM EXIT
  stop_all
}
trap on_signal INT TERM
trap on_exit EXIT

"$BIN/gunicorn" allthepatents.wsgi -c allthepatents/gunicorn_conf.py -b "$HOST:$PORT" -w "${WEB_WORKERS:-2}" \
  --access-logfile - --graceful-timeout 10 &
pids+=($!)
"$BIN/celery" -A allthepatents worker -Q default,generation,indexing \
  -c "${WORKER_CONCURRENCY:-1}" -l "${LOG_LEVEL:-info}" &
pids+=($!)
echo "All the Patents: http://$HOST:$PORT/  (admin: http://$HOST:$PORT/admin/)  Ctrl-C stops."
# When one of them stops on its own, stop the other and report its status.
set +e
wait -n
status=$?
echo "a process stopped (status $status); stopping the rest" >&2
exit "$status"
