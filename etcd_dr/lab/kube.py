"""The lab as `rke up` would have left it: Kubernetes-shaped objects in etcd under /registry (the
source incident's `hello-world` pods among them; keys in Kubernetes' layout, JSON values instead of
protobuf), the certificates RKE deploys for kube-apiserver (kube-node, kube-apiserver, kube-admin
signed by the lab's real kube-ca), RKE's files (cluster.yml, cluster.rkestate with the real
certificates, kube_config_cluster.yml) in the lab's directory and on the deploy host (node2,
/opt/rke), the stand-in `rke` there and the stand-in kube-apiserver running on each controlplane
host. `lab up` records the objects per resource prefix (registry-counts.json): what the API check
compares against after a recovery."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from etcd_dr.certs import CertKeyPair, issue_cert
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.executor import Executor
from etcd_dr.inventory import Role
from etcd_dr.kubernetes import apicheck
from etcd_dr.kubernetes.apicheck import registry_counts
from etcd_dr.lab import standins
from etcd_dr.lab.config import HOSTS, LabConfig
from etcd_dr.lab.inventory_file import CLUSTER_YML, RKE_REMOTE_DIR
from etcd_dr.lab.members import CERT_DIR
from etcd_dr.lab.standins import rke as rke_standin

REMOTE_DIR = RKE_REMOTE_DIR
COUNTS_FILE = apicheck.COUNTS_FILE  # in the lab dir, the lab inventory's state directory
KUBERNETES_VERSION = "v1.20.15-rancher1-1"

# namespace -> pods; what a small RKE cluster holds, plus the source incident's hello-world
_PODS: dict[str, tuple[str, ...]] = {
    "default": tuple(f"hello-world-7d9c8b6f5-{s}" for s in ("4xk2p", "9qwlt", "h7m3n")),
    "kube-system": (
        "coredns-6f85d5fb88-2lq8v", "coredns-6f85d5fb88-x7c4k", "coredns-autoscaler-79599b9dc6-7fkzs",
        "metrics-server-8449844bf-nvk5l",
        "canal-4bq8w", "canal-9xk2m", "canal-l5hrd", "canal-p2x7c", "canal-v8s4n",
    ),
    "ingress-nginx": ("nginx-ingress-controller-5kx2v", "nginx-ingress-controller-q8w9z"),
    "cattle-system": ("cattle-cluster-agent-5c9d8f7b6-jk4lm",),
}  # fmt: skip
_SERVICES = {
    "default": ("kubernetes", "hello-world"),
    "kube-system": ("kube-dns", "metrics-server"),
    "ingress-nginx": ("ingress-nginx-controller-admission",),
}
_SECRETS = {
    "default": ("default-token-5xk9p", "hello-world-tls"),
    "kube-system": ("coredns-token-8qw2l", "canal-token-v7m4k", "metrics-server-token-2lx8p"),
    "cattle-system": ("cattle-credentials-6f4c1a2", "cattle-token-h8d3k"),
}
_CONFIGMAPS = {
    "kube-system": ("coredns", "extension-apiserver-authentication", "kube-root-ca.crt"),
    "default": ("kube-root-ca.crt", "hello-world-config"),
}
_DEPLOYMENTS = {
    "default": ("hello-world",),
    "kube-system": ("coredns", "coredns-autoscaler", "metrics-server"),
    "cattle-system": ("cattle-cluster-agent",),
}


def objects(cfg: LabConfig) -> dict[str, dict]:
    """Every object `lab up` writes: key -> value (a Kubernetes-shaped JSON object). Pure."""
    out: dict[str, dict] = {}

    def put(resource: str, kind: str, name: str, ns: str | None = None, **extra: object) -> None:
        meta = {"name": name, **({"namespace": ns} if ns else {}), "uid": f"lab-{resource}-{ns or ''}-{name}"}
        key = f"/registry/{resource}/" + (f"{ns}/{name}" if ns else name)
        out[key] = {"kind": kind, "apiVersion": "v1", "metadata": meta, **extra}

    namespaces = sorted({"default", "kube-system", "kube-public", "kube-node-lease", *_PODS, *_SECRETS})
    for ns in namespaces:
        put("namespaces", "Namespace", ns, status={"phase": "Active"})
    for h in HOSTS:
        put(
            "minions",
            "Node",
            h.name,
            status={"addresses": [{"type": "InternalIP", "address": cfg.address(h.name)}]},
        )
        put("leases", "Lease", h.name, "kube-node-lease", spec={"holderIdentity": h.name})
    for name in ("kube-controller-manager", "kube-scheduler"):
        put("leases", "Lease", name, "kube-system", spec={"holderIdentity": "master1"})
    for ns, pods in _PODS.items():
        for p in pods:
            put("pods", "Pod", p, ns, status={"phase": "Running"})
    for resource, kind, table in (
        ("services/specs", "Service", _SERVICES),
        ("secrets", "Secret", _SECRETS),
        ("configmaps", "ConfigMap", _CONFIGMAPS),
        ("deployments", "Deployment", _DEPLOYMENTS),
    ):
        for ns, names in table.items():
            for n in names:
                put(resource, kind, n, ns)
    return out


def seed(client: EtcdClient, cfg: LabConfig) -> dict[str, int]:
    """Write the objects into etcd; returns the count per resource prefix read back from etcd."""
    objs = objects(cfg)
    with ThreadPoolExecutor(4) as pool:  # one round trip each: 55 in a row cost 0.2-0.8 s
        list(pool.map(lambda k: client.put(k, json.dumps(objs[k], separators=(",", ":")), timeout=5.0), objs))
    return registry_counts(client)


def counts_path(cfg: LabConfig) -> Path:
    return cfg.dir / COUNTS_FILE


def save_counts(cfg: LabConfig, counts: Mapping[str, int]) -> Path:
    p = counts_path(cfg)
    p.write_text(json.dumps(dict(counts), indent=2) + "\n")
    return p


def load_counts(cfg: LabConfig) -> dict[str, int]:
    return {str(k): int(v) for k, v in json.loads(counts_path(cfg).read_text()).items()}


# --- RKE's certificates and files -------------------------------------------------------------------------


def kube_certs(cfg: LabConfig, ca: CertKeyPair) -> dict[str, CertKeyPair]:
    """The certificates RKE deploys for the control plane, signed by the lab's kube-ca."""
    cps = [h.name for h in HOSTS if Role.CONTROLPLANE in h.roles]
    api_ips = ("127.0.0.1", "10.43.0.1", *(cfg.address(h) for h in cps))
    api_dns = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", *cps)
    return {
        "kube-apiserver": issue_cert(ca, "system:kube-apiserver", ips=api_ips, dns=api_dns),
        "kube-node": issue_cert(ca, "system:node", server=False),
        "kube-admin": issue_cert(ca, "kube-admin", server=False),
    }


