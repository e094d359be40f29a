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

# Starts a throwaway PostgreSQL unless HARVESTER_TEST_DSN is set (tests/conftest.py). The fast tiers
# (pure and single-process tests, a fresh database each) run on TEST_WORKERS processes at once (3 is
# the quickest on two cores: 69 s against 103 s with 2 and 86 s with 4), each
# with its own server; the end-to-end and field tiers measure rate limits and timings, so they run
# one at a time, after. Every other directory under tests/ belongs to the second run.
TEST_WORKERS ?= 3
FAST_TIERS := tests/unit tests/integration tests/hostile

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(FAST_TIERS) $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests $(addprefix --ignore=,$(FAST_TIERS)) $(PYTEST_ARGS)

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
