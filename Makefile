# The README's commands. Every target bootstraps .venv itself; only python3 (3.11+), make
# and git are needed on the machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
N ?= 1000
USERS ?= 32
HOST ?= http://127.0.0.1:8000
DEV_API_KEY ?= dev-key

.PHONY: dev test lint typecheck pytest migrate load replay-dlq bench bench-gate agents clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## dev: migrate, start the demo agents and the router on 127.0.0.1:8000 with reload.
dev: $(STAMP)
	API_KEY=$${API_KEY:-$(DEV_API_KEY)} LOG_FORMAT=$${LOG_FORMAT:-console} $(BIN)/router migrate
	@set -m; $(BIN)/router agents & agents=$$!; \
	trap 'kill $$agents 2>/dev/null; wait $$agents 2>/dev/null' EXIT INT TERM; \
	API_KEY=$${API_KEY:-$(DEV_API_KEY)} LOG_FORMAT=$${LOG_FORMAT:-console} \
	  $(BIN)/router serve --host 127.0.0.1 --port 8000 --reload

## test: lint, types, the whole suite, then the quick benchmark gate.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff format --check router tests migrations
	$(BIN)/ruff check router tests migrations

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

migrate: $(STAMP)
	$(BIN)/router migrate

agents: $(STAMP)
	$(BIN)/router agents

clean:
	rm -rf $(VENV) .router .pytest_cache .mypy_cache .ruff_cache
