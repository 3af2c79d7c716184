#!/usr/bin/env bash
# The main job on a fresh machine: install, then rehearse the source incident on the built-in lab
# with `etcd-dr rehearse`: build it (master1..3 on etcd 3.4, node1 a 3.5 learner in the "second
# data center"), write a data set, keep a writer writing, cut the power of master1 and master2,
# recover on master3 with `etcd-dr recover --yes`, check every acknowledged write against the
# writer's log (RPO) and time the outage (RTO), power the masters back on and rejoin them, then
# verify the audit trail and take the lab down. Arguments go to `etcd-dr rehearse`
# (e.g. --scenario all-voters-lost, --scenario all-lost, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" PREFECT_SERVER_ANALYTICS_ENABLED=false
trap 'etcd-dr lab down >/dev/null 2>&1 || true' EXIT
step() { printf '\n== %s\n' "$*" >&2; }

step "rehearse: lab, data set, writer, power loss, recovery, RTO/RPO, rejoin"
rc=0
etcd-dr rehearse --keep-lab "$@" || rc=$?

step "audit trail"
etcd-dr audit verify
exit "$rc"
