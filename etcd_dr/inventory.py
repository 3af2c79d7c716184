"""The cluster as data: hosts, roles, how etcd runs, where its certificates are, timings.

An inventory is a YAML file (format in README.md, "Inventory"). It is validated up front: every
problem is reported with its path and the fix (`hosts[2].address: '10.0.0' is not an IP address or
host name`), and nothing is contacted while loading. Relative file paths resolve against the
directory of the inventory file.

    cluster: lab                    # a name: audit records, locks and snapshots carry it
    rehearsal: true                 # fault injection is refused unless true
    audit_log: audit.jsonl          # append-only, hash-chained (etcd_dr.audit)
    ssh:
      user: root
      port: 22
      key_file: keys/id_ed25519     # private key (never logged)
      known_hosts: keys/known_hosts # strict host-key checking, never auto-added
      connect_timeout: 3            # seconds
      command_timeout: 60
      keepalive: 5
      sudo: false
    etcd:
      runtime: docker               # docker (RKE: a container) | process
      container: etcd               # docker: the container's name
      image: lab/etcd:3.4.23        # docker: image for members etcd-dr starts (optional)
      binary: /usr/bin/etcd         # process: the etcd binary on the host
      data_dir: /var/lib/etcd       # on the host
      client_port: 2379
      peer_port: 2380
      heartbeat_interval: 500       # ms, RKE's
      election_timeout: 5000        # ms, RKE's
      cert_dir: /etc/kubernetes/ssl # on each host: kube-ca.pem, kube-etcd-<ip-dashed>.pem, ...-key.pem
      client:                       # what etcd-dr itself uses to reach etcd (files on this machine)
        ca_cert: certs/kube-ca.pem
        cert: certs/kube-etcd-client.pem
        key: certs/kube-etcd-client-key.pem
      dial_timeout: 2               # seconds per endpoint
      request_timeout: 5            # seconds per request
    hosts:
      - name: master1
        address: 10.231.0.11
        roles: [etcd, controlplane] # etcd (voter), etcd-learner, controlplane, worker
      - name: node1
        address: 10.231.0.21
        roles: [etcd-learner, worker]
        user: admin                 # optional per-host ssh overrides: user, port, sudo
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Role(enum.StrEnum):
    ETCD = "etcd"  # an etcd voter
    ETCD_LEARNER = "etcd-learner"
    CONTROLPLANE = "controlplane"
    WORKER = "worker"


class RuntimeKind(enum.StrEnum):
    DOCKER = "docker"
    PROCESS = "process"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    roles: frozenset[Role]
    user: str = "root"
    port: int = 22
    sudo: bool = False

    @property
    def is_voter(self) -> bool:
        return Role.ETCD in self.roles

    @property
    def is_learner(self) -> bool:
        return Role.ETCD_LEARNER in self.roles

    @property
    def runs_etcd(self) -> bool:
        return self.is_voter or self.is_learner

    @property
    def address_dashed(self) -> str:
        """RKE names member certificates after the address with dashes: kube-etcd-10-0-0-11.pem."""
        return self.address.replace(".", "-").replace(":", "-")


@dataclass(frozen=True)
class SshSettings:
    key_file: Path
    known_hosts: Path
    user: str = "root"
    port: int = 22
    connect_timeout: float = 3.0
    command_timeout: float = 60.0
    keepalive: float = 5.0
    sudo: bool = False


@dataclass(frozen=True)
class ClientTLS:
    """Files on the orchestrator's machine that etcd-dr uses to reach etcd over mTLS."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class EtcdSettings:
    runtime: RuntimeKind
    client: ClientTLS
    container: str = "etcd"
    image: str | None = None
    binary: str = "/usr/bin/etcd"
    data_dir: str = "/var/lib/etcd"
    client_port: int = 2379
    peer_port: int = 2380
    heartbeat_interval: int = 500
    election_timeout: int = 5000
    cert_dir: str = "/etc/kubernetes/ssl"
    dial_timeout: float = 2.0
    request_timeout: float = 5.0

    def ca_path(self) -> str:
        return f"{self.cert_dir}/kube-ca.pem"

    def cert_path(self, host: Host) -> str:
        return f"{self.cert_dir}/kube-etcd-{host.address_dashed}.pem"

    def key_path(self, host: Host) -> str:
        return f"{self.cert_dir}/kube-etcd-{host.address_dashed}-key.pem"


@dataclass(frozen=True)
class Inventory:
    cluster: str
    hosts: tuple[Host, ...]
    etcd: EtcdSettings
    ssh: SshSettings
    rehearsal: bool = False
    audit_log: Path | None = None
    source: Path | None = field(default=None, compare=False)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        from etcd_dr.errors import InputError

        raise InputError(f"no host named {name!r} in the inventory (hosts: {known})")

    @property
    def etcd_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.runs_etcd)

    @property
    def voters(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_voter)

    def client_url(self, host: Host) -> str:
        return f"https://{_url_host(host.address)}:{self.etcd.client_port}"

    def peer_url(self, host: Host) -> str:
        return f"https://{_url_host(host.address)}:{self.etcd.peer_port}"


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file. Raises InventoryError listing every problem."""
    raise NotImplementedError  # filled in by the inventory loader


class InventoryError(Exception):
    """Placeholder; see the loader."""
