#!/usr/bin/env bash
# `make demo`: from a fresh clone to a searchable, generating site, saying what each step
# does and how long it took. Re-running reuses what is done (imports are idempotent, the
# index is brought up to date). The demo generator ships with the project
# (models/demo-generator, see its MODEL_CARD.md); DEMO_TRAIN=1 trains a new one instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
SHARED=${SHARED:-../shared}
DEMO_TRAIN=${DEMO_TRAIN:-0}
if [ "$DEMO_TRAIN" = 1 ]; then DEMO_MODEL=${DEMO_MODEL:-var/models/demo}; else DEMO_MODEL=${DEMO_MODEL:-models/demo-generator}; fi
DEMO_STEPS=${DEMO_STEPS:-400}
started_all=$(date +%s)

step() {  # step "what it does" command...
  local what=$1; shift
  echo "==> $what"
  local t0; t0=$(date +%s)
  "$@"
  echo "    done in $(( $(date +%s) - t0 )) s"
}

if [ ! -f "$SHARED/data/patents.jsonl.gz" ]; then
  echo "make demo needs the shared data at $SHARED/data/patents.jsonl.gz (set SHARED=...)." >&2
  exit 1
fi
step "migrate the database" "$BIN/python" manage.py migrate --noinput -v0
step "import the shared reference patents (idempotent)" \
  "$BIN/python" manage.py import_patents "$SHARED/data/patents.jsonl.gz"
# Documents first: title + abstract vectors make the site searchable in a fifth of the time;
# the claims' vectors follow (the worker `make run` starts adds them, or search_index update).
step "build the search index: each patent's title and abstract (claims follow; progress below)" \
  "$BIN/python" manage.py search_index update --documents-only
if [ -f "$DEMO_MODEL/config.json" ]; then
  echo "==> demo generator: $DEMO_MODEL"
else
  step "train the demo generator ($DEMO_STEPS steps, tiny GPT-NeoX, kl3m tokenizer)" \
    "$BIN/python" manage.py train_patent_model --base "$SHARED/models/kl3m-002-170m-patent" \
      --data "$SHARED/data/patents.jsonl.gz" --out "$DEMO_MODEL" --from-scratch --size tiny \
      --steps "$DEMO_STEPS" --batch-size 8 --max-length 384
fi
step "generate a first batch of 8 inventions (inline, no worker needed)" \
  "$BIN/python" manage.py generate --model "$DEMO_MODEL" --mode mixed --count 8 --inline
step "index the new inventions" "$BIN/python" manage.py search_index update --documents-only
echo "demo ready in $(( $(date +%s) - started_all )) s: 'make run', then http://127.0.0.1:${PORT:-8000}/"
echo "Search finds patents by title, abstract and full text now. The claims' own vectors"
echo "(about five per patent) are added by the worker that 'make run' starts, with progress in"
echo "'manage.py search_index status' and /healthz?detail=1; or now: $BIN/python manage.py search_index update"
