#!/usr/bin/env bash
# Install what etcd-dr needs on a fresh Debian 12 machine (as root): the programs the lab runs
# (etcd, sshd, dockerd, iproute2) from Debian's packages, and the project in a virtualenv at .venv.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (the lab needs network namespaces)" >&2; exit 2; }

need=()
for pair in etcd:etcd-server etcdctl:etcd-client sshd:openssh-server dockerd:docker.io ip:iproute2 nsenter:util-linux sudo:sudo openssl:openssl; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# GNU time (peak RSS in benchmarks/): `command -v time` finds the shell keyword, so test the file
[ -x /usr/bin/time ] || need+=(time)
# the lab's alert chain (etcd_dr/lab/alerting.py) starts these itself, with its own config and data
# dirs on loopback ports; their Debian services must not run (policy-rc.d below, disabled after)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
# the lab's stand-ins (rke, kube-apiserver) run on the hosts with the system's python3, PyYAML and
# cryptography from Debian's packages (etcd_dr/lab/standins/)
/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
/usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
# the console's browser test drives Debian's chromium through playwright (no browser download)
[ -x /usr/bin/chromium ] || need+=(chromium)
# `etcd-dr server --database postgresql+asyncpg://...` is tested against a PostgreSQL the test starts
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
# docker/build.sh makes the images' base from Debian's archive (no registry is reachable)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# docker/compose.yaml is run with Debian's docker-compose (1.29.2) against a lab host's dockerd
[ -x /usr/bin/docker-compose ] || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${need[*]}"
  apt-get update -qq
  # policy-rc.d: do not start the packages' own services (etcd on 2379, dockerd with iptables in the
  # root namespace, prometheus on 9090): the lab starts its own, inside its hosts or as its children.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service docker.service docker.socket postgresql.service \
    prometheus.service prometheus-alertmanager.service prometheus-node-exporter.service >/dev/null 2>&1 || true
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$py" -m venv .venv; fi
stamp=.venv/.etcd-dr-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "install.sh: pip install -e .[dev] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
# The project's own bytecode. pip compiles a wheel's modules when it installs them (the image in
# docker/ does), but not an editable install's; Python then writes them at the first import, unless
# PYTHONDONTWRITEBYTECODE is set, as in many CI and container environments (this machine's too):
# every command then compiles etcd-dr's modules from source at its start (`--help` 0.65 s instead
# of 0.49 s; README "Measured", issue 14). compileall skips what is up to date.
.venv/bin/python -m compileall -q etcd_dr flows tasks blocks console >/dev/null
