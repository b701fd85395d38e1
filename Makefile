# sipcloud: the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)

.PHONY: run stop test lint format services-run services-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# Debian packages and services first: they include python3-venv, which the venv needs.
services-run:
	platform/bin/ensure-services run

services-test:
	platform/bin/ensure-services test

run: services-run $(STAMP)
	platform/bin/start-platform

stop:
	platform/bin/stop-platform

test: services-test $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
