"""What a lab is made of: its names, addresses and directories, validated, and the state file that
remembers a running lab's config so `power`, `ssh`, `down` and `env` need no flags."""

from __future__ import annotations

import enum
import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.inventory import Role, RuntimeKind

DEFAULT_PREFIX = "edr"
DEFAULT_SUBNET = "10.231.0.0/24"
DEFAULT_ETCD = "3.4"
DEFAULT_BASE_DIR = Path("/tmp/etcd-dr")
STATE_FILE = "lab.json"
INVENTORY_FILE = "inventory.yaml"

# The hosts overlay these dirs (copy-on-write): a lab dir under one of them would be hidden by the
# overlay inside the hosts, which read their sshd config and keys from it.
OVERLAID_DIRS = ("etc", "var", "opt", "root", "usr", "home", "srv")

# Longest prefix such that "v<prefix><tag>" (root-side veth) and "<prefix>br0" fit IFNAMSIZ-1 = 15.
MAX_PREFIX_LEN = 12
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]*$")


@dataclass(frozen=True)
class HostSpec:
    """One lab host: its name, a short tag for interface names, the last octet of its address."""

    name: str
    tag: str
    octet: int
    roles: frozenset[Role]

    @property
    def runs_etcd(self) -> bool:
        return Role.ETCD in self.roles or Role.ETCD_LEARNER in self.roles


# The source incident's topology: three voters, node1 in the other data center (a learner with
# `lab up --learner`: see LabConfig.roles), node2 a worker.
HOSTS: tuple[HostSpec, ...] = (
    HostSpec("master1", "m1", 11, frozenset({Role.ETCD, Role.CONTROLPLANE})),
    HostSpec("master2", "m2", 12, frozenset({Role.ETCD, Role.CONTROLPLANE})),
    HostSpec("master3", "m3", 13, frozenset({Role.ETCD, Role.CONTROLPLANE})),
    HostSpec("node1", "n1", 21, frozenset({Role.WORKER})),
    HostSpec("node2", "n2", 22, frozenset({Role.WORKER})),
)
HOST_NAMES = tuple(h.name for h in HOSTS)
LEARNER_HOST = "node1"


class EtcdSeries(enum.StrEnum):
    V3_4 = "3.4"  # Debian 12's 3.4.23 in /usr/bin
    V3_5 = "3.5"  # Debian 13's 3.5.x, fetched into a cache on first use (etcd_dr.etcdbin)


@dataclass(frozen=True)
class LabConfig:
    prefix: str = DEFAULT_PREFIX
    subnet: str = DEFAULT_SUBNET
    dir: Path = field(default_factory=lambda: default_lab_dir(DEFAULT_PREFIX))
    etcd: EtcdSeries = EtcdSeries.V3_4
    runtime: RuntimeKind = RuntimeKind.DOCKER
    learner_etcd: EtcdSeries | None = None  # node1 joins as a learner running this etcd (lab up --learner)

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        net = parse_subnet(self.subnet)
        object.__setattr__(self, "subnet", str(net))
        object.__setattr__(self, "dir", validate_dir(Path(self.dir)))
        object.__setattr__(self, "etcd", EtcdSeries(self.etcd))
        object.__setattr__(self, "runtime", RuntimeKind(self.runtime))
        if self.learner_etcd is not None:
            object.__setattr__(self, "learner_etcd", EtcdSeries(self.learner_etcd))

    # --- names (all derived from the prefix, so two labs with different prefixes never collide)
    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def host(self, name: str) -> HostSpec:
        for h in HOSTS:
            if h.name == name:
                return h
        raise InputError(f"no lab host named {name!r} (hosts: {', '.join(HOST_NAMES)})")

    def roles(self, host: str) -> frozenset[Role]:
        """The host's roles in this lab: node1 is an etcd learner when the lab has one."""
        spec = self.host(host)
        if host == LEARNER_HOST and self.learner_etcd is not None:
            return spec.roles | {Role.ETCD_LEARNER}
        return spec.roles

    def address(self, host: str) -> str:
        return str(self.network.network_address + self.host(host).octet)

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def veth(self, host: str) -> str:
        return f"v{self.prefix}{self.host(host).tag}"

    def cgroup_parent(self, host: str) -> str:
        """Where the host's dockerd puts its containers' cgroups (removed by cleanup)."""
        return f"etcd-dr-{self.prefix}-{host}"

    # --- files
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def inventory_path(self) -> Path:
        return self.dir / INVENTORY_FILE

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    @property
    def certs_dir(self) -> Path:
        return self.dir / "certs"

    @property
    def images_dir(self) -> Path:
        return self.dir / "images"

    def host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def to_json(self) -> dict[str, str | None]:
        d = asdict(self)
        return {k: (None if v is None else str(v)) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict[str, str | None]) -> LabConfig:
        learner = d.get("learner_etcd")
        return cls(
            prefix=str(d["prefix"]),
            subnet=str(d["subnet"]),
            dir=Path(str(d["dir"])),
            etcd=EtcdSeries(d["etcd"]),
            runtime=RuntimeKind(d["runtime"]),
            learner_etcd=EtcdSeries(learner) if learner else None,
        )


