"""RKE's own files read as RKE reads them: `cluster.yml` (YAML, snake_case keys) and
`cluster.rkestate` (JSON, camelCase keys: `{"desiredState": S, "currentState": S}`, S =
`{rkeConfig, certificatesBundle, encryptionConfig}`).

Field names and defaults are rancher/rke's (master, 2024-10): types/rke_types.go
(RancherKubernetesEngineConfig, RKEConfigNode, ETCDService + BaseService, BastionHost: each field
has a `yaml:` and a `json:` name, both tabled here), cluster/defaults.go (setClusterDefaults: a
node's internal_address and hostname_override default to its address, the hostname lower-cased,
port "22", ssh_key_path the cluster's, "~/.ssh/id_rsa"), cluster/state.go (FullState, State;
GetStateFilePath: cluster.yml's path with the extension replaced by .rkestate), pki/pki.go
(CertificatePKI's JSON names) and pki/util.go (GetCrtNameForHost: a node's certificate is named
after its internal_address when that is set and differs from address, dots to dashes, lower case).

RKE itself ignores keys it does not know (yaml.v2 and encoding/json are not strict); here a key
that is not RKE's, in the sections etcd-dr reads (top level, nodes, services, services.etcd,
bastion_host), is a problem with a suggestion: a typo'd `internal_adress` would otherwise silently
change which address etcd is reached at. Every other section is kept as read (`raw`), unchecked.

Everything is frozen plain data; a problem names the file, the field path and what to do, and
never a secret's value (private keys, inline SSH keys, S3 secrets).
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from etcd_dr.errors import InputError

DEFAULT_SSH_PORT = 22  # cluster/defaults.go DefaultSSHPort
DEFAULT_SSH_KEY_PATH = "~/.ssh/id_rsa"  # cluster/defaults.go DefaultClusterSSHKeyPath
ETCD_PATH_PREFIX = "/registry"  # cluster/plan.go EtcdPathPrefix: kube-apiserver's --etcd-prefix
CERT_DIR = "/etc/kubernetes/ssl"  # pki/constants.go CertPathPrefix
# pki/constants.go: the bundle's names etcd-dr reads
CA_CERT_NAME = "kube-ca"
ETCD_CERT_PREFIX = "kube-etcd"
ETCD_CLIENT_CERT_NAME = "kube-etcd-client"  # external etcd only: services.etcd.cert/key
ETCD_CLIENT_CA_CERT_NAME = "kube-etcd-client-ca"  # external etcd only: services.etcd.ca_cert
KUBE_NODE_CERT_NAME = "kube-node"  # what RKE and kube-apiserver use to reach RKE's own etcd


class RkeRole(enum.StrEnum):
    """RKEConfigNode.Role: `norman:"type=array[enum],options=etcd|worker|controlplane"`."""

    ETCD = "etcd"
    CONTROLPLANE = "controlplane"
    WORKER = "worker"


class Style(enum.StrEnum):
    """Which of a field's two names a file uses: cluster.yml the `yaml:` tag, the state file `json:`."""

    YAML = "yaml"
    JSON = "json"


