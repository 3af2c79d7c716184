"""STAND-IN for RKE's `rke up` (the real rke cannot run in the lab: it needs kubelet, a registry and
Kubernetes images). Installed by `etcd-dr lab up` on the deploy host (node2) as `rke`; runs there
with the system's python3 (PyYAML and cryptography from Debian's packages), not in etcd-dr's venv.

It behaves as RKE v1 does at every point etcd-dr touches (rancher/rke: cluster/validation.go,
cluster/reconcile.go, cluster/state.go, pki/):
- reads cluster.yml and the state file beside it (cluster.yml's path, extension `.rkestate`);
- refuses with RKE's exact messages: external etcd with an empty field (validation), an external
  etcd key that is not RSA (Go's panic, exit 2, as RKE's type assertion), no etcd host
  and no external etcd, both (ValidateHostCount, after the SSH tunnels: a host whose tunnel fails is
  dropped first), every old etcd host deleted or unreachable or no overlap between the old and new
  etcd planes (reconcile: `Etcd plane nodes are replaced...`);
- really removes the etcd members of the etcd hosts that left cluster.yml, through the real etcd
  (with quorum lost that takes etcd's request timeout and fails with `etcdserver: request timed
  out`), then checks the etcd plane's health (linearizable reads);
- with `external_urls`, really connects to each URL with the PEMs given (a wrong one is refused);
- writes the certificates on the hosts over SSH as RKE's cert deployer does (kube-ca reused from the
  state file, every other certificate new: new keys, same names, in /etc/kubernetes/ssl);
- (re)starts the stand-in kube-apiserver container on each controlplane host, pointed at the etcd
  nodes or at external_urls + path, and waits for its /healthz;
- prints RKE's log lines (`INFO[0000] ...`), writes the state file and kube_config_<cluster.yml>.

What it does not do: kubelet, kube-proxy, scheduler, controller-manager, network and add-ons, etcd
member add (it refuses a new etcd host with a message saying so), snapshots.

The refusal texts are etcd_dr.kubernetes.rkemessages' (this script runs on the lab's hosts without
etcd-dr installed, so it keeps its own copy; tests/unit/test_rke_standin.py checks they are equal).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import io
import ipaddress
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

try:  # in etcd-dr's package (unit tests, lab up) ...
    from . import etcdgw
except ImportError:  # ... or a script on a lab host, etcdgw.py beside it
    import etcdgw  # type: ignore[no-redef]

VERSION = "v1.2.7"  # what the source incident ran; printed as RKE prints it
CERT_DIR = "/etc/kubernetes/ssl"
# the lab's stand-in image (etcd_dr.lab.kubelet.IMAGE, loaded on every host by lab up): a root
# whose /bin and /lib point into the host's /usr, mounted read-only; the scripts are mounted too
APISERVER_IMAGE = "lab/standin:1"
SCRIPTS_DIR = "/opt/etcd-dr-standins"  # where the stand-ins' scripts are on a host
APISERVER_SCRIPTS = ("etcdgw.py", "kube_apiserver.py")
APISERVER_CONTAINER = "kube-apiserver"  # RKE's container name
APISERVER_PORT = 6443
DOCKER = "/usr/bin/docker"

# RKE's messages (rancher/rke cluster/validation.go, cluster/reconcile.go), verbatim: a copy of
# etcd_dr.kubernetes.rkemessages (checked equal by a unit test)
NO_ETCD_HOST = (
    "Cluster must have at least one etcd plane host: please specify one or more etcd in cluster config"
)
NO_ETCD_HOST_UNREACHABLE = (
    "Cluster must have at least one etcd plane host: failed to connect to the following etcd host(s) {hosts}"
)
BOTH_ETCD = "Cluster can't have both internal and external etcd"
EXTERNAL_EMPTY = {
    "ca_cert": "External CA Certificate for etcd can't be empty",
    "cert": "External Client Certificate for etcd can't be empty",
    "key": "External Client Key for etcd can't be empty",
    "path": "External etcd path can't be empty",
}
# pki/services.go type-asserts services.etcd.key to *rsa.PrivateKey: Go's runtime panics (exit 2)
CLIENT_KEY_NOT_RSA = "interface conversion: interface {{}} is {type}, not *rsa.PrivateKey"
PLANE_REPLACED = (
    "Failed to reconcile etcd plane: Etcd plane nodes are replaced. Stopping provisioning. "
    "Please restore your cluster from backup."
)


class Fatal(Exception):
    """What RKE prints as FATA[...] before it exits 1."""


class Panic(Exception):
    """A Go runtime panic in rke: `panic: <message>`, exit 2."""


def key_go_type(pem: str) -> str | None:
    """The Go type RKE's ParsePrivateKeyPEM gives a key that is not RSA, None for RSA (or a key it
    cannot read: its parse error comes first)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "*ecdsa.PrivateKey"
    return "ed25519.PrivateKey" if isinstance(key, ed25519.Ed25519PrivateKey) else type(key).__name__


