# Redspot: `make up` starts it, `make test` tests it. Both install what they need first,
# and do nothing more than check stamps when nothing changed.

SHELL := /bin/bash
.DEFAULT_GOAL := up

# Debian's own Python: every account can run it (servers run as per-user accounts).
SYSTEM_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
OVERRIDES := redspot/environments/overrides.txt
# the projects it leaves out (a marker that never holds)
LEFT_OUT := $(shell sed -n 's/^\([A-Za-z0-9_.-]*\) *; *sys_platform *== *"never".*/\1/p' $(OVERRIDES))
TORCH_VERSION := 2.13.0
DEEPSPEED_VERSION := 0.19.8
CHP_VERSION := 5.3.0
CHP := .local/chp/node_modules/.bin/configurable-http-proxy
# command:Debian package, installed when the command is missing (npm comes with some
# builds of nodejs, so commands are checked, not package names).
DEB_NEEDS := python3:python3 node:nodejs npm:npm useradd:passwd
# only for `make test`: the browser tests drive Debian's Chromium with Playwright; the
# image builds use buildah, push to Debian's registry, on a busybox rootfs of their own;
# the warehouse tests start PostgreSQL's server and Spark's (on Java 17)
DEB_TEST_NEEDS := chromium:chromium buildah:buildah docker-registry:docker-registry \
	busybox:busybox-static pg_ctlcluster:postgresql java:openjdk-17-jre-headless
STAMP := $(VENV)/.redspot-stamps

# Arguments for `redspot up`, e.g. `make up ARGS="--port 9000"`.
ARGS ?=
# Arguments for pytest, e.g. `make test PYTEST_ARGS="-k profiles"`.
PYTEST_ARGS ?=
# Test modules run in parallel, a module's tests on one worker (they share its hub),
# longest first (tests/conftest.py). Two workers keep two cores busy; a third made Ray
# heads and MLflow miss their start-up timeouts;
# `make test TEST_WORKERS=0` runs them one after the other.
TEST_WORKERS ?= 2

export RAY_USAGE_STATS_ENABLED := 0

# Wheels of what PyPI has only as an sdist, built once per machine: pyspark's sdist is
# 450 MB, and where PyPI's answers carry no cache headers uv fetches and builds it again
# for every environment it installs (this one, each server runtime, each image's lock
# check). uv finds them through UV_FIND_LINKS, which `make` sets for what it runs.
WHEELHOUSE ?= $(HOME)/.cache/redspot/wheels
PYSPARK_VERSION := 4.3.0
PYSPARK_WHEEL := $(WHEELHOUSE)/pyspark-$(PYSPARK_VERSION)-py2.py3-none-any.whl
comma := ,
export UV_FIND_LINKS := $(WHEELHOUSE)$(if $(PIP_FIND_LINKS),$(comma)$(PIP_FIND_LINKS))

.PHONY: up test bench lint deps system test-system debian clean chart-schema

up: deps
	$(VENV)/bin/redspot up $(ARGS)

test: deps test-system
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: deps
	$(PY) bench/spawn.py
	$(PY) bench/environments.py
	$(PY) bench/ray_remote.py
	$(PY) bench/models.py
	$(PY) bench/training.py
	$(PY) bench/warehouse.py
	$(PY) bench/sharing.py
	$(PY) bench/gpu_decoder.py

# helm/redspot/values.schema.json, from redspot/config/schema.yaml (redspot.yaml) and the
# chart's own keys (helm/redspot/values.schema.yaml); tests/unit/test_chart.py checks it
chart-schema: deps
	$(PY) -m redspot.config.chart

lint: deps
	$(VENV)/bin/ruff check redspot tests bench
	cd labextension && npx tsc --noEmit

deps: system $(STAMP)/python $(VENV)/bin/configurable-http-proxy $(STAMP)/labextension

# Debian packages, installed only when running as root and something is missing.
system:
	@$(MAKE) --no-print-directory debian NEEDS="$(DEB_NEEDS)"

test-system:
	@$(MAKE) --no-print-directory debian NEEDS="$(DEB_TEST_NEEDS)"

