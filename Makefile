# The README's commands. `make up` runs the local demo cluster, `make test` is what CI runs.
# Everything runs in the repo's virtualenv, installed from a hashed lock (scripts/venv.sh).
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
LINT_PATHS := $(wildcard cluster node tests bench)

.PHONY: up test test-latest lock lint soak bench long-faults

MINUTES ?= 10
SEED ?=

up:
	bash scripts/venv.sh requirements/test.lock && $(VENV)/bin/corral up

test:
	bash scripts/test.sh

# Not gating: the same suite against the newest releases pyproject.toml allows, in .venv-latest,
# so drift (a new redis-py or mypy) shows up before it reaches the lock.
test-latest:
	command -v uv >/dev/null || python3 -m pip install -q uv
	uv pip compile -q pyproject.toml requirements/build.in --extra test --generate-hashes --upgrade \
	  --python-version 3.11 -o .tools/latest.lock && \
	CORRAL_VENV=$(CURDIR)/.venv-latest CORRAL_LOCK=.tools/latest.lock bash scripts/test.sh

# Refresh the locks to the newest releases pyproject.toml allows (uv: `python3 -m pip install uv`),
# then run `make test` and commit requirements/*.lock. After adding a dependency, `bash
# scripts/lock.sh` (no --upgrade) keeps every other pin.
lock:
	bash scripts/lock.sh --upgrade

lint:
	$(PYTHON) -m ruff check $(LINT_PATHS)
	$(PYTHON) -m mypy

# Long fault run (docs/FAULTS.md F16/F17): seeded random nemesis for MINUTES, prints the checker's table.
soak:
	$(PYTHON) -m tests.faults.soak --minutes $(MINUTES) --nemesis $(if $(SEED),--seed $(SEED),)

# Long fault cells (docs/FAULTS.md F8b Sentinel isolated old primary, F9b Redis-host clock jump, F1 x20 per
# backend asserting p99), a few minutes each, never in CI's suite: `@pytest.mark.long` in tests/faults
long-faults:
	CORRAL_LONG=1 $(PYTHON) -m pytest tests/faults -m long -v -s -p no:cacheprovider

# Benchmarks (not tests): results in bench/RESULTS.md
bench:
	$(PYTHON) bench/run.py