def validate_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix or ""):
        raise InputError(f"lab prefix {prefix!r}: use lowercase letters and digits, starting with a letter")
    if len(prefix) > MAX_PREFIX_LEN:
        raise InputError(
            f"lab prefix {prefix!r} is {len(prefix)} characters: at most {MAX_PREFIX_LEN}, so interface "
            f"names like 'v{prefix}m1' stay within Linux's 15"
        )
    return prefix


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as e:
        raise InputError(f"lab subnet {subnet!r} is not an IPv4 network like 10.231.0.0/24: {e}") from e
    if net.prefixlen > 27:
        # .22 (node2) must be a host address of the subnet: /27 holds .1-.30.
        raise InputError(f"lab subnet {subnet}: too small, use a /27 or larger (hosts use .1 to .22)")
    if not net.is_private or net.is_loopback or net.is_link_local:
        raise InputError(f"lab subnet {subnet}: use a private range (10/8, 172.16/12, 192.168/16)")
    return net


def validate_dir(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    parts = path.parts
    if len(parts) < 2:
        raise InputError(f"lab dir {path}: use a directory below /, e.g. {default_lab_dir(DEFAULT_PREFIX)}")
    if parts[1] in OVERLAID_DIRS:
        raise InputError(
            f"lab dir {path} is under /{parts[1]}, which every lab host overlays (copy-on-write): "
            f"the hosts would not see it; use e.g. {default_lab_dir(DEFAULT_PREFIX)}"
        )
    return path


def default_lab_dir(prefix: str) -> Path:
    return DEFAULT_BASE_DIR / f"lab-{prefix}"


def env_prefix() -> str:
    return os.environ.get("ETCD_DR_LAB_PREFIX") or DEFAULT_PREFIX


def env_lab_dir(prefix: str | None = None) -> Path:
    d = os.environ.get("ETCD_DR_LAB_DIR")
    return Path(d) if d else default_lab_dir(prefix or env_prefix())


def env_subnet() -> str:
    return os.environ.get("ETCD_DR_LAB_SUBNET") or DEFAULT_SUBNET


def default_inventory_path() -> Path:
    """The lab's inventory: what every other etcd-dr command uses when no inventory is given.
    Honours ETCD_DR_LAB_DIR, else ETCD_DR_LAB_PREFIX (default 'edr') -> /tmp/etcd-dr/lab-<prefix>."""
    return env_lab_dir() / INVENTORY_FILE


# --- the state file: what is running, so later commands need no flags and cleanup can prove ownership


@dataclass(frozen=True)
class HostProc:
    """A host's PID 1 as seen from the root namespace, with its start time (clock ticks since boot,
    /proc/PID/stat field 22): a PID alone may have been reused by an unrelated process."""

    pid: int
    start_ticks: int


class Build(enum.StrEnum):
    """How far `lab up` got building the lab on its disks (saved at each stage): an interrupted build
    (a SIGINT during the learner add) must not pass for a lab that is whole."""

    HOSTS = "hosts"  # hosts booting; etcd not provisioned yet
    VOTERS = "voters"  # voters healthy, inventory written; a learner asked for has not joined yet
    COMPLETE = "complete"


@dataclass(frozen=True)
class LabState:
    config: LabConfig
    hosts: dict[str, HostProc] = field(default_factory=dict)
    image: str | None = None
    etcd_version: str | None = None
    etcd_bindir: str | None = None
    learner_version: str | None = None  # full version of node1's learner etcd, when the lab has one
    build: Build = Build.HOSTS

    def with_host(self, name: str, proc: HostProc | None) -> LabState:
        hosts = dict(self.hosts)
        if proc is None:
            hosts.pop(name, None)
        else:
            hosts[name] = proc
        return replace(self, hosts=hosts)

    def save(self) -> None:
        self.config.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "config": self.config.to_json(),
            "hosts": {k: asdict(v) for k, v in self.hosts.items()},
            "image": self.image,
            "etcd_version": self.etcd_version,
            "etcd_bindir": self.etcd_bindir,
            "learner_version": self.learner_version,
            "build": str(self.build),
        }
        tmp = self.config.state_path.with_suffix(".part")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.config.state_path)

    @classmethod
    def load(cls, lab_dir: Path) -> LabState | None:
        path = lab_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise InputError(
                f"lab state file {path} is unreadable ({e}): run `etcd-dr lab down --wipe`"
            ) from e
        return cls(
            config=LabConfig.from_json(data["config"]),
            hosts={k: HostProc(**v) for k, v in data.get("hosts", {}).items()},
            image=data.get("image"),
            etcd_version=data.get("etcd_version"),
            etcd_bindir=data.get("etcd_bindir"),
            learner_version=data.get("learner_version"),
            # a state file from before the field: nothing tells, take it as built
            build=Build(data.get("build", Build.COMPLETE)),
        )