debian:
	@missing=""; for need in $(NEEDS); do \
	  command -v $${need%%:*} >/dev/null || missing="$$missing $${need#*:}"; \
	done; \
	$(SYSTEM_PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "Missing Debian packages:$$missing (run as root, or install them, to continue)"; \
	  fi; \
	fi

$(STAMP)/venv:
	@echo "First setup: installing Redspot's Python environment in $(VENV) (about 2.6 GB;"
	@echo "typically 5-10 minutes on a fresh machine, depending on the network)."
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	@mkdir -p $(STAMP) && touch $@

# torch first, from its pinned CPU build, before anything that depends on it, so that
# no resolver pulls the CUDA build and its gigabytes of wheels.
$(STAMP)/torch: $(STAMP)/venv
	@$(PY) -c "import importlib.metadata as m, sys; \
	  sys.exit(0 if m.version('torch').split('+')[0] == '$(TORCH_VERSION)' else 1)" 2>/dev/null \
	  || (echo "Installing torch $(TORCH_VERSION), CPU build (the largest download)" \
	      && $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)")
	@touch $@

# DeepSpeed is an sdist: built against the installed torch (no build isolation, which
# would fetch another torch), without its C++ ops (they compile on first use, cached).
$(STAMP)/deepspeed: $(STAMP)/torch
	@$(PY) -c "import importlib.metadata as m, sys; \
	  sys.exit(0 if m.version('deepspeed') == '$(DEEPSPEED_VERSION)' else 1)" 2>/dev/null \
	  || (echo "Building DeepSpeed $(DEEPSPEED_VERSION) without its C++ ops (about a minute)..." \
	      && $(PY) -m pip install --quiet setuptools wheel \
	      && DS_BUILD_OPS=0 $(PY) -m pip install --quiet --no-build-isolation \
	         "deepspeed==$(DEEPSPEED_VERSION)")
	@touch $@

# The JupyterLab extension (labextension/: TypeScript) built into redspot/labextension
# (ignored by git) with node alone, before Redspot is installed: the package build then
# finds it built, and the server runtime and environments carry it.
LABEXT := redspot/labextension/static/style.js
LABEXT_SOURCES := $(wildcard labextension/src/*.ts labextension/style/* labextension/schema/*) \
	labextension/package.json labextension/tsconfig.json labextension/install.json

labextension/node_modules/.installed: labextension/package.json labextension/package-lock.json
	@echo "Installing the JupyterLab extension's build tools from npm (about a minute the first time)"
	cd labextension && npm ci --no-audit --no-fund --silent
	@touch $@

$(LABEXT): labextension/node_modules/.installed $(LABEXT_SOURCES)
	@echo "Building Redspot's JupyterLab extension (a few seconds)"
	cd labextension && npm run --silent build

# the editable install's JupyterLab finds the built extension where a wheel puts it
$(STAMP)/labextension: $(LABEXT) $(STAMP)/python
	rm -rf $(VENV)/share/jupyter/labextensions/@redspot/labextension
	mkdir -p $(VENV)/share/jupyter/labextensions/@redspot
	ln -s $(abspath redspot/labextension) $(VENV)/share/jupyter/labextensions/@redspot/labextension
	@touch $@

$(PYSPARK_WHEEL): | $(STAMP)/venv
	@echo "Building pyspark $(PYSPARK_VERSION)'s wheel once for this machine, in $(WHEELHOUSE)"
	@echo "(a 450 MB download; about half a minute)"
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) "pyspark==$(PYSPARK_VERSION)"

# redspot/environments/overrides.txt: dependencies left out (why: in the file); one an
# older environment has is removed
$(STAMP)/python: $(STAMP)/torch $(STAMP)/deepspeed pyproject.toml $(OVERRIDES) \
		$(wildcard jupyter-config/*/*) | $(LABEXT) $(PYSPARK_WHEEL)
	@echo "Installing Redspot and its dependencies (JupyterHub, JupyterLab, Ray, MLflow...) with uv"
	$(UV) pip install --python $(PY) --quiet --override $(OVERRIDES) -e ".[dev]"
	$(UV) pip uninstall --python $(PY) --quiet $(LEFT_OUT) 2>/dev/null || true
	@touch $@

$(CHP):
	@echo "Installing configurable-http-proxy $(CHP_VERSION) from npm (a few seconds)"
	npm install --silent --no-audit --no-fund --prefix .local/chp \
	  configurable-http-proxy@$(CHP_VERSION)

$(VENV)/bin/configurable-http-proxy: $(CHP) $(STAMP)/venv
	ln -sf $(abspath $(CHP)) $@

clean:
	rm -rf $(VENV) .local .pytest_cache labextension/node_modules labextension/lib \
	  labextension/tsconfig.tsbuildinfo redspot/labextension
