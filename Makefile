# Every target creates .venv on first use, so a fresh clone needs only Python and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit crash bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m limitry_local demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check limitry_local tests benchmarks examples
	$(BIN)/ruff format --check limitry_local tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# The SIGKILL crash test alone: 34 kill/reopen cycles of one ledger file in each durability
# mode (102 in all, as `make test` runs it); CRASH_CYCLES=100 make crash for a longer soak.
# CRASH_SEED=<seed> CRASH_CYCLES=<n> (as printed) replays a failure.
crash: $(STAMP)
	CRASH_CYCLES=$${CRASH_CYCLES:-34} $(BIN)/pytest tests/test_crash.py -q -s

# The peers (the bench extra, part of dev) share the venv, so they run side by side
# with limitry_local in one process.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis limitry-demo.db*
