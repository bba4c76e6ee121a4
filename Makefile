# `make serve` and `make test` install what is missing first; nothing here needs the network
# beyond the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# Debian packages the tests drive: a real Prometheus server, docker-compose to validate the
# compose file (no Docker engine needed for `config`), the SWORD tools and Bible modules the
# corpus is regenerated from, Apertium, the rule-based peer `eval` scores beside ours, and
# Chromium with its WebDriver, the headless browser the playground's tests drive.
SYSTEM_PACKAGES := prometheus docker-compose libsword-utils sword-text-sparv sword-text-web \
	apertium apertium-eng-spa chromium chromium-driver

.PHONY: install system-deps serve test test-fast bench lint loadtest clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		else echo "missing:$$missing - install them (apt-get install$$missing)"; exit 1; fi; \
	fi

serve: install
	$(PY) -m service serve

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install system-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) -m service bench all --threads 1 --write docs/benchmarks.md

# Load-test a running service (`make serve` first); reports in loadtests/results/<timestamp>/.
# `make loadtest USERS=32 SPAWN_RATE=8 DURATION=60s HOST=http://127.0.0.1:8000 TAGS=translate`
# TAGS: translate libretranslate compare feedback generate (comma separated; empty: all).
# LOCUST_ARGS go to Locust as they are, e.g. LOCUST_ARGS="--models transformer,rnnsearch".
USERS ?= 32
SPAWN_RATE ?= 8
DURATION ?= 60s
HOST ?= http://127.0.0.1:8000
TAGS ?=
LOCUST_ARGS ?=

loadtest: install
	$(PY) loadtests/run.py --host "$(HOST)" --users $(USERS) --spawn-rate $(SPAWN_RATE) \
		--duration $(DURATION) $(if $(TAGS),--tags $(TAGS)) $(if $(LOCUST_ARGS),-- $(LOCUST_ARGS))

lint: install
	$(VENV)/bin/ruff check service tests loadtests
	$(VENV)/bin/ruff format --check service tests loadtests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
