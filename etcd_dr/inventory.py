"""The cluster as data: hosts, roles, how etcd runs, where its certificates are, timings.

An inventory is a YAML file (format in README.md, "Inventory"; its JSON Schema: `etcd-dr inventory
schema`). It is validated up front: every problem is reported with its path and the fix
(`hosts[2].address: '10.0.0' is not an IP address or host name`), and nothing is contacted while
loading. Relative file paths resolve against the directory of the inventory file (a Prefect block
keeps that directory as its `base_dir`), never the process's working directory: the CLI and a flow
run from anywhere see the same files.

The model is a set of frozen pydantic dataclasses and each key of the YAML is declared once, below:
its kind (an Annotated type: what the schema says, and a strict check worded for the operator), its
default and its meaning. Loading (`parse_inventory`), the defaults, `inventory_to_dict` and the JSON
Schema all read that declaration; `_cross_checks` holds what no single field can say.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from etcd_dr.errors import InputError

# ---------------------------------------------------------------------------------------------
# The vocabulary of field kinds. Each kind is one Annotated type: its pydantic type and constraints
# (what the JSON Schema says) and a validator that checks the raw YAML value strictly (no "yes" for
# true, no "22" for 22) and says what is wrong and what to do in the words of the error messages.


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


class OffsiteKind(enum.StrEnum):
    DIR = "dir"
    S3 = "s3"


ROLE_NAMES = ", ".join(r.value for r in Role)

# Cluster and host names go into file names, lock and audit keys: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL_RE = re.compile(r"^https?://[^/\s]+/?$")


def _bad(message: str, at: str = "") -> PydanticCustomError:
    """A problem in the inventory's words; `at` extends the field's path (`[2]` of a list)."""
    return PydanticCustomError("inventory", "{message}", {"message": message, "at": at})


def _kind(v: object) -> str:
    if v is None:
        return "empty"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), f"a {type(v).__name__}"
    )


def _string(pattern: re.Pattern[str] | None = None, fix: str = "") -> Callable[[object], object]:
    def check(v: object) -> object:
        if v is None:
            return v  # an optional field left empty (a required one is reported as missing)
        if not isinstance(v, str) or not v:
            raise _bad(f"{v!r} is not a (non-empty) string; quote it")
        if pattern is not None and not pattern.match(v):
            raise _bad(f"{v!r} is not allowed here; {fix}")
        return v

    return check


def _name(v: object) -> object:
    if not isinstance(v, str) or not _NAME_RE.match(v):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(v)).strip("-._")[:63] or "name"
        raise _bad(
            f"{v!r} is not a valid name; use 1-63 letters, digits, '.', '_' or '-', "
            f"starting and ending with a letter or digit (e.g. {safe!r})"
        )
    return v


def _boolean(v: object) -> object:
    if not isinstance(v, bool):
        raise _bad(f"{v!r} is not a boolean; write true or false")
    return v


def _port(v: object) -> object:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{v!r} is not a port number; use an integer 1-65535")
    if not 1 <= v <= 65535:
        raise _bad(f"{v} is out of range; use a port number 1-65535")
    return v


def _whole(unit: str) -> Callable[[object], object]:
    def check(v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(f"{v!r} is not a whole number; give {unit} as an integer")
        if v <= 0:
            raise _bad(f"{v} is not positive; give a value > 0 ({unit})")
        return v

    return check


def _count(unit: str) -> Callable[[object], object]:
    """A whole number >= 0 (0 turns that rule off)."""

    def check(v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _bad(f"{v!r} is not a whole number >= 0; give {unit} (0 turns it off)")
        return v

    return check


def _seconds(zero_ok: bool) -> Callable[[object], object]:
    def check(v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _bad(f"{v!r} is not a number; give seconds as a number, e.g. 2.5")
        if v < 0 or (v == 0 and not zero_ok) or v != v or v == float("inf"):
            raise _bad(f"{v} is not positive; give seconds {'>= 0 (0 turns it off)' if zero_ok else '> 0'}")
        return float(v)

    return check


def _choice(enum_t: type[enum.StrEnum], what: str) -> Callable[[object], object]:
    names = ", ".join(e.value for e in enum_t)

    def check(v: object) -> object:
        try:
            return enum_t(v)
        except ValueError:
            raise _bad(f"{v!r} is not a {what}; use one of {names}") from None

    return check


def _host_path(v: object) -> object:
    _string()(v)
    if isinstance(v, str) and not v.startswith("/"):
        raise _bad(f"{v!r} is not an absolute path; paths on the hosts must start with /")
    return v


def _address(v: object) -> object:
    if isinstance(v, str):
        try:
            ipaddress.ip_address(v)
            return v
        except ValueError:
            if _is_hostname(v):
                return v
    raise _bad(f"{v!r} is not an IP address or host name; give e.g. 10.0.0.11 (quoted if odd)")


def _roles(v: object) -> object:
    if isinstance(v, frozenset | set):
        return frozenset(v)  # built in code (the lab, tests), not read from YAML
    if not isinstance(v, list) or not v:
        raise _bad(f"is {_kind(v)}, not a list of roles; write e.g. roles: [etcd, controlplane]")
    roles: set[Role] = set()
    for j, r in enumerate(v):
        try:
            role = Role(r)
        except ValueError:
            raise _bad(f"{r!r} is not a role; use one of {ROLE_NAMES}", f"[{j}]") from None
        if role in roles:
            raise _bad(f"{r!r} is listed twice; list it once", f"[{j}]")
        roles.add(role)
    if {Role.ETCD, Role.ETCD_LEARNER} <= roles:
        raise _bad("has both etcd and etcd-learner; a member is a voter or a learner: keep one")
    return frozenset(roles)


def _template(v: object) -> None:
    """Power `address` and `argv` may hold {host} and {address}, nothing else."""
    for a in v if isinstance(v, list | tuple) else [v] if isinstance(v, str) else []:
        try:
            str(a).format(host="h", address="a")
        except (KeyError, IndexError, ValueError):
            raise _bad(f"{a!r}: only {{host}} and {{address}} may be filled in") from None


def _bmc_address(v: object) -> object:
    _string()(v)
    _template(v)
    return v


def _argv(v: object) -> object:
    if isinstance(v, tuple):
        return v
    if not isinstance(v, list) or not v or not all(isinstance(a, str) and a for a in v):
        raise _bad("is not a list of strings; give the command as a list, e.g. [my-cli, status, '{host}']")
    _template(v)
    return tuple(v)


def _regex(v: object) -> object:
    _string()(v)
    if isinstance(v, str):
        try:
            re.compile(v)
        except re.error as e:
            raise _bad(f"{v!r} is not a regular expression ({e}); e.g. '\\boff\\b'") from None
    return v


def _url(v: object) -> object:
    _string()(v)
    if isinstance(v, str) and not _URL_RE.match(v):
        raise _bad(f"{v!r} is not a URL; give e.g. https://s3.example.net:9000")
    return v


def _required(v: object) -> object:
    if v is None:
        raise _bad("is missing; add it")
    return v


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

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)


def _local(must_exist: bool, fix: str = "", private_key: bool = False) -> Callable[..., object]:
    """A file or directory on this machine: relative paths resolve against the inventory's directory
    (the validation context's base_dir); with check_files, a file read must exist."""

    def check(v: object, info: ValidationInfo) -> object:
        if v is None or isinstance(v, InMemoryFile):
            return v  # a Prefect block's credential: nothing on disk to check
        ctx = info.context or {}
        if isinstance(v, Path) and "base_dir" not in ctx:
            return v  # built in code (the lab, dataclasses.replace): already resolved
        if not isinstance(v, str | Path) or not str(v):
            raise _bad(f"{v!r} is not a path; give a file path (quoted if odd)")
        base: Path = ctx.get("base_dir", Path.cwd())
        p = base / Path(v).expanduser()
        if must_exist and ctx.get("check_files", False):
            if not p.exists():
                rel = "" if Path(v).is_absolute() else f" (relative to {base})"
                raise _bad(f"{p} does not exist{rel}; {fix or 'check the path'}")
            if p.is_dir():
                raise _bad(f"{p} is a directory; give the file")
            if private_key:
                try:
                    head = p.read_bytes()[:64]
                except OSError as e:
                    raise _bad(f"{p} cannot be read ({e.strerror}); fix its permissions") from None
                if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
                    raise _bad(f"{p} is a public key; give the private key (the file without .pub)")
        return p

    return check


def _v(fn: Callable[..., object]) -> BeforeValidator:
    return BeforeValidator(fn)


Name = Annotated[str, Field(pattern=_NAME_RE.pattern), _v(_name)]
Bool = Annotated[bool, _v(_boolean)]
Port = Annotated[int, Field(ge=1, le=65535), _v(_port)]
Millis = Annotated[int, Field(gt=0), _v(_whole("milliseconds"))]
Seconds = Annotated[float, Field(gt=0), _v(_seconds(zero_ok=False))]
Str = Annotated[str, Field(min_length=1), _v(_string())]
_user = _string(_USER_RE, "give a login name (letters, digits, '_', '.', '-')")
User = Annotated[str, Field(pattern=_USER_RE.pattern), _v(_user)]
EnvName = Annotated[str, Field(pattern=_ENV_RE.pattern), _v(_string(_ENV_RE, "name an environment variable"))]
HostPath = Annotated[str, Field(pattern="^/"), _v(_host_path)]
# A place on this machine that etcd-dr writes (state, audit log, snapshots): never a credential.
_STATE_PATH = "state path"
LocalDir = Annotated[Path, _v(_local(must_exist=False)), _STATE_PATH]
# A file on this machine etcd-dr reads or writes that may not exist yet (RKE's files).
LocalPath = Annotated[
    Path, _v(_local(must_exist=False)), WithJsonSchema({"type": "string", "format": "path"})
]


def _file(fix: str = "", private_key: bool = False) -> Any:
    """A local file etcd-dr reads (key, known_hosts, client TLS): its path, or its content in memory."""
    return Annotated[
        Path | InMemoryFile,
        _v(_local(must_exist=True, fix=fix, private_key=private_key)),
        WithJsonSchema({"type": "string", "format": "path"}),
    ]


# Unknown keys are errors (a typo'd key must not silently fall back to a default); objects are
# frozen like the observations built from them.
_CONFIG = ConfigDict(extra="forbid")


def _schema_requires(*names: str) -> Callable[[dict], None]:
    """JSON Schema fix-up for a field that is required but, for the constructor's argument order,
    declared with a placeholder default (validate_default makes the validator refuse it)."""

    def fix(schema: dict) -> None:
        for n in names:
            schema.setdefault("required", []).append(n)
            schema["properties"][n].pop("default", None)

    return fix


# ---------------------------------------------------------------------------------------------
# The model: one declaration per field (type and rule, default, meaning).


@dataclass(frozen=True, config=_CONFIG)
class PowerSettings:
    """How to ask whether a host's power is off: fencing evidence that needs no answer from the host.
    `address` (ipmi) and `argv` (command) may hold {host} (its name) and {address}; the IPMI password
    comes from the environment variable `password_env` names, never from the inventory."""

    driver: Annotated[PowerDriver, _v(_choice(PowerDriver, "power driver"))]
    dir: LocalDir | None = Field(None, description="lab: the lab's directory (default: the inventory's)")
    address: Annotated[str, _v(_bmc_address)] | None = Field(None, description="ipmi: the BMC")
    user: User | None = Field(None, description="ipmi: the BMC user")
    password_env: EnvName | None = Field(
        None, description="ipmi: the NAME of the variable holding the password"
    )
    interface: Annotated[str, _v(_string(re.compile(r"^[a-z]+$"), "e.g. lanplus"))] = Field(
        "lanplus", description="ipmi: ipmitool -I"
    )
    argv: Annotated[tuple[str, ...], _v(_argv)] = Field((), description="command: the command, as a list")
    off: Annotated[str, _v(_regex)] | None = Field(
        None, description="command: a regular expression found in its output when the power is off"
    )
    timeout: Seconds = Field(10.0, description="seconds per query")


# Which keys each driver takes (besides driver and timeout), and which of them it needs.
_POWER_NEEDS = {
    PowerDriver.LAB: ((), ("dir",)),
    PowerDriver.IPMI: (("address", "user", "password_env"), ("address", "user", "password_env", "interface")),
    PowerDriver.COMMAND: (("argv", "off"), ("argv", "off")),
}


@dataclass(frozen=True, config=_CONFIG)
class Host:
    """One machine. user/port are the effective SSH values: the loader fills them from `ssh.*` unless
    the host overrides them; the effective sudo is `host.sudo or ssh.sudo`."""

    name: Name
    address: Annotated[str, _v(_address)]
    roles: Annotated[
        frozenset[Role], Field(description="etcd (voter), etcd-learner, controlplane, worker"), _v(_roles)
    ]
    user: User = Field("root", description="ssh user (default: ssh.user)")
    port: Port = Field(22, description="ssh port (default: ssh.port)")
    sudo: Bool = Field(False, description="run commands with sudo (default: ssh.sudo)")
    # What this host's member runs when it differs from etcd.image / etcd.binary (a learner of
    # another etcd version in a second data center, as in the source incident).
    etcd_image: Str | None = Field(None, description="docker: the image this member runs (else etcd.image)")
    etcd_binary: HostPath | None = Field(None, description="process: its etcd binary (else etcd.binary)")
    power: PowerSettings | None = Field(None, description="this host's own power driver (else power)")
    # RKE's `address` when its `internal_address` differs: etcd listens on the internal one
    # (`address` here), SSH reaches the host at the other (a NATed cloud address, a second network).
    ssh_address: Annotated[str, _v(_address)] | None = Field(
        None, description="where SSH connects, when not address (RKE: address vs internal_address)"
    )

    @property
    def ssh_host(self) -> str:
        """The address SSH connects to (and known_hosts lists)."""
        return self.ssh_address or self.address

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


@dataclass(frozen=True, config=ConfigDict(_CONFIG, json_schema_extra=_schema_requires("known_hosts")))
class SshSettings:
    key_file: _file("give the private key etcd-dr logs in with", private_key=True) | None = Field(
        None, description="private key (never logged); none: only the ssh-agent's keys (agent: true)"
    )
    known_hosts: Annotated[
        _file("give a known_hosts file with every host's key (never auto-added)"), _v(_required)
    ] = Field(None, validate_default=True, description="strict host-key checking, never auto-added")
    user: User = "root"
    port: Port = 22
    connect_timeout: Seconds = Field(3.0, description="seconds")
    command_timeout: Seconds = Field(60.0, description="seconds")
    keepalive: Annotated[float, Field(ge=0), _v(_seconds(zero_ok=True))] = Field(
        5.0, description="seconds (0 turns it off)"
    )
    sudo: Bool = False
    agent: Bool = Field(False, description="also offer the ssh-agent's keys at $SSH_AUTH_SOCK")


@dataclass(frozen=True, config=_CONFIG)
class BastionSettings:
    """A jump host (RKE's bastion_host): etcd-dr reaches every host's sshd and every member's etcd
    client port through it (SSH `direct-tcpip` channels over one shared connection), as `ssh -J`
    does. Its host key is checked like the hosts'; what it leaves out is ssh's."""

    address: Annotated[str, _v(_address)]
    port: Port = 22
    user: User = Field("root", description="default: ssh.user")
    key_file: _file("give the private key etcd-dr logs in to the bastion with", private_key=True) | None = (
        Field(None, description="default: ssh.key_file (never logged)")
    )
    known_hosts: _file("give a known_hosts file with the bastion's key (never auto-added)") | None = Field(
        None, description="default: ssh.known_hosts; must list the bastion's key"
    )


@dataclass(frozen=True, config=_CONFIG)
class ClientTLS:
    """Files on the orchestrator's machine (or their content in memory) that etcd-dr uses to reach
    etcd over mTLS."""

    ca_cert: _file()
    cert: _file()
    key: _file()


@dataclass(frozen=True, config=ConfigDict(_CONFIG, json_schema_extra=_schema_requires("client")))
class EtcdSettings:
    runtime: Annotated[RuntimeKind, _v(_choice(RuntimeKind, "runtime"))] = Field(
        RuntimeKind.DOCKER, description="docker (RKE: a container) | process"
    )
    client: Annotated[ClientTLS, _v(_required)] = Field(
        None, validate_default=True, description="what etcd-dr uses to reach etcd (files on this machine)"
    )
    container: Annotated[str, _v(_string(_CONTAINER_RE, "use a Docker container name"))] = Field(
        "etcd", description="docker: the container's name"
    )
    image: Str | None = Field(None, description="docker: image for members etcd-dr starts")
    binary: HostPath = Field("/usr/bin/etcd", description="process: the etcd binary on the host")
    data_dir: HostPath = Field("/var/lib/etcd", description="on the host")
    client_port: Port = 2379
    peer_port: Port = 2380
    heartbeat_interval: Millis = Field(500, description="ms, RKE's")
    election_timeout: Millis = Field(5000, description="ms, RKE's; at least 5 x heartbeat_interval")
    cert_dir: HostPath = Field(
        "/etc/kubernetes/ssl", description="on each host: kube-ca.pem, kube-etcd-<ip-dashed>.pem, ...-key.pem"
    )
    dial_timeout: Seconds = Field(2.0, description="seconds per endpoint")
    request_timeout: Seconds = Field(5.0, description="seconds per request")

    def ca_path(self) -> str:
        return f"{self.cert_dir}/kube-ca.pem"

    def cert_path(self, host: Host) -> str:
        return f"{self.cert_dir}/kube-etcd-{host.address_dashed}.pem"

    def key_path(self, host: Host) -> str:
        return f"{self.cert_dir}/kube-etcd-{host.address_dashed}-key.pem"


@dataclass(frozen=True, config=_CONFIG)
class S3Target:
    """An S3-compatible bucket. Credentials come from environment variables named here, never from
    the inventory itself."""

    endpoint: Annotated[str, _v(_url)]
    bucket: Annotated[str, _v(_string(_BUCKET_RE, "use 3-63 lower-case letters, digits, '.', '-'"))]
    prefix: str = ""
    region: Str = "us-east-1"
    access_key_id_env: EnvName = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: EnvName = "AWS_SECRET_ACCESS_KEY"


def _offsite_kind(data: Any) -> Any:
    """The YAML names one of dir or s3; the kind follows from which."""
    if isinstance(data, dict) and "kind" not in data:
        if ("dir" in data) == ("s3" in data):
            raise _bad("give exactly one of dir or s3")
        return {**data, "kind": OffsiteKind.DIR if "dir" in data else OffsiteKind.S3}
    return data


@dataclass(frozen=True, config=_CONFIG)
class OffsiteSettings:
    kind: SkipJsonSchema[OffsiteKind]  # which of dir or s3 is given
    dir: LocalDir | None = Field(None, description="a directory on this machine (a mount of another site)")
    s3: S3Target | None = None


@dataclass(frozen=True, config=_CONFIG)
class SnapshotSettings:
    """Where snapshots live on this machine, how long they are kept, and the off-site copy."""

    dir: LocalDir
    keep_last: Annotated[int, Field(gt=0), _v(_whole("snapshots"))] = Field(
        5, description="the newest N, whatever their age"
    )
    keep_daily: Annotated[int, Field(ge=0), _v(_count("days"))] = Field(
        7, description="plus the newest of each of the last N days"
    )
    keep_weekly: Annotated[int, Field(ge=0), _v(_count("weeks"))] = Field(
        4, description="plus the newest of each of the last N ISO weeks"
    )
    offsite: Annotated[OffsiteSettings, _v(_offsite_kind)] | None = None


@dataclass(frozen=True, config=_CONFIG)
class CASettings:
    """Where the cluster CA (RKE's kube-ca) is read from to sign member certificates: over SSH from
    `host` (default: the first voter), at these paths on it."""

    host: Str | None = None
    cert: HostPath | None = Field(None, description="default: <etcd.cert_dir>/kube-ca.pem")
    key: HostPath | None = Field(None, description="default: <etcd.cert_dir>/kube-ca-key.pem")


@dataclass(frozen=True, config=_CONFIG)
class CheckSettings:
    """Thresholds of `etcd-dr check`."""

    snapshot_max_age_hours: Seconds = 26.0
    cert_min_days: Annotated[int, Field(gt=0), _v(_whole("days"))] = 30
    max_clock_skew: Seconds = Field(1.0, description="seconds between any two hosts")
    min_free_factor: Seconds = Field(2.0, description="free disk on each etcd host >= factor x db size")
    learner_max_lag: Annotated[int, Field(gt=0), _v(_whole("raft entries"))] = Field(
        1000, description="raft entries behind the leader"
    )
    deltalog_max_lag_s: Seconds = Field(
        10.0, description="seconds the delta log (etcd-dr backup stream) may be behind the cluster"
    )


@dataclass(frozen=True, config=_CONFIG)
class RkeSettings:
    """RKE's own files for this cluster (`etcd-dr kubernetes`, `restore-kubernetes`): cluster.yml and
    cluster.rkestate on this machine (RKE's names: the state file is cluster.yml's path with the
    extension replaced by .rkestate), and where `rke up` runs (the deploy host, over SSH)."""

    cluster_yml: LocalPath = Field(description="RKE's cluster.yml on this machine")
    deploy_host: Name = Field(description="the inventory host that runs `rke up` (RKE's deploy machine)")
    state_file: LocalPath | None = Field(None, description="default: cluster_yml with .rkestate")
    kube_config: LocalPath | None = Field(None, description="default: kube_config_<cluster_yml's name>")
    certs_dir: LocalPath | None = Field(
        None,
        description="the state file's certificates as files (kube-ca, kube-etcd-*, the etcd client), "
        "written by `etcd-dr inventory import-rke`",
    )
    remote_dir: HostPath = Field("/opt/rke", description="on the deploy host: where `rke up` runs")
    binary: Str = Field("rke", description="the rke command on the deploy host")
    up_timeout: Seconds = Field(1800.0, description="seconds `rke up` may take")

    def state_path(self) -> Path:
        return self.state_file or self.cluster_yml.with_suffix(".rkestate")

    def kube_config_path(self) -> Path:
        return self.kube_config or self.cluster_yml.with_name(f"kube_config_{self.cluster_yml.name}")


def _hosts(v: object) -> object:
    if v is None or v == []:
        what = f"is {_kind(v) if v is None else 'an empty list'}"
        raise _bad(f"{what}: no host; list each with its name, address and roles:{_shown(_MINIMAL_HOSTS)}")
    if not isinstance(v, list | tuple):
        raise _bad(f"is {_kind(v)}, not a list of hosts; add `- name: ... address: ... roles: [...]`")
    return v


@dataclass(frozen=True, config=_CONFIG)
class Inventory:
    cluster: Annotated[Name, Field(description="a name: audit records, locks and snapshots carry it")]
    hosts: Annotated[tuple[Host, ...], Field(min_length=1), _v(_hosts)]
    etcd: EtcdSettings
    ssh: SshSettings
    rehearsal: Bool = Field(False, description="fault injection is refused unless true")
    automatic_recovery: Bool = Field(
        False,
        description="a recovery started by an alert (etcd-dr server) runs without the approval form; "
        "fencing then rests on power-off or stopped-etcd evidence alone",
    )
    audit_log: LocalDir | None = Field(None, description="append-only, hash-chained (etcd_dr.audit)")
    snapshots: SnapshotSettings | None = None
    ca: CASettings = Field(default_factory=CASettings)
    check: CheckSettings = Field(default_factory=CheckSettings)
    rke: RkeSettings | None = Field(None, description="RKE's cluster.yml and state file, the deploy host")
    bastion: BastionSettings | None = Field(
        None, description="a jump host every SSH and etcd connection goes through (RKE's bastion_host)"
    )
    power: PowerSettings | None = Field(None, description="the power driver of every host without its own")
    state_dir: LocalDir | None = Field(
        None,
        description="journal, lock, fault ledger, default audit log and snapshots; default: "
        "audit_log's directory, else the inventory's",
    )  # as the inventory says; state_path() gives the one in use
    # Where it was read from, and what relative paths resolved against: set by the loader, not keys.
    source: SkipJsonSchema[Path | None] = dataclasses.field(default=None, compare=False)
    base_dir: SkipJsonSchema[Path | None] = dataclasses.field(default=None, compare=False)

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


_ADAPTER = TypeAdapter(Inventory)
_INTERNAL = ("source", "base_dir")  # fields the loader sets; never keys of the YAML


def inventory_schema() -> dict:
    """The JSON Schema of the inventory YAML (editors validate with it): from the model itself."""
    schema = _ADAPTER.json_schema(mode="validation")
    schema["title"] = "etcd-dr inventory"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ---------------------------------------------------------------------------------------------
# Loading and validating

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

# Messages for a missing key that say more than "add it".
_MISSING_SAYS = {
    ("hosts",): "is missing: no host; list each with its name, address and roles:{hosts}",
    ("etcd",): "is missing; add it with at least its client: ca_cert, cert, key (files on this machine)",
    ("ssh",): "is missing; add it with at least key_file (or agent: true) and known_hosts",
}


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
    return parse_inventory(read_inventory_yaml(path), path.parent, path)


def read_inventory_yaml(path: Path) -> object:
    """The YAML document of an inventory file; InventoryError when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(
            [
                f"{path}: no such file; pass the path of an inventory YAML (format: README.md, "
                "Inventory; `etcd-dr inventory schema`)"
            ]
        ) from None
    except IsADirectoryError:
        raise InventoryError([f"{path}: is a directory; pass the inventory YAML file inside it"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InventoryError(
            [f"{path}: cannot be read ({e.__class__.__name__}: {e}); check the file"]
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
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


def parse_inventory(
    data: object, base_dir: Path, source: Path | None = None, *, check_files: bool = True
) -> Inventory:
    """Validate already-parsed inventory data (a YAML document or a dict from a Prefect block).

    Relative file paths resolve against base_dir. With check_files (the default), files etcd-dr
    reads on this machine (SSH key, known_hosts, client TLS) must exist; a caller that writes them
    later (the lab, before it generates keys) may pass False. Raises InventoryError with every problem.
    """
    base = Path(base_dir).expanduser().absolute()
    if data is None or data == {}:  # an empty file, or only comments: say what one holds
        raise InventoryError(
            [
                "the inventory is empty (no YAML in it, only comments or blanks); a minimal one holds:"
                + _shown(MINIMAL_INVENTORY)
            ],
            source,
        )
    problems: list[str] = []
    inv: Inventory | None = None
    try:
        inv = _ADAPTER.validate_python(
            _with_inherited(data), context={"base_dir": base, "check_files": check_files}
        )
    except ValidationError as e:
        problems += [_problem(err) for err in e.errors()]
    if isinstance(data, dict):  # else that is the one problem
        problems += _cross_checks(data)
    if problems or inv is None:
        raise InventoryError(problems, source)
    return dataclasses.replace(inv, source=source, base_dir=base)


def _with_inherited(data: object) -> object:
    """What a key's absence means when another key gives it: a host without user/port/sudo takes
    ssh's (when ssh's is valid: else that is reported once, at ssh), and an explicit state_dir
    holds the default audit log. A copy: the caller's data is not changed."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    ssh = data.get("ssh") if isinstance(data.get("ssh"), dict) else {}
    inherit = {k: ssh[k] for k, check in (("user", _user), ("port", _port)) if _passes(check, ssh.get(k))}
    sudo = {"sudo": True} if ssh.get("sudo") is True else {}
    if isinstance(data.get("hosts"), list):
        data["hosts"] = [
            {**inherit, **h, **(sudo if h.get("sudo") is None or h.get("sudo") is False else {})}
            if isinstance(h, dict)
            else h
            for h in data["hosts"]
        ]
    bastion = data.get("bastion")
    if isinstance(bastion, dict) and "user" not in bastion and "user" in inherit:
        data["bastion"] = {**bastion, "user": inherit["user"]}
    if "audit_log" not in data and isinstance(data.get("state_dir"), str) and data["state_dir"]:
        data["audit_log"] = str(Path(data["state_dir"]) / "audit.jsonl")
    return data