def install_kube_certs(ex: Executor, certs: Mapping[str, CertKeyPair], *, controlplane: bool) -> None:
    """kube-node on every host (kubelet's; kube-apiserver's etcd client), kube-apiserver and
    kube-admin on controlplane hosts, at RKE's paths."""
    for name, pair in certs.items():
        if name != "kube-node" and not controlplane:
            continue
        ex.put(pair.cert_pem, f"{CERT_DIR}/{name}.pem", reason=f"install {name} certificate")
        ex.put(pair.key_pem, f"{CERT_DIR}/{name}-key.pem", mode=0o600, reason=f"install {name} key")


def cluster_yml(cfg: LabConfig) -> dict:
    """The lab's cluster.yml as RKE's user would have written it."""
    nodes = []
    for h in HOSTS:
        roles = [r for r in ("controlplane", "etcd", "worker") if Role(r) in h.roles]
        nodes.append(
            {
                "address": cfg.address(h.name),
                "port": "22",
                "role": roles,
                "hostname_override": h.name,
                "user": "root",
            }
        )
    return {
        "cluster_name": f"lab-{cfg.prefix}",
        "nodes": nodes,
        # the lab's key, at a path the deploy host sees too (the hosts share /tmp with the machine)
        "ssh_key_path": str(cfg.keys_dir / "id_ed25519"),
        "kubernetes_version": KUBERNETES_VERSION,
        "services": {
            "etcd": {"extra_args": {"heartbeat-interval": "500", "election-timeout": "5000"}},
            "kube-api": {"service_cluster_ip_range": "10.43.0.0/16"},
        },
        "network": {"plugin": "canal"},
    }


