# riskengine — build, checks, local stack. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: help install browser lint typecheck unit integration test stack-up stack-down stack-status setup demo bench-core bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

install: $(INSTALLED)  ## create .venv and install riskengine with its test tools (pinned in setup.cfg) and the development tools (devtools/)

$(INSTALLED): setup.cfg pyproject.toml devtools/setup.cfg devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./devtools
	@touch $@

browser:  ## Debian's chromium, for the dashboard's browser test (apt-get when missing; needs root)
	@scripts/ensure-chromium

lint: install  ## ruff: lint and formatting; import-linter: the dependency rules between the packages (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install  ## mypy --strict (config in setup.cfg)
	$(BIN)/mypy

unit: install  ## tests that need no services
	$(BIN)/pytest -m "not integration"

integration: install  ## tests against the local stack (must be up)
	$(BIN)/pytest -m integration

# The stack is started for the tests and stopped after them, whatever they return;
# KEEP_STACK=1 leaves it running for the next run.
test: lint typecheck browser  ## lint, type-check, start the stack, run every test, stop the stack
	@set +e; $(BIN)/riskengine stack up && $(BIN)/pytest; rc=$$?; \
	if [ -z "$(KEEP_STACK)" ]; then $(BIN)/riskengine stack down; fi; exit $$rc

stack-up: install  ## start Kafka, the schema registry, S3, Elasticsearch and Kafka Connect locally (idempotent)
	$(BIN)/riskengine stack up

stack-down: install  ## stop what stack-up started
	$(BIN)/riskengine stack down

stack-status: install  ## show each stack service, its address and state
	$(BIN)/riskengine stack status

setup: stack-up  ## create the topics, register the schemas, deploy the Elasticsearch sink connector
	$(BIN)/riskengine topics create
	$(BIN)/riskengine schemas register
	$(BIN)/riskengine connector deploy

bench-core: install  ## the detection core over 1,000,000 generated trades
	$(BIN)/riskengine bench core

bench: install  ## end to end on the local stack (must be up): raw aiokafka vs passthrough Faust agent vs engine, latency at 1,000 trades/s
	$(BIN)/riskengine bench-e2e

# The demo counts its time to the first alert from here, installation included.
demo:  ## the whole system: stack, topics, schemas, connector, two workers, dashboard, producer; Ctrl-C stops it
	@start=$$(date +%s.%N); $(MAKE) --no-print-directory install && $(BIN)/riskengine demo --started-at $$start

clean:  ## remove caches (not the downloads in .cache or the stack data in .stack)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .hypothesis build *.egg-info