# (yaml name, json name) of each field, from types/rke_types.go and types/backup_types.go.
_TOP = (
    ("nodes", "nodes"),
    ("services", "services"),
    ("network", "network"),
    ("authentication", "authentication"),
    ("addons", "addons"),
    ("addons_include", "addonsInclude"),
    ("system_images", "systemImages"),
    ("ssh_key_path", "sshKeyPath"),
    ("ssh_cert_path", "sshCertPath"),
    ("ssh_agent_auth", "sshAgentAuth"),
    ("authorization", "authorization"),
    ("ignore_docker_version", "ignoreDockerVersion"),
    ("enable_cri_dockerd", "enableCriDockerd"),
    ("kubernetes_version", "kubernetesVersion"),
    ("private_registries", "privateRegistries"),
    ("ingress", "ingress"),
    ("cluster_name", "clusterName"),
    ("cloud_provider", "cloudProvider"),
    ("prefix_path", "prefixPath"),
    ("win_prefix_path", "winPrefixPath"),
    ("addon_job_timeout", "addonJobTimeout"),
    ("bastion_host", "bastionHost"),
    ("monitoring", "monitoring"),
    ("restore", "restore"),
    ("rotate_certificates", "rotateCertificates"),
    ("rotate_encryption_key", "rotateEncryptionKey"),
    ("dns", "dns"),
    ("upgrade_strategy", "upgradeStrategy"),
    ("cri_dockerd_stream_server_address", "criDockerdStreamServerAddress"),
    ("cri_dockerd_stream_server_port", "criDockerdStreamServerPort"),
)
_NODE = (
    ("nodeName", "nodeName"),
    ("address", "address"),
    ("port", "port"),
    ("internal_address", "internalAddress"),
    ("role", "role"),
    ("hostname_override", "hostnameOverride"),
    ("user", "user"),
    ("docker_socket", "dockerSocket"),
    ("ssh_agent_auth", "sshAgentAuth"),
    ("ssh_key", "sshKey"),
    ("ssh_key_path", "sshKeyPath"),
    ("ssh_cert", "sshCert"),
    ("ssh_cert_path", "sshCertPath"),
    ("labels", "labels"),
    ("taints", "taints"),
)
_SERVICES = (
    ("etcd", "etcd"),
    ("kube-api", "kubeApi"),
    ("kube-controller", "kubeController"),
    ("scheduler", "scheduler"),
    ("kubelet", "kubelet"),
    ("kubeproxy", "kubeproxy"),
)
_BASE_SERVICE = (
    ("image", "image"),
    ("extra_args", "extraArgs"),
    ("extra_args_array", "extraArgsArray"),
    ("extra_binds", "extraBinds"),
    ("extra_env", "extraEnv"),
    ("win_extra_args", "winExtraArgs"),
    ("win_extra_args_array", "winExtraArgsArray"),
    ("win_extra_binds", "winExtraBinds"),
    ("win_extra_env", "winExtraEnv"),
)
_ETCD = (
    *_BASE_SERVICE,
    ("external_urls", "externalUrls"),
    ("ca_cert", "caCert"),
    ("cert", "cert"),
    ("key", "key"),
    ("path", "path"),
    ("uid", "uid"),
    ("gid", "gid"),
    ("snapshot", "snapshot"),
    ("retention", "retention"),
    ("creation", "creation"),
    ("backup_config", "backupConfig"),
)
_BASTION = (
    ("address", "address"),
    ("port", "port"),
    ("user", "user"),
    ("ssh_agent_auth", "sshAgentAuth"),
    ("ssh_key", "sshKey"),
    ("ssh_key_path", "sshKeyPath"),
    ("ssh_cert", "sshCert"),
    ("ssh_cert_path", "sshCertPath"),
    ("ignore_proxy_env_vars", "ignoreProxyEnvVars"),
)
# pki/pki.go CertificatePKI: its JSON names (Certificate, Key, CSR and CSRPEM are `json:"-"`)
CERT_FIELDS = (
    "certificatePEM",
    "keyPEM",
    "config",
    "name",
    "commonName",
    "ouName",
    "envName",
    "path",
    "keyEnvName",
    "keyPath",
    "configEnvName",
    "configPath",
)
_STATE_FIELDS = ("rkeConfig", "certificatesBundle", "encryptionConfig")
_FULL_STATE_FIELDS = ("desiredState", "currentState")


def field_name(fields: tuple[tuple[str, str], ...], yaml_name: str, style: Style) -> str:
    """A field's name in a file of `style` (its yaml name given)."""
    for y, j in fields:
        if y == yaml_name:
            return y if style is Style.YAML else j
    raise KeyError(yaml_name)


