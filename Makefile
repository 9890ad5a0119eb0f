# snapshot_pipeline: two commands on a fresh machine (Python 3.11+): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev lock demo test test-server check bench bench-smoke bench-hot bench-delta bench-delta-smoke bench-storage bench-storage-smoke bench-query bench-query-smoke bench-automation serve ui clean stop-db

# Two installs from one lock file (uv.lock, `make lock` after editing pyproject.toml): the runtime
# (`make install`: demo, snapshot, serve, ui) and the developer's (`make install-dev`: + tests, lint, type check,
# benchmarks, browser driver, Kubernetes executor). uv installs them (docs/install.md: measured 3-4x faster
# than pip on a fresh clone); when no uv is on the PATH, it is installed once into .uv/ with pip.
UV ?= $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Byte-compile at install (uv does not by default): else every process compiles dagster and the rest from
# source on start-up when .pyc files cannot be written (PYTHONDONTWRITEBYTECODE, read-only images): ~7 s a run.
export UV_COMPILE_BYTECODE := 1

install: $(STAMP)

install-dev: $(DEV_STAMP)

lock: $(UV)  ## re-resolve uv.lock after a change to pyproject.toml
	$(UV) lock

.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check 'uv>=0.9'

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --quiet --locked --python $(PYTHON) --no-dev
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --quiet --locked --python $(PYTHON) --no-dev --extra dev
	touch $(STAMP) $(DEV_STAMP)

demo: install  ## seed a demo ledger on the embedded PostgreSQL and snapshot the last 7 closed days
	$(BIN)/snapshot-pipeline demo

test: install-dev  ## the whole test suite (embedded PostgreSQL unless SNAPSHOT_TEST_DATABASE_URL is set)
	$(BIN)/python -m pytest

test-server: install-dev  ## the suite against the PostgreSQL server of this machine
	SNAPSHOT_TEST_DATABASE_URL=$${SNAPSHOT_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m pytest

# Validating definitions needs no storage: a throwaway DAGSTER_HOME, so dg does not load the project's
# dagster.yaml from the current directory (its PostgreSQL URL comes from DAGSTER_PG_URL, set by the CLI).
# VIRTUAL_ENV names the project's venv as the active one, which is what `make` runs (else dg warns of a mismatch).
check: install-dev  ## lint (ruff), import rules (no cycle), type-check (mypy) and validate the Dagster definitions (local, and on Kubernetes)
	$(BIN)/ruff check snapshot_pipeline tools tests benchmarks
	$(BIN)/python tools/check_imports.py
	$(BIN)/mypy snapshot_pipeline
	cd $(CURDIR) && home=$$(mktemp -d) && printf 'telemetry:\n  enabled: false\n' > $$home/dagster.yaml \
		&& VIRTUAL_ENV=$(abspath $(VENV)) DAGSTER_HOME=$$home $(BIN)/dg check defs \
		&& VIRTUAL_ENV=$(abspath $(VENV)) DAGSTER_HOME=$$home SNAPSHOT_EXECUTOR=k8s $(BIN)/dg check defs; \
		status=$$?; rm -rf "$$home"; exit $$status

bench: install-dev  ## full-size benchmarks (1M balances, 5M transactions; dbt baseline in .venv-dbt)
	$(BIN)/python benchmarks/bench_snapshot.py
	$(BIN)/python benchmarks/bench_query.py
	$(BIN)/python benchmarks/bench_storage.py
	$(BIN)/python benchmarks/bench_delta.py

bench-delta: install-dev  ## Delta publish vs the previous publish, log after 400 commits, delta_scan vs Parquet (200k balances)
	$(BIN)/python benchmarks/bench_delta.py

bench-delta-smoke: install-dev
	$(BIN)/python benchmarks/bench_delta.py --smoke

bench-hot: install-dev  ## balance_at on a busy ledger and a 10,000-legs-a-day balance over HTTP (wrk if installed)
	$(BIN)/python benchmarks/bench_hot.py

bench-storage: install-dev  ## local disk vs local S3 server, shards 1 vs 2 (200k balances, 1M transactions)
	$(BIN)/python benchmarks/bench_storage.py

bench-storage-smoke: install-dev
	$(BIN)/python benchmarks/bench_storage.py --smoke

bench-query: install-dev  ## balance-at-time benchmark (1M balances, 10M transactions, 30 partitions)
	$(BIN)/python benchmarks/bench_query.py

bench-query-smoke: install-dev
	$(BIN)/python benchmarks/bench_query.py --balances 5000 --transactions 50000 --days 5 --queries 200 \
		--heavy-legs 1000 --heavy-queries 50 --http-clients 10 --http-seconds 3 --http-rate 100

serve: install  ## the HTTP API on http://127.0.0.1:8000 (docs at /docs); another port: make serve PORT=8100
	$(BIN)/snapshot-pipeline serve --port $(or $(PORT),8000)

bench-smoke: install-dev
	$(BIN)/python benchmarks/bench_snapshot.py --balances 20000 --transactions 100000 --batch-sizes 1000 --skip-dbt

bench-automation: install-dev  ## cost of the repair scan, each asset check and retention (200k balances, 2M rows)
	$(BIN)/python benchmarks/bench_automation.py

ui: install  ## Dagster UI on http://127.0.0.1:3000; another port: make ui PORT=3100
	$(BIN)/snapshot-pipeline ui --port $(or $(PORT),3000)

stop-db: install  ## stop the embedded PostgreSQL
	$(BIN)/snapshot-pipeline embedded-db stop

clean:
	rm -rf $(VENV) .uv .dagster_home .pytest_cache
