#!/usr/bin/env bash
# Run the recover deployment without `etcd-dr server` (README "Run the recover deployment"): a
# Prefect server on loopback, the work pool, the inventory block, the deployment, a worker, one run.
# Environment: INVENTORY (an inventory file, required), BLOCK (block name, default recover-demo),
# PORT (4200), RUN_DIR (./etcd-dr-prefect: logs and PIDs of the server and the worker), PARAMS (the
# run's parameters as JSON, default {"plan_only": true}). tests/flows/test_deploy_recipe.py runs it.
set -euo pipefail
: "${INVENTORY:?set INVENTORY to an inventory file}"
INVENTORY="$(realpath "$INVENTORY")"
export ETCD_DR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # where runs find flows/
export ETCD_DR_INVENTORY_BLOCK="${BLOCK:-recover-demo}"
export PREFECT_API_URL="http://127.0.0.1:${PORT:-4200}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PATH="$ETCD_DR_HOME/.venv/bin:$PATH"
RUN_DIR="${RUN_DIR:-$PWD/etcd-dr-prefect}"
mkdir -p "$RUN_DIR"

# 1. the server, on loopback only: Prefect OSS has no authentication (README "What the Prefect
#    server exposes"); stop it with: kill -- -$(cat $RUN_DIR/server.pid)
setsid prefect server start --host 127.0.0.1 --port "${PORT:-4200}" >"$RUN_DIR/server.log" 2>&1 &
echo $! >"$RUN_DIR/server.pid"
until python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1])' "$PREFECT_API_URL/health" \
  2>/dev/null; do sleep 1; done

# 2. the work pool every deployment in deployments/prefect.yaml names
prefect work-pool create etcd-dr --type process --overwrite

# 3. the inventory as a block: paths relative to the inventory's directory (base_dir); the SSH key
#    stays in a file on this machine (ssh_key=False), not in the server's database
python -c 'import sys; from blocks.inventory import ClusterInventory as C
C.from_inventory_file(sys.argv[1], ssh_key=False).save(sys.argv[2], overwrite=True)' \
  "$INVENTORY" "$ETCD_DR_INVENTORY_BLOCK"

# 4. the deployment, from the repository (its build step creates the limit recover-<cluster>)
(cd "$ETCD_DR_HOME" && prefect --no-prompt deploy --prefect-file deployments/prefect.yaml --name recover)

# 5. a worker: its runs start in $ETCD_DR_HOME (the deployment's pull step), so it needs that variable
setsid prefect worker start --pool etcd-dr >"$RUN_DIR/worker.log" 2>&1 &
echo $! >"$RUN_DIR/worker.pid"

# 6. one run (plan only by default); a real recovery pauses for approval in the UI at
#    http://127.0.0.1:${PORT:-4200}
prefect deployment run etcd-recover/recover --params "${PARAMS:-{\"plan_only\": true\}}" --watch
