# btcpulse — one command runs the system (`make up`), one runs the tests (`make test`).
#
# The virtual environment is built once per requirements.lock (every pin, direct and transitive) under
# $(CACHE) and linked as .venv, so a second clone or CI run reuses it; a machine without
# the cache builds it from PyPI.

SHELL        := /bin/bash
PYTHON       ?= python3
CACHE        ?= $(HOME)/.cache/btcpulse
LOCK_HASH    := $(shell sha256sum requirements.lock | cut -c1-16)
VENV_DIR     := $(CACHE)/venv-$(LOCK_HASH)
VENV         := .venv
BIN          := $(VENV)/bin
DATA         ?= ../shared/data
SPEED        ?= 3600
# The replay publishes the news before PACE_FROM at once (history to look at), then streams.
PACE_FROM    ?= 2022-01-01T00:00:00Z
# LIVE=0: no live collectors (a machine without internet); SOURCES=file.toml: your own sources.
LIVE         ?= 1
SOURCES      ?=
UP_FLAGS     := $(if $(filter 0,$(LIVE)),--no-live,--live) $(if $(SOURCES),--sources "$(SOURCES)",)
export PIP_CACHE_DIR := $(CACHE)/pip
export BTCPULSE_CACHE_DIR ?= $(CACHE)
# This clone's code first: the cached venv is shared by every clone of the same lock, and its
# editable install names the clone that ran `make` last; every process make starts (the CLI,
# Ray's head and so its workers, pytest) inherits this.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH),)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

REPLAY_NEWS   := $(DATA)/crypto_news_2021_2022/cryptonews.csv
REPLAY_PRICES := $(DATA)/btc_usd_bitstamp_hourly/Bitstamp_BTCUSD_1h.csv

.PHONY: up down status install system-deps test unit lint audit bench bench-search bench-threads soak screenshot memtest lock clean

## up: install what is missing, start Pulsar, Ray, Serve, consumers and sources; print addresses
up: install
	@if [ -f "$(REPLAY_NEWS)" ]; then \
	  $(BIN)/btcpulse up $(UP_FLAGS) --replay "$(REPLAY_NEWS)" --replay "$(REPLAY_PRICES)" --speed $(SPEED) \
	    --pace-from $(PACE_FROM); \
	else \
	  $(BIN)/btcpulse up $(UP_FLAGS); \
	fi

down:
	$(BIN)/btcpulse down

status:
	$(BIN)/btcpulse status

## install: system packages (Java, Maven, Chromium) when missing, then the cached venv
install: system-deps $(VENV_DIR)/.installed
	@ln -sfn "$(VENV_DIR)" $(VENV)
	@# The project itself is an editable install (the `btcpulse` command, the package's
	@# metadata), re-pointed at this clone on every run; PYTHONPATH above keeps each clone on
	@# its own code while another one runs.
	@$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

# No prerequisites on purpose: the folder's name carries the lock's hash, and a fresh clone's
# newer file times must not trigger a rebuild of an environment that matches it.
$(VENV_DIR)/.installed:
	@# Built in place (a venv records its own path); .installed is written last, so an
	@# interrupted build is redone from scratch.
	@mkdir -p "$(CACHE)"
	rm -rf "$(VENV_DIR)"
	$(PYTHON) -m venv "$(VENV_DIR)"
	"$(VENV_DIR)/bin/python" -m pip install -q --upgrade pip==25.3 setuptools==80.9.0 wheel==0.45.1
	"$(VENV_DIR)/bin/python" -m pip install -q -r requirements.lock
	touch "$@"
	@# Environments of older locks (7 GB each) go once unused for a week.
	find "$(CACHE)" -maxdepth 1 -name 'venv-*' ! -name venv-lock ! -path "$(VENV_DIR)" -mtime +7 -exec rm -rf {} +

system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## test: lint, then unit, integration and browser tests against real services
test: install lint
	$(BIN)/python -m pytest tests

## memtest: the dashboard's memory over a 10-minute live stream (BTCPULSE_MEMORY_MINUTES)
memtest: install
	$(BIN)/python -m pytest -m long tests/browser/test_dashboard_memory.py

unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check cluster models actors serve ui tests bench
	$(BIN)/ruff format --check cluster models actors serve ui tests bench
	$(BIN)/mypy

## audit: known vulnerabilities of every pinned package (requirements.lock), from PyPI's
## advisory data (AUDIT_SERVICE=osv for OSV). --strict: a package that could not be looked up
## fails the audit instead of passing unseen.
AUDIT_SERVICE ?= pypi
audit: install
	$(BIN)/pip-audit -r requirements.lock --no-deps --disable-pip --strict \
	  --vulnerability-service $(AUDIT_SERVICE) --progress-spinner off

## bench: the models' table (bench.run); the whole system against its models, latency, dashboard
## and memory, with the defaults (int8 on the CPU) and with torch (bench.pipeline, a stack of its own,
## ~10 min each); search at 100k real texts through the API (bench.search; the first run embeds
## the texts, ~20 min on 2 cores, then cached under $(CACHE)/bench); then the goals table in the
## README (bench.report). BENCH_SEARCH=0 skips the search part.
BENCH_SEARCH ?= 1
bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.pipeline --label torch --env BTCPULSE_EMBED_BACKEND=torch
	@if [ "$(BENCH_SEARCH)" != 0 ]; then $(BIN)/python -m bench.search; fi
	$(BIN)/python -m bench.report

## bench-threads: the analysis models under an actor's conditions (threads, OpenMP, ONNX Runtime)
bench-threads: install
	$(BIN)/python -m bench.threads

bench-search: install
	$(BIN)/python -m bench.search

## soak: 30 minutes at 50 articles/s through a stack of its own; memory and backlog over time
SOAK_MINUTES ?= 30
SOAK_RATE    ?= 50
soak: install
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE)

## screenshot: the running dashboard (after make up) as docs/dashboard.png, for the README
screenshot:
	$(BIN)/python -m ui.screenshot --url http://127.0.0.1:8000/dashboard --out docs/dashboard.png --query "SEC decision on a bitcoin ETF"

## lock: re-resolve requirements.lock from the pins in pyproject.toml
lock:
	rm -rf "$(CACHE)/venv-lock" && $(PYTHON) -m venv "$(CACHE)/venv-lock"
	"$(CACHE)/venv-lock/bin/pip" install -q -e '.[dev]'
	"$(CACHE)/venv-lock/bin/pip" freeze --all --exclude-editable | grep -v -E '^(pip|setuptools|wheel)==' > requirements.lock

clean:
	rm -f $(VENV)
