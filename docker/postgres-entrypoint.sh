#!/bin/sh
# etcd-dr/postgres:15's command (Debian's postgresql-15): on an empty data dir, initdb with the
# password from $POSTGRES_PASSWORD_FILE (scram-sha-256 over TCP, trust on the container's own
# socket only) and the database `prefect`; then PostgreSQL in the foreground, as PID 1.
set -eu
D=/var/lib/postgresql/15/main
B=/usr/lib/postgresql/15/bin
if [ ! -s "$D/PG_VERSION" ]; then
  [ -r "${POSTGRES_PASSWORD_FILE:-}" ] || { echo "postgres: set POSTGRES_PASSWORD_FILE to a readable file" >&2; exit 2; }
  "$B/initdb" -D "$D" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$POSTGRES_PASSWORD_FILE" -E UTF8 >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$D/pg_hba.conf"
  "$B/postgres" -D "$D" -c listen_addresses= -k /tmp & pid=$!
  until "$B/psql" -h /tmp -U postgres -d postgres -qc "CREATE DATABASE prefect" 2>/dev/null; do
    kill -0 "$pid" || exit 1
    sleep 0.5
  done
  kill -INT "$pid"; wait "$pid" || true
fi
exec "$B/postgres" -D "$D" -c listen_addresses='*' -k /tmp