def up_command(cfg: LabConfig) -> str:
    """The `etcd-dr lab up` that builds this lab again from scratch."""
    learner = f" --learner --learner-etcd {cfg.learner_etcd}" if cfg.learner_etcd else ""
    return (
        f"etcd-dr lab up --prefix {cfg.prefix} --subnet {cfg.subnet} --dir {cfg.dir} "
        f"--etcd {cfg.etcd} --runtime {cfg.runtime}{learner}"
    )


def incomplete(state: LabState) -> str | None:
    """Pure: None for a lab whose build finished, else one sentence: what is missing and the fix."""
    if state.build is Build.COMPLETE:
        return None
    lab, rebuild = f"lab '{state.config.prefix}' is incomplete", f"rebuild it: `{up_command(state.config)}`"
    if state.build is Build.HOSTS:
        return f"{lab}: its `lab up` stopped before etcd ran on the voters; {rebuild}"
    missing = (
        f"before node1 joined as the learner it asked for (--learner {state.config.learner_etcd})"
        if state.config.learner_etcd
        else "before its last step"
    )
    return f"{lab}: its `lab up` stopped {missing}; finish it with `etcd-dr lab up --resume`, or {rebuild}"


def resolve_config(
    *,
    prefix: str | None = None,
    lab_dir: Path | None = None,
    subnet: str | None = None,
) -> LabConfig:
    """The config of an existing lab: from its state file (flags/env name which lab), else the one
    asked for (ETCD_DR_LAB_SUBNET): never the default subnet behind the caller's back, which another
    lab may be using (a `lab down` routes its subnet as unreachable)."""
    prefix = prefix or env_prefix()
    d = lab_dir or env_lab_dir(prefix)
    state = LabState.load(Path(d))
    if state is not None:
        return state.config
    return LabConfig(prefix=validate_prefix(prefix), subnet=subnet or env_subnet(), dir=Path(d))
