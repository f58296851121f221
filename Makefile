# quay-geo: the two quick-start commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-run lint typecheck unit servers-start servers-stop clean

## Start the registry on the embedded default (SQLite, filesystem broker) on 127.0.0.1:8000.
run: install-run
	./scripts/run.sh

## Install what is missing, start the test servers, run lint, type checks and the whole suite.
test: install
	$(MAKE) lint typecheck
	./scripts/test-servers.sh start
	set -o pipefail; trap './scripts/test-servers.sh stop' EXIT; \
	  $(BIN)/pytest $(PYTEST_ARGS)

install:
	PYTHON=$(PYTHON) ./scripts/install-deps.sh

install-run:
	PYTHON=$(PYTHON) ./scripts/install-deps.sh --run-only

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy .

servers-start:
	./scripts/test-servers.sh start

servers-stop:
	./scripts/test-servers.sh stop

clean:
	rm -rf var/test var/test-servers .mypy_cache .ruff_cache .pytest_cache
