# sipcloud: the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)

# Compiled translation catalogues (.mo), made from the .po files in locale/ and never committed.
CATALOGUES := $(patsubst %.po,%.mo,$(wildcard locale/*/LC_MESSAGES/django.po))

# The engine's hot modules compiled with mypyc (sipnodes/engine/compiled.py), rebuilt when a
# source changes; until then the worker runs the Python sources, never a stale build.
ENGINE_BUILD := build/engine/sources.sha256

.PHONY: run stop test lint format services-run services-test messages engine

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

# What `manage.py compilemessages` runs, file by file, only for catalogues that changed.
locale/%.mo: locale/%.po
	msgfmt --check-format -o $@ $<

messages: $(CATALOGUES)

$(ENGINE_BUILD): $(STAMP) $(wildcard sipnodes/engine/*.py) platform/bin/compile-engine
	$(BIN)/python platform/bin/compile-engine

engine: $(ENGINE_BUILD)

run: services-run $(STAMP) messages engine
	platform/bin/start-platform

stop:
	platform/bin/stop-platform

test: services-test $(STAMP) lint messages engine
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
