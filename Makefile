# The README's commands. Every target bootstraps .venv itself; only python3 (3.11+), make
# and git are needed on the machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
N ?= 1000
USERS ?= 32
RATE ?= 200
DURATION ?= 20
HOST ?= http://127.0.0.1:8000
DEV_API_KEY ?= dev-key

.PHONY: dev db-stop test lint typecheck ops-check pytest migrate load load-locust capacity load-faults replay-dlq bench bench-balance bench-gate agents clean chaos

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## dev: migrate, start the demo agents and the router on 127.0.0.1:8000 with reload (of the
## code and the routing table). Everything stays in make's process group, so a signal to the
## group (Ctrl-C, an IDE's stop button, timeout) stops it all; the embedded PostgreSQL keeps
## running for the next start: `make db-stop` stops it.
dev: $(STAMP)
	API_KEY=$${API_KEY:-$(DEV_API_KEY)} LOG_FORMAT=$${LOG_FORMAT:-console} $(BIN)/router migrate
	@$(BIN)/router agents & agents=$$!; \
	trap 'kill $$agents 2>/dev/null; wait $$agents 2>/dev/null' EXIT INT TERM; \
	API_KEY=$${API_KEY:-$(DEV_API_KEY)} LOG_FORMAT=$${LOG_FORMAT:-console} \
	  $(BIN)/router serve --host 127.0.0.1 --port 8000 --reload

## db-stop: stop the embedded PostgreSQL (under .router/) that make dev and make test leave up.
db-stop: $(STAMP)
	$(BIN)/router db-stop

## test: lint, types, the ops checks, the whole suite, then the quick performance gate.
test: $(STAMP) lint typecheck ops-check pytest bench-gate

lint: $(STAMP)
	$(BIN)/ruff format --check router tests migrations benches loadtest chaos
	$(BIN)/ruff check router tests migrations benches loadtest chaos

## ops-check: promtool on the Prometheus config and rules, compose file validation.
ops-check:
	ops/check.sh

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

migrate: $(STAMP)
	$(BIN)/router migrate

## replay-dlq: replay the oldest pending DLQ entries (router replay-dlq); a JSON summary line.
replay-dlq: $(STAMP)
	$(BIN)/router replay-dlq

agents: $(STAMP)
	$(BIN)/router agents

clean:
	rm -rf $(VENV) .router .pytest_cache .mypy_cache .ruff_cache

## load: open loop, RATE signals/s for DURATION s at HOST (make dev's router): p50/p95/p99,
## errors and the SLO verdict (p50 <= 5 ms, p99 <= 25 ms); exit 1 on FAIL.
load: $(STAMP)
	API_KEY=$${API_KEY:-$(DEV_API_KEY)} $(BIN)/python -m loadtest.open_loop --host $(HOST) \
	  --rate $(RATE) --duration $(DURATION)

## load-locust: the same mix from Locust's closed-loop users (USERS of them, N signals).
load-locust: $(STAMP)
	API_KEY=$${API_KEY:-$(DEV_API_KEY)} $(BIN)/locust -f loadtest/locustfile.py --headless \
	  --users $(USERS) --spawn-rate $(USERS) --host $(HOST) --signals $(N) \
	  --only-summary --loglevel WARNING

## capacity: capacity at SLO for the agent direct, the contract floor and the router with 1 and 2 workers.
capacity: $(STAMP)
	$(BIN)/python -m loadtest.capacity

## load-faults: the same mix against a stack of its own whose agents fail 30 % of attempts, then
## the hung-agent scenario: no fault and one agent hung, side by side (loadtest/hung.py).
load-faults: $(STAMP)
	@status=0; $(BIN)/python -m loadtest.faults --signals $(N) --users $(USERS) || status=$$?; \
	$(BIN)/python -m loadtest.hung || status=$$?; exit $$status

## chaos: the fault suite, N passes over every fault (make chaos N=5); exit 1 on a violation.
chaos: $(STAMP)
	$(BIN)/python -m chaos --passes $(if $(filter command line,$(origin N)),$(N),1)

## bench: micro benches, the full end-to-end gate and its self-test; figures in .router/bench.json.
bench: $(STAMP)
	@mkdir -p .router
	$(BIN)/pytest benches -q -s --benchmark-enable --benchmark-json .router/bench.json \
	  --benchmark-columns min,median,mean,stddev,rounds

## bench-balance: replicas A/B, least_latency vs round_robin with one replica slowed halfway.
bench-balance: $(STAMP)
	$(BIN)/python -m benches.bench_balance --plot docs/balance_ab.png

## bench-gate: the quick end-to-end gate (well under 2 minutes); exit 1 on FAIL.
bench-gate: $(STAMP)
	$(BIN)/python -m benches.gate
