# `make serve` and `make test` install what is missing first; nothing here needs the network
# beyond the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test test-fast bench lint loadtest clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(PY) -m service serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) -m service bench all

lint: install
	$(VENV)/bin/ruff check service tests loadtests
	$(VENV)/bin/ruff format --check service tests loadtests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