def dashed(address: str) -> str:
    """pki/util.go GetCrtNameForHost: dots to dashes, lower case (':' of IPv6 kept, as RKE does)."""
    return address.replace(".", "-").lower()


class RkeFileError(InputError):
    """RKE's files cannot be used as given: every problem, each `path: what is wrong; what to do`.
    Nothing was written and nothing contacted."""

    def __init__(self, source: Path | str, problems: list[str] | tuple[str, ...]) -> None:
        self.source = str(source)
        self.problems = tuple(problems)
        n = len(self.problems)
        super().__init__(
            f"{source}: {n} problem{'' if n == 1 else 's'}" + "".join(f"\n  - {p}" for p in self.problems)
        )


@dataclass(frozen=True)
class RkeNode:
    """One of `nodes`, with RKE's defaults applied (cluster/defaults.go)."""

    index: int
    address: str  # where RKE's SSH connects
    internal_address: str  # what etcd and the other components use (default: address)
    hostname_override: str  # the Kubernetes node name; etcd's member is etcd-<this> (default: address)
    user: str
    port: int  # SSH
    roles: frozenset[RkeRole]
    ssh_key_path: str | None  # the node's own, None: the cluster's
    has_inline_ssh_key: bool = False  # `ssh_key` (the key's text) given: never copied by etcd-dr
    internal_address_given: bool = False

    @property
    def cert_address(self) -> str:
        """The address RKE names this node's certificates after (GetCrtNameForHost)."""
        if self.internal_address_given and self.internal_address != self.address:
            return self.internal_address
        return self.address

    @property
    def etcd_cert_name(self) -> str:
        """kube-etcd-<address dashed>: this node's etcd member certificate in the bundle."""
        return f"{ETCD_CERT_PREFIX}-{dashed(self.cert_address)}"

    @property
    def etcd_member_name(self) -> str:
        """cluster/plan.go BuildEtcdProcess: --name=etcd-<hostname_override>."""
        return f"etcd-{self.hostname_override}"

    @property
    def is_etcd(self) -> bool:
        return RkeRole.ETCD in self.roles

    @property
    def is_controlplane(self) -> bool:
        return RkeRole.CONTROLPLANE in self.roles


@dataclass(frozen=True)
class BastionHost:
    address: str
    port: int
    user: str
    ssh_key_path: str | None
    has_inline_ssh_key: bool = False  # `ssh_key` (the key's text): never copied by etcd-dr
    has_ssh_cert: bool = False  # `ssh_cert` / `ssh_cert_path`: etcd-dr offers no SSH certificate


@dataclass(frozen=True, repr=False)
class EtcdService:
    """services.etcd. `key` is a private key's PEM text when external etcd is used: never shown."""

    image: str = ""
    extra_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    external_urls: tuple[str, ...] = ()
    ca_cert: str = ""
    cert: str = ""
    key: str = ""
    path: str = ""
    snapshot: bool | None = None
    retention: str = ""
    creation: str = ""
    backup_config: Mapping[str, Any] | None = None

    @property
    def external(self) -> bool:
        return bool(self.external_urls)

    def __repr__(self) -> str:
        return f"EtcdService(image={self.image!r}, external_urls={self.external_urls!r})"


@dataclass(frozen=True)
class RkeConfig:
    """A RancherKubernetesEngineConfig as etcd-dr needs it; `raw` keeps every key as read."""

    nodes: tuple[RkeNode, ...]
    etcd: EtcdService
    cluster_name: str
    ssh_key_path: str
    ssh_agent_auth: bool
    bastion: BastionHost | None
    kubernetes_version: str
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def etcd_nodes(self) -> tuple[RkeNode, ...]:
        return tuple(n for n in self.nodes if n.is_etcd)

    @property
    def controlplane_nodes(self) -> tuple[RkeNode, ...]:
        return tuple(n for n in self.nodes if n.is_controlplane)

    def node(self, address: str) -> RkeNode | None:
        """The node RKE knows by this address (RKE compares hosts by `address`: hosts/hosts.go)."""
        return next((n for n in self.nodes if n.address == address), None)