# --- logging as RKE's logrus text formatter prints it ------------------------------------------------

T0 = time.monotonic()


def log(level: str, msg: str) -> None:
    print(f"{level}[{int(time.monotonic() - T0):04d}] {msg}", file=sys.stderr, flush=True)


def info(msg: str) -> None:
    log("INFO", msg)


def warn(msg: str) -> None:
    log("WARN", msg)


# --- cluster.yml and the state file -------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    address: str
    roles: frozenset[str]
    hostname_override: str
    internal_address: str
    user: str
    port: int
    ssh_key_path: str

    @property
    def cert_address(self) -> str:
        """RKE names a node's etcd certificate after internal_address when it is set and differs."""
        return self.internal_address or self.address

    @property
    def etcd_cert_name(self) -> str:
        return "kube-etcd-" + self.cert_address.replace(".", "-").replace(":", "-")


def nodes_of(config: dict) -> list[Node]:
    default_key = str(config.get("ssh_key_path") or "~/.ssh/id_rsa")
    out = []
    for n in config.get("nodes") or []:
        roles = n.get("role") or []
        out.append(
            Node(
                address=str(n["address"]),
                roles=frozenset(str(r) for r in (roles if isinstance(roles, list) else [roles])),
                hostname_override=str(n.get("hostname_override") or n["address"]),
                internal_address=str(n.get("internal_address") or ""),
                user=str(n.get("user") or "ubuntu"),
                port=int(n.get("port") or 22),
                ssh_key_path=os.path.expanduser(str(n.get("ssh_key_path") or default_key)),
            )
        )
    return out


def state_nodes(state_part: dict) -> list[Node]:
    """The nodes of a state's rkeConfig (RKE's JSON names) as Nodes."""
    cfg = state_part.get("rkeConfig") or {}
    return nodes_of(
        {
            "ssh_key_path": cfg.get("sshKeyPath"),
            "nodes": [
                {
                    "address": n.get("address"),
                    "role": n.get("role"),
                    "hostname_override": n.get("hostnameOverride"),
                    "internal_address": n.get("internalAddress"),
                    "user": n.get("user"),
                    "port": n.get("port"),
                    "ssh_key_path": n.get("sshKeyPath"),
                }
                for n in cfg.get("nodes") or []
            ],
        }
    )


def external_etcd(config: dict) -> dict:
    return ((config.get("services") or {}).get("etcd") or {}) if isinstance(config, dict) else {}


def state_path_for(config_path: str) -> str:
    """RKE: the cluster.yml path with its extension replaced by .rkestate (`./cluster.rkestate`)."""
    base, _ext = os.path.splitext(config_path)
    return base + ".rkestate" if os.path.dirname(base) else f"./{base}.rkestate"


def kube_config_path_for(config_path: str) -> str:
    d, name = os.path.split(config_path)
    return os.path.join(d, f"kube_config_{name}")


# Keys whose values are maps of user-chosen names (kept as written); every other key is camelCased
# as RKE's JSON tags name them (`kube-api` -> kubeApi, `external_urls` -> externalUrls).
_VERBATIM = {"extra_args", "extra_env", "extra_binds", "labels", "node_selector", "options", "annotations"}


def _camel(key: str) -> str:
    parts = key.replace("-", "_").split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def rke_json(v: object, verbatim: bool = False) -> object:
    """cluster.yml's YAML as RKE's rkeConfig JSON (snake_case and kebab-case keys camelCased)."""
    if isinstance(v, dict):
        if verbatim:
            return {str(k): x for k, x in v.items()}
        return {_camel(str(k)): rke_json(x, str(k) in _VERBATIM) for k, x in v.items()}
    if isinstance(v, list):
        return [rke_json(x) for x in v]
    return v


