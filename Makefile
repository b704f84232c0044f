# calbridge: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit bench docs clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . --group test
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/calbridge demo

lint: $(STAMP)
	$(BIN)/ruff check calbridge plugins tests bench
	$(BIN)/ruff format --check calbridge plugins tests bench

types: $(STAMP)
	$(BIN)/mypy

# The whole suite, with a throwaway PostgreSQL server on loopback (installed when missing).
test: $(STAMP)
	$(MAKE) lint types
	scripts/with-postgres.sh $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -q -x $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pg build dist .mypy_cache .ruff_cache .pytest_cache
