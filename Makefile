# The README's commands. `make up` runs the local demo cluster, `make test` is what CI runs.
PYTHON ?= python3
LINT_PATHS := $(wildcard cluster node tests bench)

.PHONY: up test lint soak bench long-faults

MINUTES ?= 10
SEED ?=

up:
	$(PYTHON) -m pip install -e . && corral up

test:
	bash scripts/test.sh

lint:
	$(PYTHON) -m ruff check $(LINT_PATHS)
	$(PYTHON) -m mypy

# Long fault run (FAULTS F16/F17): seeded random nemesis for MINUTES, prints the checker's table.
soak:
	$(PYTHON) -m tests.faults.soak --minutes $(MINUTES) --nemesis $(if $(SEED),--seed $(SEED),)

# Long fault cells (FAULTS F8b Sentinel isolated old primary, F9b Redis-host clock jump, F1 x20 per
# backend asserting p99), a few minutes each, never in CI's suite: `@pytest.mark.long` in tests/faults
long-faults:
	CORRAL_LONG=1 $(PYTHON) -m pytest tests/faults -m long -v -s -p no:cacheprovider

# Benchmarks (not tests): results in bench/RESULTS.md
bench:
	$(PYTHON) bench/run.py