# --- the pure checks (unit-tested) ----------------------------------------------------------------------


def validate(config: dict) -> str | None:
    """RKE's validation of the services' external etcd fields (before anything is contacted)."""
    e = external_etcd(config)
    if e.get("external_urls"):
        for k in ("ca_cert", "cert", "key", "path"):
            if not e.get(k):
                return EXTERNAL_EMPTY[k]
    return None


def host_count(config: dict, inactive: set[str]) -> str | None:
    """RKE's ValidateHostCount, after the tunnels (inactive: the addresses whose tunnel failed)."""
    nodes = nodes_of(config)
    etcd = [n for n in nodes if "etcd" in n.roles and n.address not in inactive]
    external = bool(external_etcd(config).get("external_urls"))
    if not etcd and not external:
        failed = [n.address for n in nodes if "etcd" in n.roles and n.address in inactive]
        if failed:
            return NO_ETCD_HOST_UNREACHABLE.format(hosts="[" + " ".join(failed) + "]")
        return NO_ETCD_HOST
    if etcd and external:
        return BOTH_ETCD
    return None


def plane_replaced(current: list[Node], config: dict, inactive: set[str]) -> bool:
    """RKE's isEtcdPlaneReplaced: every current etcd host deleted or inactive, or no overlap between
    the old etcd plane and the new one."""
    old = {n.address for n in current if "etcd" in n.roles}
    new = {n.address for n in nodes_of(config) if "etcd" in n.roles}
    if not old and not new:
        return False
    to_delete = {a for a in old if a not in new or a in inactive}
    if old and len(to_delete) == len(old):
        return True
    return not (old & new)


# --- certificates (RKE's pki, with cryptography) ----------------------------------------------------------


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def new_ca() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def issue(
    ca_cert: str, ca_key: str, cn: str, org: str | None, ips: list[str], dns: list[str]
) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.encode())
    cakey = serialization.load_pem_private_key(ca_key.encode(), password=None)
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(cakey, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def bundle_entry(name: str, cn: str, cert: str, key: str | None, org: str | None = None) -> dict:
    """One certificatesBundle entry in RKE's JSON (pki.CertificatePKI)."""
    env = name.upper().replace("-", "_")
    return {
        "certificatePEM": cert,
        "keyPEM": key or "",
        "config": "",
        "name": name,
        "commonName": cn,
        "ouName": org or "",
        "envName": env,
        "path": f"{CERT_DIR}/{name}.pem",
        "keyEnvName": f"{env}_KEY",
        "keyPath": f"{CERT_DIR}/{name}-key.pem",
        "configEnvName": "",
        "configPath": "",
    }


def build_bundle(config: dict, nodes: list[Node], ca: tuple[str, str]) -> dict[str, dict]:
    """Every certificate the cluster in config needs, new (new keys), signed by ca; kube-ca itself."""
    ca_cert, ca_key = ca
    out = {"kube-ca": bundle_entry("kube-ca", "kube-ca", ca_cert, ca_key)}
    cps = [n for n in nodes if "controlplane" in n.roles]
    api_ips = sorted(
        {
            "127.0.0.1",
            "10.43.0.1",
            *(n.address for n in cps),
            *(n.internal_address for n in cps if n.internal_address),
        }
    )
    api_dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        *(n.hostname_override for n in cps),
    ]
    for name, cn, org, ips, dns in (
        ("kube-apiserver", "system:kube-apiserver", None, api_ips, api_dns),
        ("kube-node", "system:node", "system:nodes", [], []),
        ("kube-admin", "kube-admin", "system:masters", [], []),
    ):
        c, k = issue(ca_cert, ca_key, cn, org, ips, dns)
        out[name] = bundle_entry(name, cn, c, k, org)
    for n in nodes:
        if "etcd" in n.roles:
            ips = sorted({n.address, n.cert_address, "127.0.0.1"})
            c, k = issue(ca_cert, ca_key, n.etcd_cert_name, None, ips, ["localhost", n.hostname_override])
            out[n.etcd_cert_name] = bundle_entry(n.etcd_cert_name, n.etcd_cert_name, c, k)
    e = external_etcd(config)
    if e.get("external_urls"):
        out["kube-etcd-client-ca"] = bundle_entry(
            "kube-etcd-client-ca", "kube-etcd-client-ca", str(e["ca_cert"]), None
        )
        out["kube-etcd-client"] = bundle_entry(
            "kube-etcd-client", "kube-etcd-client", str(e["cert"]), str(e["key"])
        )
    return out


