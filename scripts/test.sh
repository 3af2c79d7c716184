#!/usr/bin/env bash
# The test suite on a fresh machine: install, lint, then every test (unit, real etcd, real lab,
# Prefect flows). Extra arguments go to pytest, e.g. `scripts/test.sh -m "not lab"` for the quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME="${PREFECT_HOME:-$PWD/.cache/prefect}"
mkdir -p "$PREFECT_HOME"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
