# The commands developers and CI share. `make studio` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: studio test install lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# torch is pinned in pyproject.toml (the CPU build comes from the machine's local wheel).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Install everything and start the studio on http://127.0.0.1:8000 (data in ./studio-data)
studio: install
	$(BIN)/lastedocation serve

## Install everything the tests need, then lint, type-check and run the tests
test: install lint typecheck pytest

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/dataset_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