def host_files(bundle: dict[str, dict], node: Node) -> dict[str, tuple[str, int]]:
    """name -> (content, mode) of the files RKE's cert deployer writes in /etc/kubernetes/ssl on node:
    kube-ca and kube-node everywhere; kube-apiserver, kube-admin and the external etcd client on
    controlplane hosts; a node's own etcd certificate on etcd hosts."""
    want = {"kube-ca", "kube-node"}
    if "controlplane" in node.roles:
        want |= {"kube-apiserver", "kube-admin", "kube-etcd-client-ca", "kube-etcd-client"}
    if "etcd" in node.roles:
        want.add(node.etcd_cert_name)
    files: dict[str, tuple[str, int]] = {}
    for name in sorted(want & bundle.keys()):
        e = bundle[name]
        files[f"{name}.pem"] = (e["certificatePEM"], 0o644)
        if e.get("keyPEM") and name != "kube-ca":
            files[f"{name}-key.pem"] = (e["keyPEM"], 0o600)
    return files


# --- the hosts, over SSH as RKE's dialer ------------------------------------------------------------------


def ssh_argv(n: Node, command: str) -> list[str]:
    # RKE's dialer does not check host keys (ssh.InsecureIgnoreHostKey)
    return [
        "ssh", "-i", n.ssh_key_path, "-p", str(n.port), "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=3", f"{n.user}@{n.address}", command,
    ]  # fmt: skip


def on_host(
    n: Node, command: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ssh_argv(n, command), input=stdin, capture_output=True, timeout=timeout, check=False
    )


def tunnel(n: Node) -> str | None:
    """None when the host answers over SSH with a working docker; else why not."""
    try:
        r = on_host(n, f"{DOCKER} version --format '{{{{.Server.Version}}}}'", timeout=15)
    except subprocess.TimeoutExpired:
        return "Can't establish dialer connection: timed out"
    if r.returncode != 0:
        return f"Can't establish dialer connection: {r.stderr.decode(errors='replace').strip()[-200:]}"
    return None


