#!/usr/bin/env bash
# Run the image on a lab host's dockerd (the lab's ETCD_DR_LAB_* environment; `etcd-dr lab up`
# first, then docker/build.sh with DOCKER pointing at that host): `etcd-dr server` in one container
# (SQLite, --work-pool etcd-dr, loopback of the host's network namespace), a worker in another, the
# lab's inventory mounted in both; one status run, created through the API, must be run by the
# worker container and Complete. The containers are removed at the end. HOST (default node2).
# DB=postgres: the server on PostgreSQL (etcd-dr/postgres:15, a third container, as compose.yaml),
# its password in a file given to both as a mount, never on a command line.
set -euo pipefail
HOST=${HOST:-node2}
LAB=${ETCD_DR_LAB_DIR:?set the lab env (ETCD_DR_LAB_PREFIX, ETCD_DR_LAB_SUBNET, ETCD_DR_LAB_DIR)}
pid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['hosts'][sys.argv[2]]['pid'])" "$LAB/lab.json" "$HOST")
in_host() { nsenter -t "$pid" -n -m -u -p -- "$@"; }
api=http://127.0.0.1:4200/api
secrets=
cleanup() {
  in_host docker rm -f etcd-dr-server etcd-dr-worker etcd-dr-postgres >/dev/null 2>&1 || true
  [ -z "$secrets" ] || rm -rf "$secrets"
}
trap cleanup EXIT
cleanup
secrets=$(mktemp -d /tmp/etcd-dr-try-XXXXXX)
mount=(-v "$LAB:/etc/etcd-dr/clusters/lab")  # <dir>/<cluster>/inventory.yaml, its keys beside it
t0=$(date +%s)
db=()
if [ "${DB:-}" = postgres ]; then
  python3 -c 'import secrets; print(secrets.token_urlsafe(16))' >"$secrets/db-password"
  echo "127.0.0.1:5432:*:postgres:$(cat "$secrets/db-password")" >"$secrets/pgpass"
  chmod 0644 "$secrets/db-password"; chmod 0600 "$secrets/pgpass"  # the postgres user reads the first
  in_host docker run -d --name etcd-dr-postgres --network host -v "$secrets/db-password:/run/secrets/db-password:ro" \
    -e POSTGRES_PASSWORD_FILE=/run/secrets/db-password etcd-dr/postgres:15 >/dev/null
  db=(--database postgresql+asyncpg://postgres@127.0.0.1:5432/prefect)
  mount+=(-v "$secrets/pgpass:/run/secrets/pgpass:ro" -e PGPASSFILE=/run/secrets/pgpass)
  until in_host docker exec etcd-dr-postgres /usr/lib/postgresql/15/bin/psql -h /tmp -U postgres -d prefect -qc 'select 1' >/dev/null 2>&1; do
    [ $(( $(date +%s) - t0 )) -lt 120 ] || { in_host docker logs etcd-dr-postgres; exit 1; }
    sleep 1
  done
  echo "try-on-lab: postgres container ready in $(( $(date +%s) - t0 )) s"
fi
in_host docker run -d --name etcd-dr-server --network host "${mount[@]}" etcd-dr/worker:dev \
  etcd-dr server --inventories /etc/etcd-dr/clusters --data /var/lib/etcd-dr/server --work-pool etcd-dr \
  --no-receiver "${db[@]}" >/dev/null
until in_host docker logs etcd-dr-server 2>&1 | grep -q '^UI: '; do
  in_host docker inspect -f '{{.State.Running}}' etcd-dr-server | grep -q true \
    || { in_host docker logs etcd-dr-server; exit 1; }
  [ $(( $(date +%s) - t0 )) -lt 300 ] || { echo "server not up in 300 s" >&2; exit 1; }
  sleep 2
done
echo "try-on-lab: server container up in $(( $(date +%s) - t0 )) s"
in_host docker run -d --name etcd-dr-worker --network host "${mount[@]}" \
  -e PREFECT_API_URL=$api etcd-dr/worker:dev >/dev/null
t1=$(date +%s)
run=$(in_host docker exec etcd-dr-server python3 -c '
import json, sys, urllib.request as u
api = sys.argv[1]
def post(p, b): return json.load(u.urlopen(u.Request(api + p, json.dumps(b).encode(), {"content-type": "application/json"})))
dep = [d for d in post("/deployments/filter", {}) if d["name"] == "status"][0]
print(post("/deployments/" + dep["id"] + "/create_flow_run", {"parameters": {"cluster": sys.argv[2]}})["id"])
' $api "$(awk '/^cluster:/ {print $2}' "$LAB/inventory.yaml")")
while :; do
  state=$(in_host docker exec etcd-dr-server python3 -c '
import json, sys, urllib.request as u
print(json.load(u.urlopen(sys.argv[1] + "/flow_runs/" + sys.argv[2]))["state"]["type"])' $api "$run")
  case $state in COMPLETED|FAILED|CRASHED|CANCELLED) break ;; esac
  [ $(( $(date +%s) - t1 )) -lt 300 ] || { echo "run $run still $state after 300 s" >&2; break; }
  sleep 2
done
echo "try-on-lab: status run $run: $state, $(( $(date +%s) - t1 )) s after the worker container started"
in_host docker logs etcd-dr-worker 2>&1 | grep -c "$run" | sed 's/^/try-on-lab: worker log lines naming the run: /'
[ "$state" = COMPLETED ] || { in_host docker logs etcd-dr-worker 2>&1 | tail -40; exit 1; }
if [ "${DB:-}" = postgres ]; then
  echo "try-on-lab: in PostgreSQL: $(in_host docker exec etcd-dr-postgres /usr/lib/postgresql/15/bin/psql -h /tmp -U postgres -d prefect -Atc "SELECT name || ' ' || state_type FROM flow_run WHERE id = '$run'")"
  ! in_host docker logs etcd-dr-server 2>&1 | grep -qF "$(cat "$secrets/db-password")" || { echo "password in the server's output" >&2; exit 1; }
fi