def _passes(check: Callable[[object], object], v: object) -> bool:
    """Whether a value passes a field kind's check (a cross-field rule skips what is reported)."""
    try:
        check(v)
        return v is not None
    except PydanticCustomError:
        return False


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: Any) -> str:
    """One pydantic error as `path: what is wrong; what to do`."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    path = _path(loc)
    if kind == "inventory":
        path += ctx.get("at", "")
        message = ctx["message"]
    elif kind == "missing":
        message = _MISSING_SAYS.get(loc, "is missing; add it").replace("{hosts}", _shown(_MINIMAL_HOSTS))
    elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        message = "unknown key; " + (
            f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
        )
    elif kind in ("dataclass_type", "dataclass_exact_type", "dict_type", "model_type"):
        message = f"is {_kind(value)}, not a mapping; write `key: value` lines under it"
    else:  # a check the field kinds above do not word themselves
        message = f"{value!r}: {err['msg']}"
    return f"{path or '(top level)'}: {message}"


def _section_type(tp: Any) -> Any:
    """The dataclass inside an annotation (Annotated, X | None, tuple[X, ...])."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (tuple, typing.Union, types.UnionType):
            tp = next((a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis), tp)
            if typing.get_origin(tp) is None:
                return tp
        else:
            return tp


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the inventory knows at loc (a path into the YAML), from the model's fields."""
    cls: Any = Inventory
    try:
        for part in loc:
            if isinstance(part, str):
                cls = _section_type(typing.get_type_hints(cls, include_extras=True)[part])
        return _field_names(cls)
    except (KeyError, TypeError):
        return []