def deploy_certs(n: Node, files: dict[str, tuple[str, int]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (content, mode) in files.items():
            data = content.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, int(time.time())
            tar.addfile(ti, io.BytesIO(data))
    r = on_host(n, f"mkdir -p {CERT_DIR} && tar -xf - -C {CERT_DIR} --no-same-owner", stdin=buf.getvalue())
    if r.returncode != 0:
        raise Fatal(
            f"[certificates] Failed to deploy certificates on host [{n.address}]: {r.stderr.decode().strip()}"
        )


def apiserver_args(config: dict, nodes: list[Node], n: Node) -> list[str]:
    e = external_etcd(config)
    if e.get("external_urls"):
        urls = e["external_urls"]
        servers = ",".join(urls if isinstance(urls, list) else [urls])
        prefix, ca, cert, key = str(e["path"]), "kube-etcd-client-ca", "kube-etcd-client", "kube-etcd-client"
    else:
        servers = ",".join(f"https://{m.cert_address}:2379" for m in nodes if "etcd" in m.roles)
        prefix, ca, cert, key = "/registry", "kube-ca", "kube-node", "kube-node"
    return [
        f"--etcd-servers={servers}",
        f"--etcd-prefix={prefix}",
        f"--etcd-cafile={CERT_DIR}/{ca}.pem",
        f"--etcd-certfile={CERT_DIR}/{cert}.pem",
        f"--etcd-keyfile={CERT_DIR}/{key}-key.pem",
        f"--bind-address={n.address}",
        f"--secure-port={APISERVER_PORT}",
        f"--tls-cert-file={CERT_DIR}/kube-apiserver.pem",
        f"--tls-private-key-file={CERT_DIR}/kube-apiserver-key.pem",
    ]


def apiserver_run_argv(args: list[str]) -> list[str]:
    """`docker run` of the stand-in kube-apiserver as RKE runs kube-apiserver (its container name,
    host network, /etc/kubernetes mounted, restart=always)."""
    return [
        DOCKER, "run", "-d", "--name", APISERVER_CONTAINER, "--network=host", "--restart=always",
        "-v", "/etc/kubernetes:/etc/kubernetes:ro", "-v", "/usr:/usr:ro",
        "-v", f"{SCRIPTS_DIR}:{SCRIPTS_DIR}:ro",
        "--entrypoint", "/usr/bin/python3", APISERVER_IMAGE, f"{SCRIPTS_DIR}/kube_apiserver.py", *args,
    ]  # fmt: skip


def start_apiserver(n: Node, args: list[str]) -> None:
    """The kube-apiserver container on n: its scripts put there first (RKE pulls its image onto any
    controlplane node; a node that was none before has no stand-in yet), the old container removed
    and a new one run, as RKE does when the arguments change."""
    here = os.path.dirname(os.path.abspath(__file__))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in APISERVER_SCRIPTS:
            tar.add(os.path.join(here, name), arcname=name)
    run = " ".join(["'" + a + "'" for a in apiserver_run_argv(args)])
    script = (
        f"mkdir -p {SCRIPTS_DIR} && tar -xf - -C {SCRIPTS_DIR} --no-same-owner && "
        f"{{ {DOCKER} rm -f {APISERVER_CONTAINER} >/dev/null 2>&1; {run}; }}"
    )
    r = on_host(n, script, stdin=buf.getvalue(), timeout=120)
    if r.returncode != 0:
        raise Fatal(
            f"[controlPlane] Failed to bring up Control Plane: Failed to start [{APISERVER_CONTAINER}] "
            f"container on host [{n.address}]: {r.stderr.decode(errors='replace').strip()}"
        )


def healthz(n: Node, ca_file: str, timeout: float) -> str | None:
    """None once https://<host>:6443/healthz says ok within timeout; else the last error."""
    import ssl

    ctx = ssl.create_default_context(cafile=ca_file)
    url = f"https://{n.address}:{APISERVER_PORT}/healthz"
    end, last = time.monotonic() + timeout, "not asked"
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=15, context=ctx) as r:
                if r.read().strip() == b"ok":
                    return None
        except urllib.error.HTTPError as e:
            last = e.read().decode(errors="replace").strip().replace("\n", "; ")
        except (OSError, ssl.SSLError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(0.5)
    return f"Get {url}: {last}"


# --- rke up -------------------------------------------------------------------------------------------------


@dataclass
class Up:
    config_path: str
    config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)

    def tls_files(self, d: str, ca: str, cert: str, key: str) -> etcdgw.Tls:
        os.makedirs(d, exist_ok=True)
        paths = []
        for i, pem in enumerate((ca, cert, key)):
            p = os.path.join(d, f"{i}.pem")
            Path(p).write_text(pem)
            os.chmod(p, 0o600)
            paths.append(p)
        return etcdgw.Tls(*paths)

    def run(self) -> None:
        info(f"Running RKE version: {VERSION}")
        info("Initiating Kubernetes cluster")
        try:
            import yaml

            self.config = yaml.safe_load(Path(self.config_path).read_text()) or {}
        except OSError as e:
            raise Fatal(f"Failed to resolve cluster file: {e}") from None
        sp = state_path_for(self.config_path)
        if os.path.exists(sp):
            self.state = json.loads(Path(sp).read_text())
        if msg := validate(self.config):
            raise Fatal(msg)
        e = external_etcd(self.config)
        if e.get("external_urls") and (kind := key_go_type(str(e["key"]))):
            raise Panic(CLIENT_KEY_NOT_RSA.format(type=kind))
        current = self.state.get("currentState") or {}
        bundle_old = (
            current.get("certificatesBundle")
            or (self.state.get("desiredState") or {}).get("certificatesBundle")
            or {}
        )
        nodes = nodes_of(self.config)
        old_ca = bundle_old.get("kube-ca") or {}
        if old_ca.get("certificatePEM") and old_ca.get("keyPEM"):
            ca = (old_ca["certificatePEM"], old_ca["keyPEM"])
        else:
            info("[certificates] Generating CA kubernetes certificates")
            ca = new_ca()
        info("[certificates] Generating Kubernetes API server certificates")
        bundle = build_bundle(self.config, nodes, ca)
        for name in sorted(bundle_old):
            if name.startswith("kube-etcd-") and name not in bundle:
                info(f"[certificates] Deleting unused certificate: {name}")
        desired = {"rkeConfig": rke_json(self.config), "certificatesBundle": bundle, "encryptionConfig": ""}
        self.state = {"desiredState": desired, "currentState": current}
        self.write_state(sp)
        info(f"Successfully Deployed state file at [{sp}]")
        info("Building Kubernetes cluster")
        inactive = self.tunnels(nodes)
        active = [n for n in nodes if n.address not in inactive]
        if msg := host_count(self.config, inactive):
            raise Fatal(msg)
        if current:
            info("[reconcile] Reconciling cluster state")
            if not external_etcd(self.config).get("external_urls") and plane_replaced(
                state_nodes(current), self.config, inactive
            ):
                raise Fatal(PLANE_REPLACED)
        external = bool(external_etcd(self.config).get("external_urls"))
        with tempfile.TemporaryDirectory() as d:
            if external:
                self.external(d)
            elif current:
                old_node = bundle_old.get("kube-node") or bundle["kube-node"]
                old_tls = self.tls_files(
                    os.path.join(d, "old"), ca[0], old_node["certificatePEM"], old_node["keyPEM"]
                )
                self.delete_members(state_nodes(current), nodes, active, old_tls)
            for n in active:
                deploy_certs(n, host_files(bundle, n))
            info("[certificates] Successfully deployed kubernetes certificates to Cluster nodes")
            if not external:
                node = bundle["kube-node"]
                self.etcd_plane(active, self.tls_files(d, ca[0], node["certificatePEM"], node["keyPEM"]))
            self.control_plane(active, nodes, d, ca[0])
        self.state["currentState"] = desired
        self.write_state(sp)
        self.kube_config(nodes, bundle)
        info("Finished building Kubernetes cluster successfully")

    def write_state(self, path: str) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f, indent=2)
        os.replace(tmp, path)

    def tunnels(self, nodes: list[Node]) -> set[str]:
        inactive: set[str] = set()
        with concurrent.futures.ThreadPoolExecutor(max(1, len(nodes))) as pool:
            for n, err in zip(nodes, pool.map(tunnel, nodes), strict=True):
                info(f"[dialer] Setup tunnel for host [{n.address}]")
                if err is not None:
                    warn(f"Failed to set up SSH tunneling for host [{n.address}]: {err}")
                    warn(f"Removing host [{n.address}] from node lists")
                    inactive.add(n.address)
        return inactive

    def external(self, d: str) -> None:
        e = external_etcd(self.config)
        info("[etcd] External etcd connection string has been specified, skipping etcd plane")
        tls = self.tls_files(d, str(e["ca_cert"]), str(e["cert"]), str(e["key"]))
        urls = e["external_urls"] if isinstance(e["external_urls"], list) else [e["external_urls"]]
        for url in urls:
            try:
                etcdgw.count(str(url), str(e["path"]).rstrip("/") + "/", tls, timeout=15)
            except etcdgw.GatewayError as err:
                # the stand-in's own words: RKE would fail later, at kube-apiserver's health check
                raise Fatal(
                    f"[etcd] Failed to connect to external etcd [{url}] with the given certificates: {err}"
                ) from None
            info(f"[etcd] External etcd [{url}] answers with the given certificates")

    def delete_members(
        self, current: list[Node], nodes: list[Node], active: list[Node], tls: etcdgw.Tls
    ) -> None:
        info("[reconcile] Check etcd hosts to be deleted")
        new = {n.address for n in nodes if "etcd" in n.roles}
        etcd_active = [n for n in active if "etcd" in n.roles]
        for gone in (n for n in current if "etcd" in n.roles and n.address not in new):
            name = f"etcd-{gone.hostname_override}"
            info(f"[remove/etcd] Removing member [{name}] from etcd cluster")
            last = "no etcd host answered"
            removed = False
            for h in etcd_active:
                ep = f"https://{h.cert_address}:2379"
                try:
                    ms = etcdgw.members(ep, tls)
                    ids = [m.get("ID") for m in ms if m.get("name") == name]
                    if not ids:
                        info(f"[remove/etcd] [{name}] is not a member of the etcd cluster")
                        removed = True
                        break
                    # RKE's timings: etcd's own request timeout is 5 s + 2 election timeouts
                    etcdgw.remove_member(ep, str(ids[0]), tls, deadline=15)
                    removed = True
                    info(f"[remove/etcd] Successfully removed member [{name}]")
                    break
                except etcdgw.GatewayError as err:
                    last = str(err)
            if not removed:
                warn(f"[reconcile] Failed to delete etcd member [{name}] from etcd cluster: {last}")

    def etcd_plane(self, active: list[Node], tls: etcdgw.Tls) -> None:
        info("[etcd] Building up etcd plane..")
        bad = []
        for h in (n for n in active if "etcd" in n.roles):
            try:
                # a bound above etcd's own request timeout (5 s + 2 election timeouts: 15 s with
                # RKE's timings), so that etcd's answer, not ours, is what fails
                etcdgw.count(f"https://{h.cert_address}:2379", "/registry/", tls, timeout=30)
                info(f"[etcd] etcd host [{h.address}] reported healthy=true")
            except etcdgw.GatewayError as err:
                warn(f"[etcd] host [{h.address}] failed to report healthy: {err}")
                bad.append(h.address)
        if bad:
            raise Fatal(
                "[etcd] Failed to bring up Etcd Plane: etcd cluster is unhealthy: hosts "
                f"[{','.join(bad)}] failed to report healthy. Check etcd container logs on each host for "
                "more information"
            )
        info("[etcd] Successfully started etcd plane.. Checking etcd cluster health")

    def control_plane(self, active: list[Node], nodes: list[Node], d: str, ca_cert: str) -> None:
        info("[controlplane] Building up Controller Plane..")
        ca_file = os.path.join(d, "kube-ca.pem")
        Path(ca_file).write_text(ca_cert)
        for n in (n for n in active if "controlplane" in n.roles):
            start_apiserver(n, apiserver_args(self.config, nodes, n))
            info(
                f"[controlplane] Successfully started [{APISERVER_CONTAINER}] container on host [{n.address}]"
            )
            info(f"[healthcheck] Start Healthcheck on service [{APISERVER_CONTAINER}] on host [{n.address}]")
            if err := healthz(n, ca_file, timeout=60):
                raise Fatal(
                    "[controlPlane] Failed to upgrade Control Plane: [[Failed to verify healthcheck: "
                    f"Failed to check https://localhost:{APISERVER_PORT}/healthz for service "
                    f"[{APISERVER_CONTAINER}] on host [{n.address}]: {err}]]"
                )
            info(f"[healthcheck] service [{APISERVER_CONTAINER}] on host [{n.address}] is healthy")
        info("[controlplane] Successfully started Controller Plane..")

    def kube_config(self, nodes: list[Node], bundle: dict[str, dict]) -> None:
        cp = next((n for n in nodes if "controlplane" in n.roles), None)
        if cp is None:
            return
        admin = bundle["kube-admin"]
        text = kube_config_text(
            str(self.config.get("cluster_name") or "local"),
            f"https://{cp.address}:{APISERVER_PORT}",
            bundle["kube-ca"]["certificatePEM"],
            admin["certificatePEM"],
            admin["keyPEM"],
        )
        path = kube_config_path_for(self.config_path)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        info(f"[kubeconfig] Successfully Deployed local admin kubeconfig at [{path}]")


