# calbridge: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-lowest lint types unit bench docs clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# everything: the library, every extra (cli, server, sandbox, postgres, testing), test tools
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all]" --group test
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/calbridge demo

lint: $(STAMP)
	$(BIN)/ruff check calbridge plugins tests bench examples
	$(BIN)/ruff format --check calbridge plugins tests bench examples

types: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/calbridge-example/calbridge_example

# The whole suite, with a throwaway PostgreSQL server on loopback and headless Chromium
# (both installed when missing).
test: $(STAMP)
	$(MAKE) lint types
	scripts/ensure-chromium.sh  # headless Chromium for the console's browser tests
	scripts/with-postgres.sh $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The lowest versions pyproject.toml allows (constraints-lowest.txt), in their own venv:
# import checks and the fast tests that need no PostgreSQL.
LOWEST := $(VENV)/lowest
LOWEST_TESTS := tests/test_packaging.py tests/test_models.py tests/test_config_validation.py \
	tests/test_contract_memory.py tests/test_example_plugin.py tests/test_router.py \
	tests/test_http.py tests/test_plugins.py tests/test_paging.py tests/test_occurrences.py \
	tests/bridge tests/webhooks
test-lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -c constraints-lowest.txt \
		".[cli,server,sandbox,testing]" pytest-timeout hypothesis "hatchling>=1.25"
	cd / && $(CURDIR)/$(LOWEST)/bin/python -c "import calbridge, calbridge.cli, calbridge.testing, calbridge.sandbox, calbridge.webhooks; calbridge.get_plugin_host().load()"
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider -m "not postgres and not slow" $(LOWEST_TESTS)

unit: $(STAMP)
	$(BIN)/python -m pytest -q -x $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# The documentation site (API reference from docstrings), strictly: a broken link, a
# missing page or an unresolved reference fails the build. Output in build/site/.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) .pg build dist .mypy_cache .ruff_cache .pytest_cache
