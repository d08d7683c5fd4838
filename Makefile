# The README's commands. `make up` runs the local demo cluster, `make test` is what CI runs.
PYTHON ?= python3
LINT_PATHS := $(wildcard cluster node tests bench)

.PHONY: up test lint

up:
	$(PYTHON) -m pip install -e . && corral up

test:
	bash scripts/test.sh

lint:
	$(PYTHON) -m ruff check $(LINT_PATHS)
	$(PYTHON) -m mypy
