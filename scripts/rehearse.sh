#!/usr/bin/env bash
# The main job on a fresh machine: install, then replay the source incident on the built-in lab with
# `etcd-dr rehearse --scenario incident`: build it (master1..3 on etcd 3.4, node1 a 3.5 learner in
# the "second data center", node2 a worker), write a data set, keep a writer writing, put kubelet on
# node2 into its sandbox loop, cut the power of master1, master2 and master3, recover from node1's
# learner (`recover --yes`), bring Kubernetes back through external etcd (`restore-kubernetes
# --yes`), clean kubelet's loop (`hosts kubelet-cleanup --yes`), power the masters on and rejoin
# them one by one, find master1's certificate dated ahead (`hosts clock`) and renew it (`cert renew
# --yes`); report each phase, the RTO to etcd writes and to a ready API, the RPO and what was
# approved; then verify the audit trail and take the lab down. Arguments go to `etcd-dr rehearse`
# (e.g. --scenario masters-lost, --scenario all-lost, --json); exit 1 when the rehearsal is not ok.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" PREFECT_SERVER_ANALYTICS_ENABLED=false
trap 'etcd-dr lab down >/dev/null 2>&1 || true' EXIT
step() { printf '\n== %s\n' "$*" >&2; }

args=("$@")
case " $* " in *" --scenario "* | *" --scenario="*) ;; *) args=(--scenario incident "$@") ;; esac

step "rehearse ${args[*]}: lab, data set, writer, the fault, recovery, RTO/RPO, rejoin"
rc=0
etcd-dr rehearse --keep-lab "${args[@]}" || rc=$?

step "audit trail"
etcd-dr audit verify
exit "$rc"
