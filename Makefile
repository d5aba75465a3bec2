# tunelab — set-up, quickstart, tests and lint. `make help` lists the targets.
# The virtual environment is (re)built only when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tunelab-installed
PYTEST_ARGS ?=

.PHONY: help install quickstart test test-fast lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install tunelab with its dev tools

quickstart: $(STAMP)  ## the offline quickstart search (digits, Optuna TPE + ASHA, ~1 min)
	$(PY) tune.py --space quickstart

test: $(STAMP)  ## the whole test suite (real Ray, Optuna, W&B offline, Parquet)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without slow and cluster tests
	$(PY) -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff check and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:  ## remove results, caches and the virtual environment
	rm -rf results .pytest_cache $(VENV)
