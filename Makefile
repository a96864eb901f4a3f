# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format venv demo demo-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	bash scripts/run.sh

test: $(STAMP)
	bash scripts/test.sh

# The unit tier: no database, services, models or shared data; seconds, not minutes.
test-fast: $(STAMP)
	DATA_DIR=$${TEST_DATA_DIR:-$$PWD/var/test} HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 \
		$(BIN)/pytest -m unit -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	bash scripts/demo.sh

demo-data: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py import_patents ../shared/data/patents.jsonl.gz

clean:
	rm -rf var/test test-artifacts .pytest_cache
