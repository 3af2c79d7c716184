#!/usr/bin/env bash
# The main job on a fresh machine: install, build the lab (the source incident's five hosts, RKE-style
# etcd on master1..3), look at it, lose two masters, look again, bring them back, take the lab down.
# Until the recovery flows land (issue "Recovery flows"), this rehearses the observation half of an
# incident: what `etcd-dr status` tells the operator at 3 a.m.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" PREFECT_SERVER_ANALYTICS_ENABLED=false
trap 'etcd-dr lab down >/dev/null 2>&1 || true' EXIT

etcd-dr lab up "$@"
echo "== healthy cluster"
etcd-dr status
echo "== power loss: master1 and master2"
etcd-dr lab power master1 off
etcd-dr lab power master2 off
etcd-dr status && { echo "rehearse: status should have said quorum lost" >&2; exit 1; } || true
echo "== power back on"
etcd-dr lab power master1 on
etcd-dr lab power master2 on
for _ in $(seq 60); do etcd-dr status --json >/dev/null && break; sleep 1; done
etcd-dr status
echo "== audit trail"
etcd-dr audit verify
