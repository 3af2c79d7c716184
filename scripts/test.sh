#!/usr/bin/env bash
# The test suite on a fresh machine: install, lint, then every test (unit, real etcd, real lab,
# Prefect flows). Extra arguments go to pytest. `scripts/test.sh --quick` is the quick loop: every
# test but the lab's and the deployment recipe's, on three workers (they wait more than they compute),
# one test file per worker at a time (under a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME="${PREFECT_HOME:-$PWD/.cache/prefect}"
mkdir -p "$PREFECT_HOME"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "${1:-}" = --quick ]; then shift; set -- -m "not lab and not deploy" -n 3 --dist loadfile "$@"; fi
exec .venv/bin/pytest "$@"