@dataclass(frozen=True, repr=False)
class CertificatePKI:
    """One entry of a certificatesBundle. repr() never shows the key."""

    bundle_name: str  # its key in the bundle
    certificate_pem: str
    key_pem: str
    name: str
    common_name: str
    path: str
    key_path: str

    def __repr__(self) -> str:
        return f"CertificatePKI({self.bundle_name!r}, key={'yes' if self.key_pem else 'no'})"


@dataclass(frozen=True)
class RkeState:
    """A State: the applied (currentState) or wanted (desiredState) config and its certificates."""

    rke_config: RkeConfig | None
    certificates: Mapping[str, CertificatePKI]
    has_encryption_config: bool = False


@dataclass(frozen=True)
class FullState:
    source: Path
    desired: RkeState
    current: RkeState
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)


def state_path_for(cluster_yml: Path) -> Path:
    """cluster/state.go GetStateFilePath: the extension replaced by .rkestate."""
    return cluster_yml.with_suffix(".rkestate")


# ---------------------------------------------------------------------------------------------
# Reading


def read_cluster_yml(path: Path) -> RkeConfig:
    """cluster.yml as RKE reads it. RkeFileError with every problem."""
    text = _read(path, "cluster.yml", "RKE's cluster configuration")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = e.problem or e.context
        raise RkeFileError(path, [f"YAML error at {where}: {what}; fix the YAML there"]) from None
    except yaml.YAMLError as e:
        raise RkeFileError(path, [f"not valid YAML ({e.__class__.__name__}); fix the file"]) from None
    problems: list[str] = []
    cfg = parse_rke_config(data, Style.YAML, "", problems)
    if problems or cfg is None:
        raise RkeFileError(path, problems or ["(top level): is empty; give RKE's cluster.yml"])
    return cfg


def read_state_file(path: Path) -> FullState:
    """cluster.rkestate as RKE reads it (cluster/state.go ReadStateFile). RkeFileError with every
    problem (certificates that do not parse, keys that are not RKE's)."""
    text = _read(path, "cluster.rkestate", "RKE's state file (written by `rke up` beside cluster.yml)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RkeFileError(
            path,
            [f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}; restore it from a backup"],
        ) from None
    problems: list[str] = []
    if not isinstance(data, dict):
        what = f"is {_kind(data)}, not an object with desiredState and currentState"
        raise RkeFileError(path, [f"(top level): {what}"])
    problems += _unknown(data, _FULL_STATE_FIELDS, "")
    desired = _state(data.get("desiredState"), "desiredState", problems)
    current = _state(data.get("currentState"), "currentState", problems)
    if problems:
        raise RkeFileError(path, problems)
    return FullState(path, desired, current, data)


