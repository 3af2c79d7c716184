#!/usr/bin/env bash
# The hand-written baseline for `etcd-dr recover` when the masters are lost (benchmarks/recover_rto.py):
# what a competent operator types at 3 a.m. on the surviving master with NOTES.md's recipe, knowing
# which host survives and that the others are dead. Minimal and correct, nothing more:
#   kill etcd (the literal runbook's `docker kill`: a `docker stop` of a leader whose peers are gone
#   stalls), keep a copy of the data dir, rename the old container (restart=no, or it returns at
#   boot), run a copy of it once with --force-new-cluster and itself as the only member, wait for a
#   leader, recreate it without the flag (restart=always), wait, one write.
#
#   SSH="ssh -i KEY -o UserKnownHostsFile=KH" benchmarks/runbook_masters_lost.sh root@10.231.23.13
#
# Env: SSH (the ssh command, default `ssh`), DATA_DIR (the member's data dir on the host, RKE's
# /var/lib/etcd), CONTAINER (etcd), ETCDCTL (etcdctl on the host), FORCED_FLAGS (more flags for the
# forced run only; default none: the literal runbook). Everything else (image, entrypoint, mounts,
# environment, etcd's flags and certificates) comes from `docker inspect`.
# Prints each step's name and elapsed time to stderr; exit 0 once a write was accepted.
set -euo pipefail
target=${1:?usage: runbook_masters_lost.sh USER@HOST}

# One ssh session: the operator is logged in on the survivor and types the rest there.
# ssh joins its words into one command line for the remote shell: quote each (an empty one too)
remote_args=$(printf '%q ' "${DATA_DIR:-/var/lib/etcd}" "${CONTAINER:-etcd}" "${ETCDCTL:-etcdctl}" \
  "${FORCED_FLAGS:-}")
exec ${SSH:-ssh} "$target" "bash -s -- $remote_args" <<'REMOTE'
set -euo pipefail
data=$1 ctr=$2 etcdctl=$3
read -ra forced_flags <<<"$4"
t0=${EPOCHREALTIME/./}
step() {  # elapsed since the script's start, no fork
  local us=$((${EPOCHREALTIME/./} - t0))
  printf '%3d.%02d s  %s\n' $((us / 1000000)) $((us % 1000000 / 10000)) "$*" >&2
}
ts=$(date -u +%Y%m%dT%H%M%SZ)

docker kill "$ctr" >/dev/null
step kill
# the old container's run config, one inspect: image, entrypoint, then -v/-e lines, then etcd's args
mapfile -t spec < <(docker inspect -f '{{.Config.Image}}{{println}}{{.Path}}{{println}}{{range .HostConfig.Binds}}-v={{.}}{{println}}{{end}}{{range .Config.Env}}-e={{.}}{{println}}{{end}}{{range .Args}}{{.}}{{println}}{{end}}' "$ctr")
image=${spec[0]} entry=${spec[1]}
opts=() args=()
for a in "${spec[@]:2}"; do
  case $a in
    -v=* | -e=*) opts+=("${a:0:2}" "${a:3}") ;;
    --initial-cluster=* | --initial-cluster-state=* | '') ;;  # replaced below; '' is inspect's last line
    *) args+=("$a") ;;
  esac
  case $a in
    --name=*) name=${a#*=} ;;
    --initial-advertise-peer-urls=*) peer=${a#*=} ;;
    --advertise-client-urls=*) ep=${a#*=} ;;
    --trusted-ca-file=*) ca=${a#*=} ;;
    --cert-file=*) cert=${a#*=} ;;
    --key-file=*) key=${a#*=} ;;
  esac
done
args+=("--initial-cluster=$name=$peer" --initial-cluster-state=new)
ctl() { "$etcdctl" --endpoints="$ep" --cacert="$ca" --cert="$cert" --key="$key" --dial-timeout=1s --command-timeout=1s "$@"; }
wait_leader() {  # endpoint health is a linearizable read: it answers once there is a leader
  local end=$((SECONDS + 90))
  until ctl endpoint health >/dev/null 2>&1; do
    ((SECONDS < end)) || { echo "no leader after 90 s" >&2; exit 1; }
    sleep 0.1
  done
}
run() { docker run -d --name "$ctr" --network=host "$@" >/dev/null; }

cp -a "$data" "$data.bak-$ts"
step backup
docker rename "$ctr" "$ctr-old-$ts"
docker update --restart=no "$ctr-old-$ts" >/dev/null
step retire
run --restart=no "${opts[@]}" --entrypoint "$entry" "$image" "${args[@]}" --force-new-cluster "${forced_flags[@]}"
step forced-start
wait_leader
step forced-leader
docker stop "$ctr" >/dev/null
docker rm "$ctr" >/dev/null
run --restart=always "${opts[@]}" --entrypoint "$entry" "$image" "${args[@]}"
step recreate
wait_leader
step leader
ctl put /runbook/recovered "$ts" >/dev/null
step write
REMOTE
