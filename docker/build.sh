#!/usr/bin/env bash
# Build etcd-dr's images with no registry: the base image is made here from Debian's own archive
# (debootstrap, minbase) and `docker import`ed; the project and its Python dependencies go in as
# wheels built on this machine (pip wheel), so the image build needs no network (`--network none`:
# the lab hosts' dockerd has no bridge). Run from anywhere, as root; DOCKER_HOST (or `docker` in the
# right namespace) picks the engine. Environment: OUT (work dir, default /tmp/etcd-dr-docker),
# MIRROR (Debian mirror, default the one apt uses), TAG (default dev).
#   etcd-dr/debian-base:bookworm   python3, venv, openssh-client, etcdctl, ca-certificates
#   etcd-dr/postgres:15            the base + Debian's postgresql-15 (docker/postgres-entrypoint.sh)
#   etcd-dr/worker:$TAG            the project in /opt/etcd-dr/.venv; runs `prefect worker start`
#                                  (and, with another command, `etcd-dr server` or its receiver)
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a docker <<<"${DOCKER:-docker}"
OUT=${OUT:-/tmp/etcd-dr-docker}
TAG=${TAG:-dev}
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$OUT"
t0=$(date +%s)

if [ "${1:-}" != --worker-only ]; then
  command -v debootstrap >/dev/null || { echo "build.sh: apt-get install debootstrap first" >&2; exit 2; }
  root="$OUT/rootfs"
  if [ ! -x "$root/usr/bin/python3" ]; then
    rm -rf "$root.part"
    debootstrap --variant=minbase --include=python3,python3-venv,openssh-client,etcd-client,ca-certificates \
      bookworm "$root.part" "$MIRROR" >"$OUT/debootstrap.log" 2>&1
    # no apt lists or caches in the image
    rm -rf "$root.part"/var/lib/apt/lists/* "$root.part"/var/cache/apt/*.bin "$root.part"/var/cache/apt/archives/*.deb
    mv "$root.part" "$root"
  fi
  echo "build.sh: base rootfs $(du -sh "$root" | cut -f1) ($(( $(date +%s) - t0 )) s)"
  tar -C "$root" -c . | "${docker[@]}" import - etcd-dr/debian-base:bookworm >/dev/null
  echo "build.sh: imported etcd-dr/debian-base:bookworm"

  # PostgreSQL for docker/compose.yaml: Debian's package in a copy of the base (apt in a chroot;
  # no cluster made, no service started: the entrypoint makes one on first start)
  pg="$OUT/pgroot"
  if [ ! -x "$pg/usr/lib/postgresql/15/bin/postgres" ]; then
    rm -rf "$pg" && cp -a "$root" "$pg"
    cp /etc/resolv.conf "$pg/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$pg/usr/sbin/policy-rc.d" && chmod +x "$pg/usr/sbin/policy-rc.d"
    mkdir -p "$pg/etc/postgresql-common" && echo "create_main_cluster = false" >"$pg/etc/postgresql-common/createcluster.conf"
    chroot "$pg" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15' \
      >"$OUT/postgres-apt.log" 2>&1
    rm -rf "$pg"/var/lib/apt/lists/* "$pg"/var/cache/apt/*.bin "$pg"/var/cache/apt/archives/*.deb "$pg/usr/sbin/policy-rc.d"
  fi
  install -m 0755 docker/postgres-entrypoint.sh "$pg/usr/local/bin/postgres-entrypoint"
  mkdir -p "$pg/var/lib/postgresql/15/main" && chroot "$pg" chown -R postgres:postgres /var/lib/postgresql
  chmod 0700 "$pg/var/lib/postgresql/15/main"
  tar -C "$pg" -c . | "${docker[@]}" import --change 'USER postgres' --change 'EXPOSE 5432' \
    --change 'CMD ["/usr/local/bin/postgres-entrypoint"]' - etcd-dr/postgres:15 >/dev/null
  echo "build.sh: imported etcd-dr/postgres:15 ($(du -sh "$pg" | cut -f1))"
fi

# every wheel the project needs, built here (this machine's pip index); the image installs offline
rm -rf docker/wheels && mkdir -p docker/wheels
.venv/bin/pip wheel -q -w docker/wheels . >"$OUT/pip-wheel.log" 2>&1
# what the image's Python (Debian's 3.11.2) needs beyond this machine's: redis wants async-timeout
# below 3.11.3
.venv/bin/pip wheel -q -w docker/wheels "async-timeout>=4.0.3" >>"$OUT/pip-wheel.log" 2>&1
echo "build.sh: $(ls docker/wheels | wc -l) wheels, $(du -sh docker/wheels | cut -f1)"
DOCKER_BUILDKIT=0 "${docker[@]}" build -q --network none -f "$PWD/docker/Dockerfile" -t "etcd-dr/worker:$TAG" "$PWD" >/dev/null
rm -rf docker/wheels
echo "build.sh: built etcd-dr/worker:$TAG in $(( $(date +%s) - t0 )) s"