def kube_config_text(cluster: str, server: str, ca_pem: str, cert_pem: str, key_pem: str) -> str:
    """kube_config_cluster.yml as RKE writes it (pki.GetKubeConfigX509WithData)."""

    def b(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    return f"""apiVersion: v1
kind: Config
clusters:
- cluster:
    api-version: v1
    certificate-authority-data: {b(ca_pem)}
    server: "{server}"
  name: "{cluster}"
contexts:
- context:
    cluster: "{cluster}"
    user: "kube-admin-{cluster}"
  name: "{cluster}"
current-context: "{cluster}"
users:
- name: "kube-admin-{cluster}"
  user:
    client-certificate-data: {b(cert_pem)}
    client-key-data: {b(key_pem)}
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rke", description="STAND-IN for RKE's rke (etcd-dr lab)")
    p.add_argument("--version", action="store_true")
    sub = p.add_subparsers(dest="cmd")
    up = sub.add_parser("up")
    up.add_argument("--config", default="cluster.yml")
    args = p.parse_args(argv)
    if args.version:
        print(f"rke version {VERSION} (etcd-dr lab stand-in)")
        return 0
    if args.cmd != "up":
        p.print_usage(sys.stderr)
        return 2
    try:
        Up(args.config).run()
    except Fatal as e:
        log("FATA", str(e))
        return 1
    except Panic as e:
        print(f"panic: {e}\n\ngoroutine 1 [running]:\n(etcd-dr lab stand-in)", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
