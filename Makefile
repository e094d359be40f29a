# harvester: make venv | test | lint | schema | demo | bench
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint schema demo bench chaos clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Starts a throwaway PostgreSQL unless HARVESTER_TEST_DSN is set (tests/conftest.py). `make test`
# runs in two parts. First, on TEST_WORKERS processes at once (3 is the quickest on two cores), each
# with its own server: the fast tiers (unit, integration, hostile: `make test-fast`, the inner loop)
# and the slower tests that assert no timing (the quick benchmarks, and the PgBouncer, roles,
# reader and replica field tests, which start their own servers). Then, one at a time, every other
# test: the e2e, field and chaos runs that measure rate limits and how soon something is noticed.
TEST_WORKERS ?= 3
FAST_TIERS := tests/unit tests/integration tests/hostile
UNTIMED := tests/bench tests/field/test_pgbouncer.py tests/field/test_roles_cli.py \
	tests/field/test_reader_downstream.py tests/field/test_read_replica.py
PARALLEL := $(FAST_TIERS) $(UNTIMED)

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PARALLEL) $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests $(addprefix --ignore=,$(PARALLEL)) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(FAST_TIERS) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check harvester tests bench
	$(BIN)/ruff format --check harvester tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# sql/schema.sql: the schema the migrations build, dumped from a throwaway PostgreSQL 15 (after adding a
# migration; tests/integration/db/test_schema_snapshot.py says when it is due).
schema: venv
	$(BIN)/python -m tests.support.schema

demo: venv
	$(BIN)/harvester demo

bench: venv
	$(BIN)/python -m bench

chaos: venv
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
