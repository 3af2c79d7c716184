#!/usr/bin/env bash
# The hand-written baseline for `etcd-dr recover` when every voter is lost and only the learner
# survives (benchmarks/recover_rto.py): what a competent operator types at 3 a.m. on the learner's
# host with NOTES.md's recipe (--force-new-cluster on a learner panics: "removed all voters").
# Minimal and correct, nothing more:
#   stop the learner gracefully (it flushes its db), rename its container (restart=no, or it returns
#   at boot), copy member/snap/db, `snapshot restore --skip-hash-check` into a new one-member cluster
#   (in a one-off container of the member's own image, as etcd-dr does: a 3.5 learner needs its
#   etcdutl), move the old data dir aside and the restored one in, start it from the same image with
#   itself as the only member (restart=always), wait for a leader, one write.
#
#   SSH="ssh -i KEY -o UserKnownHostsFile=KH" benchmarks/runbook_all_voters_lost.sh root@10.231.23.21
#
# Env: SSH (the ssh command, default `ssh`), DATA_DIR (the member's data dir on the host, RKE's
# /var/lib/etcd), CONTAINER (etcd), ETCDCTL (etcdctl on the host), RESTORE_TOOL (etcdutl for a 3.5
# member; etcdctl for 3.4), beside etcd in the image. Everything else (image, entrypoint, mounts,
# environment, etcd's flags and certificates) comes from `docker inspect`.
# Prints each step's name and elapsed time to stderr; exit 0 once a write was accepted.
set -euo pipefail
target=${1:?usage: runbook_all_voters_lost.sh USER@HOST}

# One ssh session: the operator is logged in on the learner's host and types the rest there.
# ssh joins its words into one command line for the remote shell: quote each
remote_args=$(printf '%q ' "${DATA_DIR:-/var/lib/etcd}" "${CONTAINER:-etcd}" "${ETCDCTL:-etcdctl}" \
  "${RESTORE_TOOL:-etcdutl}")
exec ${SSH:-ssh} "$target" "bash -s -- $remote_args" <<'REMOTE'
set -euo pipefail
data=$1 ctr=$2 etcdctl=$3 tool=$4
t0=${EPOCHREALTIME/./}
step() {  # elapsed since the script's start, no fork
  local us=$((${EPOCHREALTIME/./} - t0))
  printf '%3d.%02d s  %s\n' $((us / 1000000)) $((us % 1000000 / 10000)) "$*" >&2
}
ts=$(date -u +%Y%m%dT%H%M%SZ)
work=$data.restore-$ts

docker stop "$ctr" >/dev/null
step stop
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

docker rename "$ctr" "$ctr-old-$ts"
docker update --restart=no "$ctr-old-$ts" >/dev/null
step retire
mkdir -p -m 700 "$work"
cp "$data/member/snap/db" "$work/db"
step copy-db
out=$(docker run --rm --network=none -v "$work:$work" -e ETCDCTL_API=3 --entrypoint "${entry%/*}/$tool" \
  "$image" snapshot restore "$work/db" --skip-hash-check --name "$name" --initial-cluster "$name=$peer" \
  --initial-advertise-peer-urls "$peer" --data-dir "$work/data" 2>&1) || { echo "$out" >&2; exit 1; }
step restore
mv "$data" "$data.bak-$ts"
mv "$work/data" "$data"
step swap
docker run -d --name "$ctr" --network=host --restart=always "${opts[@]}" --entrypoint "$entry" "$image" \
  "${args[@]}" >/dev/null
step start
end=$((SECONDS + 90))
until ctl endpoint health >/dev/null 2>&1; do  # a linearizable read: answers once there is a leader
  ((SECONDS < end)) || { echo "no leader after 90 s" >&2; exit 1; }
  sleep 0.1
done
step leader
ctl put /runbook/recovered "$ts" >/dev/null
step write
REMOTE
