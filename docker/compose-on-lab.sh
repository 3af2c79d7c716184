#!/usr/bin/env bash
# Run docker/compose.yaml for real: Debian's docker-compose (1.29.2) against a lab host's dockerd
# (its socket reached through /proc/<host pid>/root: the compose client runs here, the containers in
# the host), with the images docker/build.sh made there (no registry). The lab's ETCD_DR_LAB_*
# environment; `etcd-dr lab up`, then `DOCKER="nsenter -t <pid> -n -m -u -p -- docker" bash
# docker/build.sh`, then this. HOST (default node2).
# `up`: postgres, the server on PostgreSQL with its work pool and receiver, the worker; then checks
# that the API answers (and refuses a caller without the basic auth), that a status run of the
# lab's cluster is picked by the worker and Completes (the row in PostgreSQL), that the receiver
# answers 401 without the token; then `down -v` (the throwaway database's volume too). Every
# request goes to the host's loopback (its network namespace), where compose publishes the ports.
set -euo pipefail
HOST=${HOST:-node2}
LAB=${ETCD_DR_LAB_DIR:?set the lab env (ETCD_DR_LAB_PREFIX, ETCD_DR_LAB_SUBNET, ETCD_DR_LAB_DIR)}
command -v docker-compose >/dev/null || { echo "compose-on-lab: apt-get install docker-compose (scripts/install.sh)" >&2; exit 2; }
cd "$(dirname "$0")/.."
pid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['hosts'][sys.argv[2]]['pid'])" "$LAB/lab.json" "$HOST")
export DOCKER_HOST=unix:///proc/$pid/root/run/docker.sock
in_net() { nsenter -t "$pid" -n -- "$@"; }  # this machine's programs, the host's network namespace
# /tmp: the same path in the host's mount namespace, so compose's bind mounts name real files there
work=$(mktemp -d /tmp/etcd-dr-compose-XXXXXX)
project=etcddr$(basename "$work" | tr -dc 'a-z0-9' | tail -c 6)
dc() { docker-compose -p "$project" -f "$work/compose.yaml" "$@"; }
t00=$(date +%s.%N)
since() { python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$1"; }
cleanup() {
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cp docker/compose.yaml "$work/"
# the inventories dir: the lab's cluster as <dir>/lab/inventory.yaml with its keys and certs beside it
mkdir -p "$work/clusters/lab" "$work/secrets"
cp -r "$LAB/inventory.yaml" "$LAB/keys" "$LAB/certs" "$LAB/lab.json" "$LAB/cluster.yml" "$LAB/cluster.rkestate" "$work/clusters/lab/"
cluster=$(awk '/^cluster:/ {print $2}' "$LAB/inventory.yaml")
gen() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }
pw=$(gen); token=$(gen); auth="etcd-dr:$(gen)"
echo "$pw" >"$work/secrets/db-password"
echo "postgres:5432:*:postgres:$pw" >"$work/secrets/pgpass"
echo "$token" >"$work/secrets/alert-token"
echo "$auth" >"$work/secrets/api-auth"
# compose (without swarm) bind-mounts secrets as they are: the postgres user (not root) reads the
# password at initdb; pgpass is read by root in the server (asyncpg wants it private)
chmod 0644 "$work/secrets/db-password"; chmod 0600 "$work/secrets/pgpass" "$work/secrets/alert-token" "$work/secrets/api-auth"
echo "compose-on-lab: $(docker-compose version --short), dockerd $(docker version --format '{{.Server.Version}}') on $HOST, project $project"
dc config -q
t0=$(date +%s.%N)
dc up -d 2>&1 | sed 's/^/  up: /'
echo "compose-on-lab: up -d returned in $(since "$t0") s"
api=http://127.0.0.1:4200/api
code() { in_net curl -s -o /dev/null -w '%{http_code}' "$@"; }
until [ "$(code -u "$auth" "$api/health")" = 200 ]; do
  [ "$(python3 -c "import sys,time; print(int(time.time()-float(sys.argv[1])))" "$t0")" -lt 400 ] \
    || { dc ps; dc logs --tail 40; exit 1; }
  sleep 2
done
echo "compose-on-lab: server's API answers in $(since "$t0") s after up"
dc ps
until dc logs server 2>/dev/null | grep -q 'UI: '; do sleep 2; done
echo "compose-on-lab: server printed its UI line in $(since "$t0") s"
echo "compose-on-lab: without basic auth: $(code -X POST "$api/deployments/filter" -H 'content-type: application/json' -d '{}'), with it: $(code -u "$auth" -X POST "$api/deployments/filter" -H 'content-type: application/json' -d '{}')"
echo "compose-on-lab: receiver without the token: $(code -X POST http://127.0.0.1:9095/alerts/alertmanager -H 'content-type: application/json' -d '{}'), with it (an empty body): $(code -X POST http://127.0.0.1:9095/alerts/alertmanager -H "authorization: Bearer $token" -H 'content-type: application/json' -d '{}')"
# one status run of the lab's cluster, created through the API; the worker container must run it
run=$(in_net python3 - "$api" "$auth" "$cluster" <<'EOF'
import base64, json, sys, urllib.request as u
api, auth, cluster = sys.argv[1:]
h = {"content-type": "application/json", "authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
def post(p, b): return json.load(u.urlopen(u.Request(api + p, json.dumps(b).encode(), h)))
dep = [d for d in post("/deployments/filter", {}) if d["name"] == "status"][0]
print(post("/deployments/" + dep["id"] + "/create_flow_run", {"parameters": {"cluster": cluster}})["id"])
EOF
)
t1=$(date +%s.%N)
state=
while :; do
  state=$(in_net python3 - "$api/flow_runs/$run" "$auth" <<'EOF'
import base64, json, sys, urllib.request as u
h = {"authorization": "Basic " + base64.b64encode(sys.argv[2].encode()).decode()}
print(json.load(u.urlopen(u.Request(sys.argv[1], headers=h)))["state"]["type"])
EOF
)
  case $state in COMPLETED|FAILED|CRASHED|CANCELLED) break ;; esac
  [ "$(python3 -c "import sys,time; print(int(time.time()-float(sys.argv[1])))" "$t1")" -lt 300 ] || break
  sleep 2
done
echo "compose-on-lab: status run $run: $state, $(since "$t1") s after it was created"
echo "compose-on-lab: worker log lines naming the run: $(dc logs worker 2>&1 | grep -c "$run" || true)"
dc logs worker 2>&1 | grep -E "quorum|voters|Finished in state" | tail -3 | sed 's/^/  worker: /'
echo "compose-on-lab: in PostgreSQL: $(dc exec -T postgres /usr/lib/postgresql/15/bin/psql -h /tmp -U postgres -d prefect -Atc "SELECT name || ' ' || state_type FROM flow_run WHERE id = '$run'")"
for s in "$pw" "$token" "${auth#*:}"; do
  ! dc logs 2>&1 | grep -qF "$s" || { echo "compose-on-lab: a secret in the containers' output" >&2; exit 1; }
done
echo "compose-on-lab: no secret in the containers' output"
[ "$state" = COMPLETED ] || { dc logs --tail 60 worker server; exit 1; }
t2=$(date +%s.%N)
dc down -v 2>&1 | sed 's/^/  down: /'
echo "compose-on-lab: down in $(since "$t2") s; left: $(docker ps -aq --filter "label=com.docker.compose.project=$project" | wc -l) containers"
echo "compose-on-lab: ok, $(since "$t00") s in all"
