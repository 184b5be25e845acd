# riskengine — build, checks, local stack. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: help install native tools browser lint deploy-check typecheck unit integration test stack-up stack-down stack-status setup demo bench-core bench chaos clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

install: $(INSTALLED)  ## create .venv and install riskengine with its test tools (pinned in setup.cfg) and the development tools (devtools/)

$(INSTALLED): setup.cfg pyproject.toml devtools/setup.cfg devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./devtools
	@touch $@

# mypyc compiles the detection core (riskengine/core) into riskengine/core/_compiled/, which the core
# uses only while its stamp matches the sources (riskengine/core/native.py): an edited source runs
# interpreted until the next `make native`. Does nothing when the build is current.
native: install  ## compile the detection core with mypyc (about a minute; about half the worker's time per event)
	$(BIN)/python scripts/build-native-core

# kustomize renders the Kubernetes manifests (deploy/k8s) for their checks; built from its Go module
# into the git-ignored cache, once.
KUSTOMIZE_VERSION := v5.7.1
TOOLS := .cache/tools/bin
KUSTOMIZE := $(TOOLS)/kustomize

tools: $(KUSTOMIZE)  ## kustomize (from its Go module) for the manifest checks, into .cache/tools/bin

$(KUSTOMIZE):
	@mkdir -p $(TOOLS)
	GOBIN=$(abspath $(TOOLS)) GOFLAGS=-modcacherw GOMODCACHE=$(abspath .cache/downloads/go-mod) \
		go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) \
		|| { echo "make tools: go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) failed" >&2; exit 1; }

browser:  ## Debian's chromium, for the dashboard's browser test (apt-get when missing; needs root)
	@scripts/ensure-chromium

lint: install  ## ruff: lint and formatting; import-linter: the dependency rules between the packages (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# No container engine or cluster is needed: hadolint and shellcheck come from their PyPI wheels,
# kubernetes-validate ships the Kubernetes schemas. tests/unit/deploy/ checks more (settings, probes...).
deploy-check: install tools  ## lint the Dockerfiles and the entrypoint; render the manifests and validate them against the Kubernetes schemas
	$(BIN)/hadolint --failure-threshold info docker/Dockerfile docker/connect.Dockerfile
	$(BIN)/shellcheck docker/entrypoint.sh
	@for target in base overlays/local; do \
		echo "kustomize build deploy/k8s/$$target | kubernetes-validate --strict"; \
		$(KUSTOMIZE) build deploy/k8s/$$target > .cache/tools/$${target//\//-}.yaml || exit 1; \
		$(BIN)/kubernetes-validate --strict --quiet .cache/tools/$${target//\//-}.yaml || exit 1; \
	done

typecheck: install  ## mypy --strict (config in setup.cfg)
	$(BIN)/mypy

unit: install tools  ## tests that need no services
	$(BIN)/pytest -m "not integration"

integration: install  ## tests against the local stack (must be up)
	$(BIN)/pytest -m integration

# The stack is started for the tests and stopped after them, whatever they return;
# KEEP_STACK=1 leaves it running for the next run. --durations: the slowest tests in CI's log.
test: lint deploy-check typecheck browser native  ## lint, type-check, compile the core, start the stack, run every test, stop the stack
	@set +e; $(BIN)/riskengine stack up && $(BIN)/pytest --durations=20; rc=$$?; \
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

bench-core: native  ## the detection core over 1,000,000 generated trades
	$(BIN)/riskengine bench core

bench: native  ## end to end on the local stack (must be up): raw aiokafka vs passthrough Faust agent vs engine, order flow, latency at 1,000 and 5,000 trades/s, scaling, recovery
	$(BIN)/riskengine bench-e2e

# Outside CI (it takes about 20 minutes): every scenario under steady load, each verified record by
# record; CHAOS_ARGS passes options or scenario names (see `riskengine chaos --help`).
chaos: install  ## the chaos suite on the local stack (must be up): faults under load, nothing lost (see README)
	$(BIN)/riskengine chaos $(CHAOS_ARGS)

# The demo counts its time to the first alert from here, installation included.
demo:  ## the whole system: stack, topics, schemas, connector, two workers, dashboard, producer; Ctrl-C stops it
	@start=$$(date +%s.%N); $(MAKE) --no-print-directory install && $(BIN)/riskengine demo --started-at $$start

clean:  ## remove caches and the compiled core (not the downloads in .cache or the stack data in .stack)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .hypothesis build *.egg-info \
		riskengine/core/_compiled .cache/native-build