def _read(path: Path, what: str, meaning: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RkeFileError(path, [f"no such file; pass {what}, {meaning}"]) from None
    except IsADirectoryError:
        raise RkeFileError(path, [f"is a directory; pass the {what} file inside it"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RkeFileError(path, [f"cannot be read ({e.__class__.__name__}); check the file"]) from None


def _state(d: object, at: str, problems: list[str]) -> RkeState:
    if d is None:
        return RkeState(None, MappingProxyType({}))
    if not isinstance(d, dict):
        problems.append(f"{at}: is {_kind(d)}, not an object; restore the state file from a backup")
        return RkeState(None, MappingProxyType({}))
    problems += _unknown(d, _STATE_FIELDS, at)
    cfg = parse_rke_config(d.get("rkeConfig"), Style.JSON, f"{at}.rkeConfig", problems)
    bundle = d.get("certificatesBundle") or {}
    certs: dict[str, CertificatePKI] = {}
    if not isinstance(bundle, dict):
        problems.append(f"{at}.certificatesBundle: is {_kind(bundle)}, not an object of certificates")
        bundle = {}
    for name, entry in bundle.items():
        where = f"{at}.certificatesBundle.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: is {_kind(entry)}, not a certificate object")
            continue
        problems += _unknown(entry, CERT_FIELDS, where)
        bad = [k for k in CERT_FIELDS if entry.get(k) is not None and not isinstance(entry.get(k), str)]
        problems += [f"{where}.{k}: is {_kind(entry[k])}, not a string" for k in bad]
        if bad:
            continue
        certs[name] = CertificatePKI(
            bundle_name=name,
            certificate_pem=entry.get("certificatePEM") or "",
            key_pem=entry.get("keyPEM") or "",
            name=entry.get("name") or "",
            common_name=entry.get("commonName") or "",
            path=entry.get("path") or "",
            key_path=entry.get("keyPath") or "",
        )
    enc = d.get("encryptionConfig")
    return RkeState(cfg, MappingProxyType(certs), bool(enc))


def parse_rke_config(data: object, style: Style, at: str, problems: list[str]) -> RkeConfig | None:
    """A RancherKubernetesEngineConfig from parsed YAML (cluster.yml) or JSON (a state's rkeConfig),
    with RKE's defaults applied. Problems are appended, each with its field path."""
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(f"{at or '(top level)'}: is {_kind(data)}, not a mapping of RKE's settings")
        return None

    def p(*parts: str) -> str:
        return ".".join(x for x in (at, *parts) if x)

    def name(fields: tuple[tuple[str, str], ...], y: str) -> str:
        return field_name(fields, y, style)

    problems += _unknown(data, tuple(y if style is Style.YAML else j for y, j in _TOP), at)
    cluster_key = _str(data, name(_TOP, "ssh_key_path"), p(name(_TOP, "ssh_key_path")), problems)
    agent = _bool(data, name(_TOP, "ssh_agent_auth"), p(name(_TOP, "ssh_agent_auth")), problems)
    nodes_at = p(name(_TOP, "nodes"))
    raw_nodes = data.get(name(_TOP, "nodes"))
    nodes: list[RkeNode] = []
    if raw_nodes is None:
        raw_nodes = []
    if not isinstance(raw_nodes, list):
        problems.append(f"{nodes_at}: is {_kind(raw_nodes)}, not a list of nodes")
        raw_nodes = []
    for i, rn in enumerate(raw_nodes):
        node = _node(rn, i, f"{nodes_at}[{i}]", style, problems)
        if node is not None:
            nodes.append(node)
    seen: dict[str, int] = {}
    for n in nodes:  # cluster/validation.go validateDuplicateNodes
        for key in (n.address, n.hostname_override):
            if key in seen and seen[key] != n.index:
                problems.append(
                    f"{nodes_at}[{n.index}]: {key!r} is already used by {nodes_at}[{seen[key]}]; "
                    'RKE refuses duplicate nodes ("Cluster can\'t have duplicate node"): remove one'
                )
            seen.setdefault(key, n.index)

    services = data.get(name(_TOP, "services")) or {}
    services_at = p(name(_TOP, "services"))
    if not isinstance(services, dict):
        problems.append(f"{services_at}: is {_kind(services)}, not a mapping")
        services = {}
    problems += _unknown(services, tuple(y if style is Style.YAML else j for y, j in _SERVICES), services_at)
    etcd = _etcd(services.get("etcd"), f"{services_at}.etcd", style, problems)
    bastion = _bastion(data.get(name(_TOP, "bastion_host")), p(name(_TOP, "bastion_host")), style, problems)
    return RkeConfig(
        nodes=tuple(nodes),
        etcd=etcd,
        cluster_name=_str(data, name(_TOP, "cluster_name"), p(name(_TOP, "cluster_name")), problems),
        ssh_key_path=cluster_key or DEFAULT_SSH_KEY_PATH,
        ssh_agent_auth=bool(agent),
        bastion=bastion,
        kubernetes_version=_str(
            data, name(_TOP, "kubernetes_version"), p(name(_TOP, "kubernetes_version")), problems
        ),
        raw=data,
    )


def _node(rn: object, i: int, at: str, style: Style, problems: list[str]) -> RkeNode | None:
    if not isinstance(rn, dict):
        problems.append(f"{at}: is {_kind(rn)}, not a node (address, user, role, ...)")
        return None

    def name(y: str) -> str:
        return field_name(_NODE, y, style)

    before = len(problems)
    problems += _unknown(rn, tuple(y if style is Style.YAML else j for y, j in _NODE), at)
    address = _str(rn, name("address"), f"{at}.{name('address')}", problems)
    if not address:  # cluster/validation.go validateHostsOptions
        rke = f"Address for host ({i + 1}) is not provided"
        problems.append(f"{at}.{name('address')}: is missing (RKE: {rke!r}); add it")
    user = _str(rn, name("user"), f"{at}.{name('user')}", problems)
    if not user:
        rke = f"User for host ({i + 1}) is not provided"
        problems.append(f"{at}.{name('user')}: is missing (RKE: {rke!r}); add it")
    internal = _str(rn, name("internal_address"), f"{at}.{name('internal_address')}", problems)
    hostname = _str(rn, name("hostname_override"), f"{at}.{name('hostname_override')}", problems)
    port = _port(rn.get(name("port")), f"{at}.{name('port')}", problems)
    roles_raw = rn.get(name("role"))
    roles: set[RkeRole] = set()
    if not isinstance(roles_raw, list) or not roles_raw:
        problems.append(
            f"{at}.{name('role')}: is {_kind(roles_raw)}, not a list of roles (RKE: "
            f'"Role for host ({i + 1}) is not provided"); write e.g. role: [controlplane, etcd]'
        )
    else:
        for j, r in enumerate(roles_raw):
            try:
                roles.add(RkeRole(r))
            except ValueError:
                problems.append(
                    f'{at}.{name("role")}[{j}]: {r!r} is not a role (RKE: "Role [{r}] for host '
                    f'({i + 1}) is not recognized"); use etcd, controlplane or worker'
                )
    key_path = _str(rn, name("ssh_key_path"), f"{at}.{name('ssh_key_path')}", problems)
    inline = bool(rn.get(name("ssh_key")))
    if len(problems) > before:
        return None
    return RkeNode(
        index=i,
        address=address,
        internal_address=internal or address,
        hostname_override=(hostname or address).lower(),
        user=user,
        port=port,
        roles=frozenset(roles),
        ssh_key_path=key_path or None,
        has_inline_ssh_key=inline,
        internal_address_given=bool(internal),
    )


def _etcd(d: object, at: str, style: Style, problems: list[str]) -> EtcdService:
    if d is None:
        return EtcdService()
    if not isinstance(d, dict):
        problems.append(f"{at}: is {_kind(d)}, not a mapping")
        return EtcdService()

    def name(y: str) -> str:
        return field_name(_ETCD, y, style)

    problems += _unknown(d, tuple(y if style is Style.YAML else j for y, j in _ETCD), at)
    args_raw = d.get(name("extra_args")) or {}
    args: dict[str, str] = {}
    if not isinstance(args_raw, dict):
        problems.append(f"{at}.{name('extra_args')}: is {_kind(args_raw)}, not a mapping of flag: value")
    else:  # map[string]string: yaml.v2 takes any scalar as its text
        for k, v in args_raw.items():
            if isinstance(v, dict | list):
                problems.append(f"{at}.{name('extra_args')}.{k}: is {_kind(v)}, not a value; quote it")
            else:
                args[str(k)] = _go_text(v)
    urls = d.get(name("external_urls")) or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        problems.append(
            f"{at}.{name('external_urls')}: is not a list of URLs; write e.g. [https://10.0.0.11:2379]"
        )
        urls = []
    snap = d.get(name("snapshot"))
    if snap is not None and not isinstance(snap, bool):
        problems.append(f"{at}.{name('snapshot')}: {snap!r} is not true or false")
        snap = None
    backup = d.get(name("backup_config"))
    if backup is not None and not isinstance(backup, dict):
        problems.append(f"{at}.{name('backup_config')}: is {_kind(backup)}, not a mapping")
        backup = None
    return EtcdService(
        image=_str(d, name("image"), f"{at}.{name('image')}", problems),
        extra_args=MappingProxyType(args),
        external_urls=tuple(urls),
        ca_cert=_str(d, name("ca_cert"), f"{at}.{name('ca_cert')}", problems),
        cert=_str(d, name("cert"), f"{at}.{name('cert')}", problems),
        key=_str(d, name("key"), f"{at}.{name('key')}", problems),
        path=_str(d, name("path"), f"{at}.{name('path')}", problems),
        snapshot=snap,
        retention=_str(d, name("retention"), f"{at}.{name('retention')}", problems),
        creation=_str(d, name("creation"), f"{at}.{name('creation')}", problems),
        backup_config=MappingProxyType(backup) if backup is not None else None,
    )


def _bastion(d: object, at: str, style: Style, problems: list[str]) -> BastionHost | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        problems.append(f"{at}: is {_kind(d)}, not a mapping")
        return None

    def name(y: str) -> str:
        return field_name(_BASTION, y, style)

    problems += _unknown(d, tuple(y if style is Style.YAML else j for y, j in _BASTION), at)
    address = _str(d, name("address"), f"{at}.{name('address')}", problems)
    if not address:  # RKE: a bastion without an address is no bastion (setClusterDefaults)
        return None
    return BastionHost(
        address=address,
        port=_port(d.get(name("port")), f"{at}.{name('port')}", problems),
        user=_str(d, name("user"), f"{at}.{name('user')}", problems),
        ssh_key_path=_str(d, name("ssh_key_path"), f"{at}.{name('ssh_key_path')}", problems) or None,
        has_inline_ssh_key=bool(d.get(name("ssh_key"))),
        has_ssh_cert=bool(d.get(name("ssh_cert")) or d.get(name("ssh_cert_path"))),
    )


def _unknown(d: Mapping[str, Any], known: tuple[str, ...], at: str) -> list[str]:
    out = []
    for k in d:
        if k in known:
            continue
        close = difflib.get_close_matches(str(k), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "RKE ignores it: remove it or fix its name"
        out.append(f"{at + '.' if at else ''}{k}: not a field RKE knows here; {hint}")
    return out


def _str(d: Mapping[str, Any], key: str, at: str, problems: list[str]) -> str:
    """A string field; a scalar of another type as yaml.v2 gives it to a Go string (its text). The
    value itself never goes into a problem (it may be a key)."""
    v = d.get(key)
    if v is None:
        return ""
    if isinstance(v, dict | list):
        problems.append(f"{at}: is {_kind(v)}, not a string")
        return ""
    return v if isinstance(v, str) else _go_text(v)


def _bool(d: Mapping[str, Any], key: str, at: str, problems: list[str]) -> bool | None:
    v = d.get(key)
    if v is None or isinstance(v, bool):
        return v
    problems.append(f"{at}: {v!r} is not true or false")
    return None


def _port(v: object, at: str, problems: list[str]) -> int:
    """RKE's ports are strings ("22"); YAML may give a number. Default 22 (DefaultSSHPort)."""
    if v is None or v == "":
        return DEFAULT_SSH_PORT
    text = _go_text(v)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        problems.append(f"{at}: {v!r} is not a port number; give 1-65535")
        return DEFAULT_SSH_PORT
    return int(text)


def _go_text(v: object) -> str:
    """A YAML scalar as yaml.v2 decodes it into a Go string: its text (true, 500, 1.5)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _kind(v: object) -> str:
    if v is None:
        return "empty"
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(v), f"a {type(v).__name__}")
