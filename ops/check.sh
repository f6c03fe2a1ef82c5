#!/usr/bin/env bash
# Static checks of the ops files: Prometheus config, rules and their unit tests (promtool),
# and the compose file. Run from anywhere: `ops/check.sh`.
#
# For the lead, in .ci/run before `make test` (Debian's package brings prometheus + promtool;
# the real-Prometheus test in tests/integration/test_ops.py needs it too):
#   if ! command -v promtool >/dev/null 2>&1; then
#     apt-get update && apt-get install -y --no-install-recommends prometheus
#   fi
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v promtool >/dev/null 2>&1; then
  promtool check config ops/prometheus/prometheus.yml
  promtool check rules ops/prometheus/rules/*.rules.yml
  promtool test rules ops/prometheus/rules/*.test.yml
else
  echo "ops/check.sh: promtool not found, Prometheus checks skipped (apt-get install prometheus)"
fi

# Compose v1 (docker-compose) or v2 (docker compose); only the file is checked, no engine needed.
if command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
  docker-compose -f docker-compose.yml config -q
  echo "docker-compose.yml: valid (docker-compose config)"
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q
  echo "docker-compose.yml: valid (docker compose config)"
else
  echo "ops/check.sh: neither docker-compose nor docker compose found, compose check skipped"
fi
