"""The cluster as data: hosts, roles, how etcd runs, where its certificates are, timings.

An inventory is a YAML file (format in README.md, "Inventory"). It is validated up front: every
problem is reported with its path and the fix (`hosts[2].address: '10.0.0' is not an IP address or
host name`), and nothing is contacted while loading. Relative file paths resolve against the
directory of the inventory file (a Prefect block keeps that directory as its `base_dir`), never the
process's working directory: the CLI and a flow run from anywhere see the same files.

    cluster: lab                    # a name: audit records, locks and snapshots carry it
    rehearsal: true                 # fault injection is refused unless true
    audit_log: audit.jsonl          # append-only, hash-chained (etcd_dr.audit)
    state_dir: /var/lib/etcd-dr     # optional: journal, lock, fault ledger, default audit log and
                                    # snapshots; default: audit_log's directory, else the inventory's
    ssh:
      user: root
      port: 22
      key_file: keys/id_ed25519     # private key (never logged)
      agent: false                  # true: also (or only, without key_file) the ssh-agent's keys
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
        etcd_image: lab/etcd:3.5.16 # optional: what this member runs instead of etcd.image/binary
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from etcd_dr.errors import InputError


class Role(enum.StrEnum):
    ETCD = "etcd"  # an etcd voter
    ETCD_LEARNER = "etcd-learner"
    CONTROLPLANE = "controlplane"
    WORKER = "worker"


class RuntimeKind(enum.StrEnum):
    DOCKER = "docker"
    PROCESS = "process"


class PowerDriver(enum.StrEnum):
    LAB = "lab"  # the lab's own power state (its state file and the host's PID 1)
    IPMI = "ipmi"  # `ipmitool chassis power status` against the host's BMC
    COMMAND = "command"  # a command run on this machine (e.g. a cloud CLI) whose output says off


@dataclass(frozen=True)
class PowerSettings:
    """How to ask whether a host's power is off: fencing evidence that needs no answer from the host.
    `address` (ipmi) and `argv` (command) may hold {host} (its name) and {address}; the IPMI password
    comes from the environment variable `password_env` names, never from the inventory."""

    driver: PowerDriver
    dir: Path | None = None  # lab: the lab's directory (default: the inventory's)
    address: str | None = None  # ipmi: the BMC
    user: str | None = None  # ipmi
    password_env: str | None = None  # ipmi: the NAME of the variable holding the password
    interface: str = "lanplus"  # ipmi: ipmitool -I
    argv: tuple[str, ...] = ()  # command
    off: str | None = None  # command: a regular expression found in its output when the power is off
    timeout: float = 10.0  # seconds per query


@dataclass(frozen=True)
class Host:
    """One machine. user/port are the effective SSH values: the loader fills them from `ssh.*` unless
    the host overrides them; the effective sudo is `host.sudo or ssh.sudo`."""

    name: str
    address: str
    roles: frozenset[Role]
    user: str = "root"
    port: int = 22
    sudo: bool = False
    # What this host's member runs when it differs from etcd.image / etcd.binary (a learner of
    # another etcd version in a second data center, as in the source incident).
    etcd_image: str | None = None
    etcd_binary: str | None = None
    power: PowerSettings | None = None  # this host's own power driver (else the inventory's)

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


class InMemoryFile(bytes):
    """A credential file's content held in memory where the inventory has a path (a Prefect block's
    keys: never written to disk). It is bytes, so the etcd client takes it as PEM; its repr and str
    name the field, never the content."""

    field: str

    def __new__(cls, data: bytes | str, field: str = "credential") -> InMemoryFile:
        obj = super().__new__(cls, data.encode() if isinstance(data, str) else data)
        obj.field = field
        return obj

    def __repr__(self) -> str:
        return f"<{self.field} held in memory>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)


# A local file etcd-dr reads (key, known_hosts, client TLS): its path, or its content in memory.
LocalFile = Path | InMemoryFile


@dataclass(frozen=True)
class SshSettings:
    key_file: LocalFile | None  # None: only the ssh-agent's keys (agent: true)
    known_hosts: LocalFile
    user: str = "root"
    port: int = 22
    connect_timeout: float = 3.0
    command_timeout: float = 60.0
    keepalive: float = 5.0
    sudo: bool = False
    agent: bool = False  # offer the keys of the ssh-agent at $SSH_AUTH_SOCK (after key_file's)


@dataclass(frozen=True)
class ClientTLS:
    """Files on the orchestrator's machine (or their content in memory) that etcd-dr uses to reach
    etcd over mTLS."""

    ca_cert: LocalFile
    cert: LocalFile
    key: LocalFile


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


class OffsiteKind(enum.StrEnum):
    DIR = "dir"
    S3 = "s3"


@dataclass(frozen=True)
class S3Target:
    """An S3-compatible bucket. Credentials come from environment variables named here, never from
    the inventory itself."""

    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class OffsiteSettings:
    kind: OffsiteKind
    dir: Path | None = None  # kind dir: a directory on this machine (a mount of another site)
    s3: S3Target | None = None


@dataclass(frozen=True)
class SnapshotSettings:
    """Where snapshots live on this machine, how long they are kept, and the off-site copy."""

    dir: Path
    keep_last: int = 5  # the newest N, whatever their age
    keep_daily: int = 7  # plus the newest of each of the last N days
    keep_weekly: int = 4  # plus the newest of each of the last N ISO weeks
    offsite: OffsiteSettings | None = None


@dataclass(frozen=True)
class CASettings:
    """Where the cluster CA (RKE's kube-ca) is read from to sign member certificates: over SSH from
    `host` (default: the first voter), at these paths on it."""

    host: str | None = None
    cert: str | None = None  # default: <etcd.cert_dir>/kube-ca.pem
    key: str | None = None  # default: <etcd.cert_dir>/kube-ca-key.pem


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of `etcd-dr check`."""

    snapshot_max_age_hours: float = 26.0
    cert_min_days: int = 30
    max_clock_skew: float = 1.0  # seconds between any two hosts
    min_free_factor: float = 2.0  # free disk on each etcd host >= factor x db size
    learner_max_lag: int = 1000  # raft entries behind the leader


@dataclass(frozen=True)
class Inventory:
    cluster: str
    hosts: tuple[Host, ...]
    etcd: EtcdSettings
    ssh: SshSettings
    rehearsal: bool = False
    audit_log: Path | None = None
    snapshots: SnapshotSettings | None = None
    ca: CASettings = field(default_factory=CASettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    power: PowerSettings | None = None  # the power driver of every host without its own
    state_dir: Path | None = None  # as the inventory says; state_path() gives the one in use
    source: Path | None = field(default=None, compare=False)
    base_dir: Path | None = field(default=None, compare=False)  # what relative paths resolved against

    def state_path(self, name: str | None = None) -> Path:
        """THE place of this cluster's state on this machine (or a file in it): the recovery journal
        and its lock, the fault ledger, the default snapshot catalog. `state_dir`, else audit_log's
        directory, else the inventory's own directory; never the process's working directory, so
        the CLI and every flow (whatever the worker's cwd) share one journal, lock and catalog."""
        if self.state_dir is not None:
            d = self.state_dir
        elif self.audit_log is not None:
            d = self.audit_log.parent
        elif self.base_dir is not None:
            d = self.base_dir
        elif self.source is not None:
            d = self.source.parent
        else:
            raise InputError(
                "state_dir: the inventory has no state_dir, audit_log or file of its own; set state_dir "
                "(etcd-dr keeps its journal, lock and snapshot catalog there)"
            )
        return d / name if name else d

    def power_for(self, host: Host) -> PowerSettings | None:
        return host.power or self.power

    def ca_host(self) -> Host:
        return self.host(self.ca.host) if self.ca.host else self.voters[0]

    def ca_cert_path(self) -> str:
        return self.ca.cert or f"{self.etcd.cert_dir}/kube-ca.pem"

    def ca_key_path(self) -> str:
        return self.ca.key or f"{self.etcd.cert_dir}/kube-ca-key.pem"

    def snapshot_settings(self) -> SnapshotSettings:
        """The inventory's, or the default: snapshots/ in the state directory (state_path())."""
        if self.snapshots is not None:
            return self.snapshots
        return SnapshotSettings(dir=self.state_path("snapshots"))

    def etcd_image_for(self, host: Host) -> str | None:
        """The image host's member runs (docker runtime): the host's own, else etcd.image."""
        return host.etcd_image or self.etcd.image

    def etcd_binary_for(self, host: Host) -> str:
        """The etcd binary on host (process runtime): the host's own, else etcd.binary."""
        return host.etcd_binary or self.etcd.binary

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
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


# ---------------------------------------------------------------------------------------------
# Loading and validating

ROLE_NAMES = ", ".join(r.value for r in Role)
RUNTIME_NAMES = ", ".join(r.value for r in RuntimeKind)

# Cluster and host names go into file names, lock and audit keys: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")

_TOP_KEYS = (
    "cluster",
    "rehearsal",
    "audit_log",
    "state_dir",
    "ssh",
    "etcd",
    "snapshots",
    "ca",
    "check",
    "power",
    "hosts",
)
_POWER_KEYS = ("driver", "dir", "address", "user", "password_env", "interface", "argv", "off", "timeout")
_POWER_NEEDS = {
    PowerDriver.LAB: ((), ("dir",)),
    PowerDriver.IPMI: (("address", "user", "password_env"), ("address", "user", "password_env", "interface")),
    PowerDriver.COMMAND: (("argv", "off"), ("argv", "off")),
}
POWER_DRIVER_NAMES = ", ".join(d.value for d in PowerDriver)
_SNAPSHOT_KEYS = ("dir", "keep_last", "keep_daily", "keep_weekly", "offsite")
_OFFSITE_KEYS = ("dir", "s3")
_S3_KEYS = ("endpoint", "bucket", "prefix", "region", "access_key_id_env", "secret_access_key_env")
_CA_KEYS = ("host", "cert", "key")
_CHECK_KEYS = (
    "snapshot_max_age_hours",
    "cert_min_days",
    "max_clock_skew",
    "min_free_factor",
    "learner_max_lag",
)
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SSH_KEYS = (
    "user",
    "port",
    "key_file",
    "known_hosts",
    "connect_timeout",
    "command_timeout",
    "keepalive",
    "sudo",
    "agent",
)
_ETCD_KEYS = (
    "runtime",
    "container",
    "image",
    "binary",
    "data_dir",
    "client_port",
    "peer_port",
    "heartbeat_interval",
    "election_timeout",
    "cert_dir",
    "client",
    "dial_timeout",
    "request_timeout",
)
_CLIENT_KEYS = ("ca_cert", "cert", "key")
_HOST_KEYS = ("name", "address", "roles", "user", "port", "sudo", "etcd_image", "etcd_binary", "power")

_MISSING: Any = object()

# What the smallest usable inventory holds (every other key has a default): shown when a file is
# empty or lists no host, so the operator sees the shape instead of a list of missing keys.
MINIMAL_INVENTORY = """\
cluster: prod-eu1               # a name for audit records, locks and snapshots
ssh:
  key_file: keys/id_ed25519     # the private key etcd-dr logs in with
  known_hosts: keys/known_hosts # every host's verified key
etcd:
  client:                       # etcd's client certificate, on this machine
    ca_cert: certs/kube-ca.pem
    cert: certs/kube-etcd-client.pem
    key: certs/kube-etcd-client-key.pem
hosts:
  - name: master1
    address: 10.0.0.11
    roles: [etcd, controlplane] # etcd (voter), etcd-learner, controlplane, worker
"""
_MINIMAL_HOSTS = MINIMAL_INVENTORY[MINIMAL_INVENTORY.index("\nhosts:") + 1 :]


def _shown(yaml_text: str) -> str:
    """A YAML example inside a problem line, indented under it."""
    return "".join(f"\n      {line}" for line in yaml_text.rstrip().splitlines())


class InventoryError(InputError):
    """The inventory is unusable. `problems` lists every problem found, each
    `path: what is wrong; what to do`. Nothing was contacted."""

    def __init__(self, problems: list[str] | tuple[str, ...], source: Path | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source or 'inventory'}: {n} problem{'' if n == 1 else 's'}"
        super().__init__(head + "".join(f"\n  - {p}" for p in self.problems))


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file. Raises InventoryError listing every problem."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(
            [f"{path}: no such file; pass the path of an inventory YAML (format: etcd_dr/inventory.py)"]
        ) from None
    except IsADirectoryError:
        raise InventoryError([f"{path}: is a directory; pass the inventory YAML file inside it"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InventoryError(
            [f"{path}: cannot be read ({e.__class__.__name__}: {e}); check the file"]
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = e.problem or e.context or "syntax error"
        raise InventoryError(
            [f"{path}: YAML error at {where}: {what}; fix the YAML there (indentation, quoting, colons)"],
            path,
        ) from None
    except yaml.YAMLError as e:
        raise InventoryError([f"{path}: not valid YAML ({e}); fix the file"], path) from None
    return parse_inventory(data, path.parent, path)


def parse_inventory(
    data: object, base_dir: Path, source: Path | None = None, *, check_files: bool = True
) -> Inventory:
    """Validate already-parsed inventory data (a YAML document or a dict from a Prefect block).

    Relative file paths resolve against base_dir. With check_files (the default), files etcd-dr
    reads on this machine (SSH key, known_hosts, client TLS) must exist; a caller that writes them
    later (the lab, before it generates keys) may pass False. Raises InventoryError with every problem.
    """
    c = _Checker(Path(base_dir).expanduser().absolute(), check_files)
    if data is None or data == {}:  # an empty file, or only comments: say what one holds
        raise InventoryError(
            [
                "the inventory is empty (no YAML in it, only comments or blanks); a minimal one holds:"
                + _shown(MINIMAL_INVENTORY)
            ],
            source,
        )
    if not isinstance(data, dict):  # nothing else can be checked: say only this
        c.mapping(data, "", _TOP_KEYS)
        raise InventoryError(c.problems, source)
    top = c.mapping(data, "", _TOP_KEYS, required=("cluster",))  # hosts: c.hosts() says what one holds
    cluster = c.name(top, "", "cluster")
    rehearsal = c.boolean(top, "", "rehearsal", False)
    state_dir = c.local_path(top, "", "state_dir", None, must_exist=False)
    audit_log = c.local_path(top, "", "audit_log", None, must_exist=False)
    if audit_log is None and state_dir is not None:
        audit_log = state_dir / "audit.jsonl"  # an explicit state_dir holds all of etcd-dr's state

    raw_ssh = top.get("ssh", {})
    s = c.mapping(raw_ssh, "ssh", _SSH_KEYS)
    agent = c.boolean(s, "ssh", "agent", False)
    ssh_ok = raw_ssh is None or isinstance(raw_ssh, dict)  # else that is the one problem
    if ssh_ok and "known_hosts" not in s:
        c.add("ssh.known_hosts", "is missing; add it")
    if ssh_ok and "key_file" not in s and not agent:
        c.add("ssh.key_file", "is missing; give the private key etcd-dr logs in with, or set ssh.agent: true")
    ssh = SshSettings(
        key_file=c.local_path(s, "ssh", "key_file", None, fix="give the private key etcd-dr logs in with"),
        known_hosts=c.local_path(
            s,
            "ssh",
            "known_hosts",
            None,
            fix="give a known_hosts file with every host's key (never auto-added)",
        ),
        user=c.user(s, "ssh", "user", "root"),
        port=c.port(s, "ssh", "port", 22),
        connect_timeout=c.positive(s, "ssh", "connect_timeout", 3.0),
        command_timeout=c.positive(s, "ssh", "command_timeout", 60.0),
        keepalive=c.positive(s, "ssh", "keepalive", 5.0, zero_ok=True),
        sudo=c.boolean(s, "ssh", "sudo", False),
        agent=agent,
    )
    if check_files and isinstance(ssh.key_file, Path) and ssh.key_file.is_file():
        c.check_private_key(ssh.key_file)

    e = c.mapping(top.get("etcd", {}), "etcd", _ETCD_KEYS, required=("client",))
    cl = c.mapping(e.get("client", {}), "etcd.client", _CLIENT_KEYS, required=_CLIENT_KEYS)
    client = ClientTLS(
        ca_cert=c.local_path(cl, "etcd.client", "ca_cert", None),
        cert=c.local_path(cl, "etcd.client", "cert", None),
        key=c.local_path(cl, "etcd.client", "key", None),
    )
    etcd = EtcdSettings(
        runtime=c.choice(e, "etcd", "runtime", RuntimeKind, RuntimeKind.DOCKER, "runtime", RUNTIME_NAMES),
        client=client,
        container=c.string(e, "etcd", "container", "etcd", _CONTAINER_RE, "use a Docker container name"),
        image=c.string(e, "etcd", "image", None),
        binary=c.host_path(e, "etcd", "binary", "/usr/bin/etcd"),
        data_dir=c.host_path(e, "etcd", "data_dir", "/var/lib/etcd"),
        client_port=c.port(e, "etcd", "client_port", 2379),
        peer_port=c.port(e, "etcd", "peer_port", 2380),
        heartbeat_interval=c.integer(e, "etcd", "heartbeat_interval", 500, "milliseconds"),
        election_timeout=c.integer(e, "etcd", "election_timeout", 5000, "milliseconds"),
        cert_dir=c.host_path(e, "etcd", "cert_dir", "/etc/kubernetes/ssl"),
        dial_timeout=c.positive(e, "etcd", "dial_timeout", 2.0),
        request_timeout=c.positive(e, "etcd", "request_timeout", 5.0),
    )
    if etcd.client_port == etcd.peer_port and "peer_port" in e:
        c.add("etcd.peer_port", f"is the same as client_port ({etcd.client_port}); use a different port")
    hb, el = etcd.heartbeat_interval, etcd.election_timeout
    if isinstance(hb, int) and isinstance(el, int) and hb > 0 and el < 5 * hb:
        c.add(
            "etcd.election_timeout",
            f"{el} ms is less than 5 x heartbeat_interval ({hb} ms); etcd refuses to start: "
            f"raise it to {5 * hb}",
        )

    hosts = c.hosts(top.get("hosts", _MISSING), ssh)
    snapshots = c.snapshots(top["snapshots"]) if "snapshots" in top else None
    ca_m = c.mapping(top.get("ca", {}), "ca", _CA_KEYS)
    ca = CASettings(
        host=c.string(ca_m, "ca", "host", None),
        cert=c.host_path(ca_m, "ca", "cert", None),
        key=c.host_path(ca_m, "ca", "key", None),
    )
    if ca.host and hosts and ca.host not in {h.name for h in hosts}:
        c.add("ca.host", f"{ca.host!r} is not a host of this inventory; name one of hosts[].name")
    ck = c.mapping(top.get("check", {}), "check", _CHECK_KEYS)
    check = CheckSettings(
        snapshot_max_age_hours=c.positive(ck, "check", "snapshot_max_age_hours", 26.0),
        cert_min_days=c.integer(ck, "check", "cert_min_days", 30, "days"),
        max_clock_skew=c.positive(ck, "check", "max_clock_skew", 1.0),
        min_free_factor=c.positive(ck, "check", "min_free_factor", 2.0),
        learner_max_lag=c.integer(ck, "check", "learner_max_lag", 1000, "raft entries"),
    )
    power = c.power(top["power"], "power") if "power" in top else None
    if c.problems:
        raise InventoryError(c.problems, source)
    return Inventory(
        cluster=cluster,
        hosts=hosts,
        etcd=etcd,
        ssh=ssh,
        rehearsal=rehearsal,
        audit_log=audit_log,
        snapshots=snapshots,
        ca=ca,
        check=check,
        power=power,
        state_dir=state_dir,
        source=source,
        base_dir=c.base_dir,
    )


def power_to_dict(ps: PowerSettings, p: Callable[[Path | None], str | None]) -> dict:
    """A power section as the loader reads it: the driver's own keys only."""
    d: dict = {"driver": ps.driver.value}
    if ps.driver is PowerDriver.LAB and ps.dir is not None:
        d["dir"] = p(ps.dir)
    elif ps.driver is PowerDriver.IPMI:
        d |= {"address": ps.address, "user": ps.user, "password_env": ps.password_env}
        d["interface"] = ps.interface
    elif ps.driver is PowerDriver.COMMAND:
        d |= {"argv": list(ps.argv), "off": ps.off}
    d["timeout"] = ps.timeout
    return d


def inventory_to_dict(inv: Inventory, *, relative_to: Path | None = None) -> dict:
    """The inventory as YAML-ready data; `parse_inventory(inventory_to_dict(inv), base)` gives `inv`
    back. With relative_to, local paths under that directory are written relative to it (so a lab
    directory can move); parse it with base_dir=relative_to."""

    def p(x: Path | None) -> str | None:
        if x is None:
            return None
        if relative_to is not None:
            try:
                return str(Path(x).relative_to(Path(relative_to).absolute()))
            except ValueError:
                pass
        return str(x)

    s, e = inv.ssh, inv.etcd
    out: dict = {"cluster": inv.cluster, "rehearsal": inv.rehearsal}
    if inv.audit_log is not None:
        out["audit_log"] = p(inv.audit_log)
    if inv.state_dir is not None:
        out["state_dir"] = p(inv.state_dir)
    out["ssh"] = {
        "user": s.user,
        "port": s.port,
        "key_file": p(s.key_file),
        "known_hosts": p(s.known_hosts),
        "connect_timeout": s.connect_timeout,
        "command_timeout": s.command_timeout,
        "keepalive": s.keepalive,
        "sudo": s.sudo,
        **({"agent": True} if s.agent else {}),
    }
    if s.key_file is None:
        del out["ssh"]["key_file"]
    out["etcd"] = {
        "runtime": e.runtime.value,
        "container": e.container,
        **({"image": e.image} if e.image is not None else {}),
        "binary": e.binary,
        "data_dir": e.data_dir,
        "client_port": e.client_port,
        "peer_port": e.peer_port,
        "heartbeat_interval": e.heartbeat_interval,
        "election_timeout": e.election_timeout,
        "cert_dir": e.cert_dir,
        "client": {"ca_cert": p(e.client.ca_cert), "cert": p(e.client.cert), "key": p(e.client.key)},
        "dial_timeout": e.dial_timeout,
        "request_timeout": e.request_timeout,
    }
    hosts = []
    for h in inv.hosts:
        d: dict = {"name": h.name, "address": h.address, "roles": [r.value for r in Role if r in h.roles]}
        # Only overrides: a host that says nothing follows ssh.* (as it did when it was loaded).
        if h.user != s.user:
            d["user"] = h.user
        if h.port != s.port:
            d["port"] = h.port
        if h.sudo and not s.sudo:
            d["sudo"] = True
        if h.etcd_image:
            d["etcd_image"] = h.etcd_image
        if h.etcd_binary:
            d["etcd_binary"] = h.etcd_binary
        if h.power is not None:
            d["power"] = power_to_dict(h.power, p)
        hosts.append(d)
    if inv.snapshots is not None:
        sn = inv.snapshots
        out["snapshots"] = {
            "dir": p(sn.dir),
            "keep_last": sn.keep_last,
            "keep_daily": sn.keep_daily,
            "keep_weekly": sn.keep_weekly,
        }
        if sn.offsite is not None and sn.offsite.kind is OffsiteKind.DIR:
            out["snapshots"]["offsite"] = {"dir": p(sn.offsite.dir)}
        elif sn.offsite is not None and sn.offsite.s3 is not None:
            out["snapshots"]["offsite"] = {"s3": dict(vars(sn.offsite.s3))}
    ca = {k: v for k, v in vars(inv.ca).items() if v is not None}
    if ca:
        out["ca"] = ca
    if inv.check != CheckSettings():
        out["check"] = dict(vars(inv.check))
    if inv.power is not None:
        out["power"] = power_to_dict(inv.power, p)
    out["hosts"] = hosts
    return out


def _kind(v: object) -> str:
    if v is None:
        return "empty"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), f"a {type(v).__name__}"
    )


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _is_hostname(s: str) -> bool:
    if len(s) > 253 or not s:
        return False
    labels = s.rstrip(".").split(".")
    # A name whose last label is all digits is a mistyped IPv4 address, not a host name.
    return all(_LABEL_RE.match(lb) for lb in labels) and not labels[-1].isdigit()


def normalize_address(address: str) -> str:
    """An address as compared for duplicates: IPs in canonical form, host names lower case."""
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address.lower().rstrip(".")


class _Checker:
    """Collects problems as `path: what is wrong; what to do` while reading values with defaults."""

    def __init__(self, base_dir: Path, check_files: bool) -> None:
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {message}")

    def mapping(
        self, value: object, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict:
        if value is _MISSING or value is None:
            value = {}
        if not isinstance(value, dict):
            self.add(path, f"is {_kind(value)}, not a mapping; write `key: value` lines under it")
            return {}
        for k in value:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
                self.add(_join(path, k), f"unknown key; {hint}")
        for r in required:
            if r not in value:
                self.add(_join(path, r), "is missing; add it")
        return value

    def _get(self, m: dict, key: str, default: Any) -> Any:
        v = m.get(key, _MISSING)
        return default if v is _MISSING else v

    def string(
        self,
        m: dict,
        path: str,
        key: str,
        default: Any,
        pattern: re.Pattern[str] | None = None,
        fix: str = "",
    ) -> Any:
        v = self._get(m, key, default)
        if v is default:
            return v
        if not isinstance(v, str) or not v:
            self.add(_join(path, key), f"{v!r} is not a (non-empty) string; quote it")
            return default
        if pattern is not None and not pattern.match(v):
            self.add(_join(path, key), f"{v!r} is not allowed here; {fix}")
            return default
        return v

    def name(self, m: dict, path: str, key: str) -> Any:
        v = m.get(key, _MISSING)
        if v is _MISSING:
            return ""  # reported by mapping(required=...)
        if not isinstance(v, str) or not _NAME_RE.match(v):
            safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(v)).strip("-._")[:63] or "name"
            self.add(
                _join(path, key),
                f"{v!r} is not a valid name; use 1-63 letters, digits, '.', '_' or '-', "
                f"starting and ending with a letter or digit (e.g. {safe!r})",
            )
            return ""
        return v

    def user(self, m: dict, path: str, key: str, default: str) -> Any:
        return self.string(
            m, path, key, default, _USER_RE, "give a login name (letters, digits, '_', '.', '-')"
        )

    def boolean(self, m: dict, path: str, key: str, default: bool) -> bool:
        v = self._get(m, key, default)
        if not isinstance(v, bool):
            self.add(_join(path, key), f"{v!r} is not a boolean; write true or false")
            return default
        return v

    def integer(self, m: dict, path: str, key: str, default: int, unit: str) -> int:
        v = self._get(m, key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.add(_join(path, key), f"{v!r} is not a whole number; give {unit} as an integer")
            return default
        if v <= 0:
            self.add(_join(path, key), f"{v} is not positive; give a value > 0 ({unit})")
            return default
        return v

    def port(self, m: dict, path: str, key: str, default: int) -> int:
        v = self._get(m, key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.add(_join(path, key), f"{v!r} is not a port number; use an integer 1-65535")
            return default
        if not 1 <= v <= 65535:
            self.add(_join(path, key), f"{v} is out of range; use a port number 1-65535")
            return default
        return v

    def positive(self, m: dict, path: str, key: str, default: float, *, zero_ok: bool = False) -> float:
        v = self._get(m, key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.add(_join(path, key), f"{v!r} is not a number; give seconds as a number, e.g. {default:g}")
            return default
        if v < 0 or (v == 0 and not zero_ok) or v != v or v == float("inf"):
            need = ">= 0 (0 turns it off)" if zero_ok else "> 0"
            self.add(_join(path, key), f"{v} is not positive; give seconds {need}")
            return default
        return float(v)

    def choice(
        self, m: dict, path: str, key: str, enum_t: type[enum.StrEnum], default: Any, what: str, names: str
    ):
        v = self._get(m, key, default)
        try:
            return enum_t(v)
        except ValueError:
            self.add(_join(path, key), f"{v!r} is not a {what}; use one of {names}")
            return default

    def host_path(self, m: dict, path: str, key: str, default: str) -> str:
        v = self.string(m, path, key, default)
        if isinstance(v, str) and not v.startswith("/"):
            self.add(_join(path, key), f"{v!r} is not an absolute path; paths on the hosts must start with /")
            return default
        return v

    def local_path(
        self, m: dict, path: str, key: str, default: Any, *, must_exist: bool = True, fix: str = ""
    ) -> Any:
        v = m.get(key, _MISSING)
        if v is _MISSING:
            return default  # a required one was reported by mapping(required=...)
        if isinstance(v, InMemoryFile):
            return v  # a Prefect block's credential: nothing on disk to check
        if not isinstance(v, str) or not v:
            self.add(_join(path, key), f"{v!r} is not a path; give a file path (quoted if odd)")
            return default
        p = self.base_dir / Path(v).expanduser()
        if must_exist and self.check_files:
            if not p.exists():
                rel = "" if Path(v).is_absolute() else f" (relative to {self.base_dir})"
                self.add(_join(path, key), f"{p} does not exist{rel}; {fix or 'check the path'}")
            elif p.is_dir():
                self.add(_join(path, key), f"{p} is a directory; give the file")
        return p

    def check_private_key(self, p: Path) -> None:
        try:
            head = p.read_bytes()[:64]
        except OSError as e:
            self.add("ssh.key_file", f"{p} cannot be read ({e.strerror}); fix its permissions")
            return
        if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
            self.add("ssh.key_file", f"{p} is a public key; give the private key (the file without .pub)")

    def hosts(self, value: object, ssh: SshSettings) -> tuple[Host, ...]:
        if value is _MISSING or value is None or value == []:
            what = (
                "is missing"
                if value is _MISSING
                else f"is {_kind(value) if value is None else 'an empty list'}"
            )
            self.add(
                "hosts",
                f"{what}: no host; list each with its name, address and roles:{_shown(_MINIMAL_HOSTS)}",
            )
            return ()
        if not isinstance(value, list):
            self.add(
                "hosts",
                f"is {_kind(value)}, not a list of hosts; add `- name: ... address: ... roles: [...]`",
            )
            return ()
        out: list[Host] = []
        names: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for i, raw in enumerate(value):
            p = f"hosts[{i}]"
            m = self.mapping(raw, p, _HOST_KEYS, required=("name", "address", "roles"))
            if not m:
                continue
            name = self.name(m, p, "name")
            if name:
                if name in names:
                    self.add(
                        f"{p}.name", f"{name!r} is already used by hosts[{names[name]}]; names must be unique"
                    )
                else:
                    names[name] = i
            address = self._address(m, p)
            if address:
                key = normalize_address(address)
                if key in addresses:
                    j = addresses[key]
                    self.add(
                        f"{p}.address",
                        f"{address!r} is already used by hosts[{j}]; each host needs its own address",
                    )
                else:
                    addresses[key] = i
            roles = self._roles(m, p)
            out.append(
                Host(
                    name=name,
                    address=address,
                    roles=roles,
                    user=self.user(m, p, "user", ssh.user),
                    port=self.port(m, p, "port", ssh.port),
                    sudo=self.boolean(m, p, "sudo", False) or ssh.sudo,
                    etcd_image=self.string(m, p, "etcd_image", None),
                    etcd_binary=self.host_path(m, p, "etcd_binary", None),
                    power=self.power(m["power"], f"{p}.power") if "power" in m else None,
                )
            )
        if out and not any(h.is_voter for h in out) and not any("roles" in q for q in self.problems):
            self.add("hosts", "no host has the role etcd; at least one etcd voter is needed")
        return tuple(out)

    def power(self, value: object, path: str) -> PowerSettings | None:
        """A power section (global `power:` or a host's): the driver and its own keys only."""
        m = self.mapping(value, path, _POWER_KEYS, required=("driver",))
        if "driver" not in m:
            return None
        driver = self.choice(m, path, "driver", PowerDriver, None, "power driver", POWER_DRIVER_NAMES)
        if driver is None:
            return None
        required, allowed = _POWER_NEEDS[driver]
        for k in m:
            if k in _POWER_KEYS and k not in ("driver", "timeout", *allowed):
                self.add(_join(path, k), f"is not a setting of driver {driver}; remove it")
        for k in required:
            if k not in m:
                self.add(_join(path, k), f"is missing; driver {driver} needs {', '.join(required)}")
        argv: tuple[str, ...] = ()
        if "argv" in m:
            v = m["argv"]
            if not isinstance(v, list) or not v or not all(isinstance(a, str) and a for a in v):
                self.add(
                    _join(path, "argv"),
                    "is not a list of strings; give the command as a list, e.g. [my-cli, status, '{host}']",
                )
            else:
                argv = tuple(v)
        off = self.string(m, path, "off", None)
        if isinstance(off, str):
            try:
                re.compile(off)
            except re.error as e:
                self.add(_join(path, "off"), f"{off!r} is not a regular expression ({e}); e.g. '\\boff\\b'")
        for k in ("address", "argv"):
            v = m.get(k)
            for a in v if isinstance(v, list) else [v] if isinstance(v, str) else []:
                try:
                    str(a).format(host="h", address="a")
                except (KeyError, IndexError, ValueError):
                    self.add(_join(path, k), f"{a!r}: only {{host}} and {{address}} may be filled in")
        return PowerSettings(
            driver=driver,
            dir=self.local_path(m, path, "dir", None, must_exist=False)
            if driver is PowerDriver.LAB
            else None,
            address=self.string(m, path, "address", None),
            user=self.user(m, path, "user", None),
            password_env=self.string(m, path, "password_env", None, _ENV_RE, "name an environment variable"),
            interface=self.string(m, path, "interface", "lanplus", re.compile(r"^[a-z]+$"), "e.g. lanplus"),
            argv=argv,
            off=off,
            timeout=self.positive(m, path, "timeout", 10.0),
        )

    def snapshots(self, value: object) -> SnapshotSettings | None:
        m = self.mapping(value, "snapshots", _SNAPSHOT_KEYS, required=("dir",))
        if not m:
            return None
        offsite = None
        if "offsite" in m:
            o = self.mapping(m["offsite"], "snapshots.offsite", _OFFSITE_KEYS)
            if ("dir" in o) == ("s3" in o):
                self.add("snapshots.offsite", "give exactly one of dir or s3")
            elif "dir" in o:
                d = self.local_path(o, "snapshots.offsite", "dir", None, must_exist=False)
                offsite = OffsiteSettings(OffsiteKind.DIR, dir=d)
            else:
                offsite = OffsiteSettings(OffsiteKind.S3, s3=self._s3(o["s3"]))
        return SnapshotSettings(
            dir=self.local_path(m, "snapshots", "dir", None, must_exist=False),
            keep_last=self.integer(m, "snapshots", "keep_last", 5, "snapshots"),
            keep_daily=self._count(m, "snapshots", "keep_daily", 7, "days"),
            keep_weekly=self._count(m, "snapshots", "keep_weekly", 4, "weeks"),
            offsite=offsite,
        )

    def _count(self, m: dict, path: str, key: str, default: int, unit: str) -> int:
        """A whole number >= 0 (0 turns that rule off)."""
        v = self._get(m, key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            self.add(_join(path, key), f"{v!r} is not a whole number >= 0; give {unit} (0 turns it off)")
            return default
        return v

    def _s3(self, value: object) -> S3Target | None:
        path = "snapshots.offsite.s3"
        m = self.mapping(value, path, _S3_KEYS, required=("endpoint", "bucket"))
        if not m:
            return None
        endpoint = self.string(m, path, "endpoint", "")
        if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
            self.add(f"{path}.endpoint", f"{endpoint!r} is not a URL; give e.g. https://s3.example.net:9000")
        bucket = self.string(
            m, path, "bucket", "", _BUCKET_RE, "use 3-63 lower-case letters, digits, '.', '-'"
        )
        return S3Target(
            endpoint=endpoint,
            bucket=bucket,
            prefix=self.string(m, path, "prefix", ""),
            region=self.string(m, path, "region", "us-east-1"),
            access_key_id_env=self.string(
                m, path, "access_key_id_env", "AWS_ACCESS_KEY_ID", _ENV_RE, "name an environment variable"
            ),
            secret_access_key_env=self.string(
                m,
                path,
                "secret_access_key_env",
                "AWS_SECRET_ACCESS_KEY",
                _ENV_RE,
                "name an environment variable",
            ),
        )

    def _address(self, m: dict, p: str) -> str:
        v = m.get("address", _MISSING)
        if v is _MISSING:
            return ""
        ok = False
        if isinstance(v, str):
            try:
                ipaddress.ip_address(v)
                ok = True
            except ValueError:
                ok = _is_hostname(v)
        if not ok:
            self.add(
                f"{p}.address",
                f"{v!r} is not an IP address or host name; give e.g. 10.0.0.11 (quoted if odd)",
            )
            return ""
        return v

    def _roles(self, m: dict, p: str) -> frozenset[Role]:
        v = m.get("roles", _MISSING)
        if v is _MISSING:
            return frozenset()
        if not isinstance(v, list) or not v:
            self.add(
                f"{p}.roles", f"is {_kind(v)}, not a list of roles; write e.g. roles: [etcd, controlplane]"
            )
            return frozenset()
        roles: set[Role] = set()
        for j, r in enumerate(v):
            try:
                role = Role(r)
            except ValueError:
                self.add(f"{p}.roles[{j}]", f"{r!r} is not a role; use one of {ROLE_NAMES}")
                continue
            if role in roles:
                self.add(f"{p}.roles[{j}]", f"{r!r} is listed twice; list it once")
            roles.add(role)
        if {Role.ETCD, Role.ETCD_LEARNER} <= roles:
            self.add(
                f"{p}.roles", "has both etcd and etcd-learner; a member is a voter or a learner: keep one"
            )
        return frozenset(roles)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last silently: a typo'd copy of a
    host's block would otherwise win without a word)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                f"while reading a mapping (first '{key}' at line {seen[key] + 1})",
                None,
                f"duplicate key '{key}'",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_: Callable = _construct_mapping  # keep the name visible to readers/linters