def _field_names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in _INTERNAL and f.name != "kind"]


def state_paths(cls: Any = Inventory, prefix: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """The keys of local directories and files etcd-dr writes (audit_log, state_dir, snapshots.dir,
    ...), as paths of mapping keys, from the model's declarations (lists such as hosts excluded)."""
    out: list[tuple[str, ...]] = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if name in _INTERNAL:
            continue
        inner = _section_type(hint)
        if _STATE_PATH in _metadata(hint):
            out.append((*prefix, name))
        elif hasattr(inner, "__pydantic_fields__") and typing.get_origin(_strip(hint)) is not tuple:
            out += state_paths(inner, (*prefix, name))
    return tuple(out)


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _metadata(tp: Any) -> tuple:
    """Annotated metadata of tp, also inside X | None."""
    found: tuple = ()
    for t in (tp, *typing.get_args(_strip(tp))):
        while typing.get_origin(t) is Annotated:
            found += typing.get_args(t)[1:]
            t = typing.get_args(t)[0]
    return found


def _cross_checks(d: dict) -> list[str]:
    """What one field cannot say alone: unique hosts, a voter, ports and timeouts that fit together,
    the ssh key or agent, a CA host of this inventory, the keys each power driver takes."""
    out: list[str] = []
    ssh = d.get("ssh")
    if isinstance(ssh, dict) and "key_file" not in ssh and ssh.get("agent") is not True:
        out.append(
            "ssh.key_file: is missing; give the private key etcd-dr logs in with, or set ssh.agent: true"
        )
    e = d.get("etcd")
    if isinstance(e, dict):
        cp, pp = e.get("client_port", 2379), e.get("peer_port")
        if cp == pp and _passes(_port, pp):
            out.append(f"etcd.peer_port: is the same as client_port ({cp}); use a different port")
        hb, el = e.get("heartbeat_interval", 500), e.get("election_timeout", 5000)
        if _passes(_whole("ms"), hb) and _passes(_whole("ms"), el) and el < 5 * hb:
            out.append(
                f"etcd.election_timeout: {el} ms is less than 5 x heartbeat_interval ({hb} ms); etcd "
                f"refuses to start: raise it to {5 * hb}"
            )
    hosts = d.get("hosts")
    names: dict[str, int] = {}
    if isinstance(hosts, list):
        addresses: dict[str, int] = {}
        roles_ok = True
        for i, h in enumerate(hosts):
            if not isinstance(h, dict):
                continue
            name, address = h.get("name"), h.get("address")
            if isinstance(name, str) and _NAME_RE.match(name):
                if name in names:
                    j = names[name]
                    out.append(
                        f"hosts[{i}].name: {name!r} is already used by hosts[{j}]; names must be unique"
                    )
                else:
                    names[name] = i
            if isinstance(address, str):
                key = normalize_address(address)
                if key in addresses:
                    out.append(
                        f"hosts[{i}].address: {address!r} is already used by hosts[{addresses[key]}]; "
                        "each host needs its own address"
                    )
                else:
                    addresses[key] = i
            try:
                _roles(h.get("roles"))
            except PydanticCustomError:
                roles_ok = False
            if isinstance(h.get("power"), dict):
                out += _power_keys(h["power"], f"hosts[{i}].power")
        voter = any(isinstance(h, dict) and Role.ETCD.value in (h.get("roles") or []) for h in hosts)
        if hosts and roles_ok and not voter:
            out.append("hosts: no host has the role etcd; at least one etcd voter is needed")
    ca = d.get("ca")
    if isinstance(ca, dict) and isinstance(ca.get("host"), str) and names and ca["host"] not in names:
        out.append(f"ca.host: {ca['host']!r} is not a host of this inventory; name one of hosts[].name")
    rke = d.get("rke")
    if (
        isinstance(rke, dict)
        and isinstance(rke.get("deploy_host"), str)
        and names
        and rke["deploy_host"] not in names
    ):
        deploy = rke["deploy_host"]
        out.append(f"rke.deploy_host: {deploy!r} is not a host of this inventory; name one of hosts[].name")
    if isinstance(d.get("power"), dict):
        out += _power_keys(d["power"], "power")
    internal = [k for k in _INTERNAL if k in d]
    out += [f"{k}: unknown key; known keys: {', '.join(_field_names(Inventory))}" for k in internal]
    return out


def _power_keys(m: dict, path: str) -> list[str]:
    """A power section holds the driver's own keys only, and all it needs."""
    try:
        driver = PowerDriver(m.get("driver"))
    except ValueError:
        return []  # the driver itself is reported
    required, allowed = _POWER_NEEDS[driver]
    known = _field_names(PowerSettings)
    out = [
        f"{path}.{k}: is not a setting of driver {driver}; remove it"
        for k in m
        if k in known and k not in ("driver", "timeout", *allowed)
    ]
    out += [
        f"{path}.{k}: is missing; driver {driver} needs {', '.join(required)}" for k in required if k not in m
    ]
    return out


# ---------------------------------------------------------------------------------------------
# Writing it back


def inventory_to_dict(inv: Inventory, *, relative_to: Path | None = None) -> dict:
    """The inventory as YAML-ready data; `parse_inventory(inventory_to_dict(inv), base)` gives `inv`
    back. Keys at their declared default are left out (the loader fills them in again), and so is a
    host's user/port/sudo that only repeats ssh's. With relative_to, local paths under that directory
    are written relative to it (so a lab directory can move); parse it with base_dir=relative_to."""

    def plain(v: Any) -> Any:
        if isinstance(v, InMemoryFile):
            return v
        if isinstance(v, Path):
            if relative_to is not None:
                try:
                    return str(v.relative_to(Path(relative_to).absolute()))
                except ValueError:
                    pass
            return str(v)
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, frozenset):
            return [r.value for r in Role if r in v]
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if hasattr(v, "__pydantic_fields__"):
            return section(v)
        return v

    def section(obj: Any, skip: tuple[str, ...] = ()) -> dict:
        out = {}
        for name, f in type(obj).__pydantic_fields__.items():
            v = getattr(obj, name)
            if name in (*_INTERNAL, "kind", *skip) or v is None or f.exclude:
                continue
            default = f.get_default(call_default_factory=True)
            if v == default and name != "cluster":
                continue
            out[name] = plain(v)
        return out

    out = section(inv, skip=("hosts",))
    if inv.state_dir is not None and inv.audit_log == inv.state_dir / "audit.jsonl":
        out.pop("audit_log", None)  # the state_dir's, as it was loaded
    for k in ("ssh", "etcd"):
        out.setdefault(k, {})
    if inv.bastion is not None:  # like a host's: the user is written only where it is not ssh's
        out["bastion"].pop("user", None)
        if inv.bastion.user != inv.ssh.user:
            out["bastion"]["user"] = inv.bastion.user
    hosts = []
    for h in inv.hosts:
        d = section(h)
        # A host that says nothing follows ssh.* (as it did when it was loaded): write overrides only.
        for k in ("user", "port"):
            d.pop(k, None)
            if getattr(h, k) != getattr(inv.ssh, k):
                d[k] = getattr(h, k)
        if inv.ssh.sudo:
            d.pop("sudo", None)
        hosts.append(d)
    out["hosts"] = hosts
    return out


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
