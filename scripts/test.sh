#!/usr/bin/env bash
# The test suite on a fresh machine: install, lint, then every test (unit, real etcd, real lab,
# Prefect flows). Extra arguments go to pytest. `scripts/test.sh --quick` is the quick loop: every
# test but the lab's, the deployment recipe's and `etcd-dr server`'s (each starts its own Prefect
# server and migrates it), on five workers (they wait more than they compute), one test file per
# worker at a time, the longest files first (tests/file_order.py). The whole suite runs on two
# workers, one test file each at a time, each worker with a lab of its own (tests/lab/conftest.py:
# prefix and subnet by worker), in xdist's order.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME="${PREFECT_HOME:-$PWD/.cache/prefect}"
# pytest keeps the test modules it rewrote (their asserts) only where bytecode may be written:
# under PYTHONDONTWRITEBYTECODE=1 (set on this kind of machine) every xdist worker rewrote all of
# them at every start, 3.5 s of CPU each (README "Set up and run")
unset PYTHONDONTWRITEBYTECODE
mkdir -p "$PREFECT_HOME"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "${1:-}" = --quick ]; then shift; set -- -m "not lab and not deploy and not server and not browser" -n 5 --dist loadfile --longest-first "$@"; fi
[ $# -gt 0 ] || set -- -n 2 --dist loadfile
exec .venv/bin/pytest "$@"