def rkestate(config: dict, bundle: Mapping[str, CertKeyPair], names: Mapping[str, str]) -> dict:
    """cluster.rkestate in RKE's JSON (cluster/state.go FullState): desiredState and currentState,
    each the rkeConfig and the certificatesBundle (pki.CertificatePKI entries)."""
    certs = {
        n: rke_standin.bundle_entry(n, names.get(n, n), p.cert_pem.decode(), p.key_pem.decode())
        for n, p in bundle.items()
    }
    part = {"rkeConfig": rke_standin.rke_json(config), "certificatesBundle": certs, "encryptionConfig": ""}
    return {"desiredState": part, "currentState": part}


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path.with_suffix(path.suffix + ".part"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.with_suffix(path.suffix + ".part").replace(path)


def write_rke_files(
    cfg: LabConfig, ca: CertKeyPair, members: Mapping[str, CertKeyPair], kube: Mapping[str, CertKeyPair]
) -> dict[str, str]:
    """cluster.yml, cluster.rkestate and kube_config_cluster.yml in the lab's dir; returns them by
    file name (for the deploy host)."""
    config = cluster_yml(cfg)
    names = {"kube-apiserver": "system:kube-apiserver", "kube-node": "system:node"}
    state = rkestate(config, {"kube-ca": ca, **members, **kube}, names)
    admin = kube["kube-admin"]
    files = {
        CLUSTER_YML: "# the lab's cluster.yml, as RKE's user wrote it (etcd-dr lab up)\n"
        + yaml.safe_dump(config, sort_keys=False, default_flow_style=False),
        "cluster.rkestate": json.dumps(state, indent=2) + "\n",
        f"kube_config_{CLUSTER_YML}": rke_standin.kube_config_text(
            config["cluster_name"],
            f"https://{cfg.address('master1')}:{rke_standin.APISERVER_PORT}",
            ca.cert_pem.decode(),
            admin.cert_pem.decode(),
            admin.key_pem.decode(),
        ),
    }
    for name, text in files.items():
        _write(cfg.dir / name, text, 0o644 if name == CLUSTER_YML else 0o600)
    return files


def install_deploy_host(ex: Executor, files: Mapping[str, str]) -> None:
    """The stand-in rke and RKE's files in /opt/rke on the deploy host."""
    standins.install_rke(ex)
    ex.run(["mkdir", "-p", REMOTE_DIR])
    for name, text in files.items():
        ex.put(
            text.encode(),
            f"{REMOTE_DIR}/{name}",
            mode=0o644 if name == CLUSTER_YML else 0o600,
            reason=f"RKE's {name}",
        )


def start_apiservers(cfg: LabConfig, exs: Mapping[str, Executor]) -> None:
    """The stand-in kube-apiserver on each controlplane host, as RKE left it: pointed at the etcd
    nodes with kube-node's certificate, prefix /registry (the lab's stand-in image is loaded on
    every host by then: etcd_dr.lab.kubelet)."""
    config = cluster_yml(cfg)
    nodes = rke_standin.nodes_of(config)
    cps = [n for n in nodes if "controlplane" in n.roles]

    def one(n: rke_standin.Node) -> None:
        ex = exs[n.hostname_override]
        standins.install_scripts(ex, rke_standin.APISERVER_SCRIPTS)
        argv = rke_standin.apiserver_run_argv(rke_standin.apiserver_args(config, nodes, n))
        ex.run(argv, timeout=60, reason="start the stand-in kube-apiserver")

    with ThreadPoolExecutor(len(cps)) as pool:
        list(pool.map(one, cps))


def rsa_client_inventory(cfg: LabConfig) -> Path:
    """The lab's inventory with an RSA etcd client certificate signed by kube-ca, as RKE's kube-node
    is (what `inventory import-rke` gives an operator): RKE type-asserts an RSA key for external etcd
    (pki/services.go) and the lab's own etcd-dr client key is P-256. In the lab's directory, so that
    its relative paths (RKE's files, the audit log, the state directory) are the lab's."""
    d = cfg.dir
    ca = CertKeyPair((d / "certs/kube-ca.pem").read_bytes(), (d / "certs/kube-ca-key.pem").read_bytes())
    node = issue_cert(ca, "system:node", server=False, rsa_bits=2048, organization="system:nodes")
    _write(d / "certs/rsa-client.pem", node.cert_pem.decode(), 0o644)
    _write(d / "certs/rsa-client-key.pem", node.key_pem.decode(), 0o600)
    text = cfg.inventory_path.read_text()
    for old, new in (
        ("cert: certs/kube-etcd-client.pem", "cert: certs/rsa-client.pem"),
        ("key: certs/kube-etcd-client-key.pem", "key: certs/rsa-client-key.pem"),
    ):
        if old not in text:
            raise EtcdDrError(f"{cfg.inventory_path}: no `{old}` to replace; the lab's inventory changed")
        text = text.replace(old, new)
    out = d / "inventory-rsa-client.yaml"
    _write(out, text, 0o644)
    return out
