"""Write tests/fixtures/rke/<shape>/{cluster.yml,cluster.rkestate}: RKE's files in RKE's real formats.

    .venv/bin/python scripts/make_rke_fixtures.py [OUT_DIR]

cluster.yml as a person writes it (snake_case keys, comments); cluster.rkestate as `rke up` leaves
it (cluster/state.go WriteStateFile: json.MarshalIndent with two spaces; `desiredState` and
`currentState`, each `{rkeConfig (camelCase, RKE's defaults applied), certificatesBundle}`). The
bundle's entries are pki/util.go ToCertObject's: name, commonName `system:<name>`, envName, paths
under /etc/kubernetes/ssl, and a kubeconfig for the components that have one. Keys are RSA in
PKCS#1 PEM ("RSA PRIVATE KEY"), as RKE writes them (pki/cert EncodePrivateKeyPEM); certificates
are signed with etcd_dr.certs. Every run makes new keys: the tests read what is written, so the
fixtures are regenerated as a whole, never edited by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from etcd_dr.certs import CertKeyPair, issue_cert, new_ca

ROOT = Path(__file__).resolve().parents[1]
SSL = "/etc/kubernetes/ssl/"
ETCD_IMAGE = "rancher/mirrored-coreos-etcd:v3.4.14-rancher1"
RKE_VERSION_K8S = "v1.20.6-rancher1-1"


def _pkcs1(pair: CertKeyPair) -> CertKeyPair:
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return CertKeyPair(pair.cert_pem, pem)


def _entry(name: str, pair: CertKeyPair | None, *, cn: str = "", ou: str = "", kubeconfig: bool) -> dict:
    """pki/util.go ToCertObject."""
    env = name.upper().replace("-", "_")
    cfg, cfg_path, cfg_env = "", "", ""
    if kubeconfig:
        cfg_path = f"{SSL}kubecfg-{name}.yaml"
        cfg_env = f"KUBECFG_{env}"
        cfg = (
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    api-version: v1\n"
            f'    certificate-authority: {SSL}kube-ca.pem\n    server: "https://127.0.0.1:6443"\n'
            f'  name: "local"\ncontexts:\n- context:\n    cluster: "local"\n    user: "{name}-local"\n'
            f'  name: "local"\ncurrent-context: "local"\nusers:\n- name: "{name}-local"\n  user:\n'
            f"    client-certificate: {SSL}{name}.pem\n    client-key: {SSL}{name}-key.pem\n"
        )
    return {
        "certificatePEM": pair.cert_pem.decode() if pair else "",
        "keyPEM": pair.key_pem.decode() if pair else "",
        "config": cfg,
        "name": name,
        "commonName": cn or f"system:{name}",
        "ouName": ou,
        "envName": env,
        "path": f"{SSL}{name}.pem",
        "keyEnvName": f"{env}_KEY",
        "keyPath": f"{SSL}{name}-key.pem",
        "configEnvName": cfg_env,
        "configPath": cfg_path,
    }


def _dashed(a: str) -> str:
    return a.replace(".", "-").lower()


def bundle(nodes: list[dict], *, external: dict | None = None) -> tuple[dict, CertKeyPair]:
    ca = _pkcs1(new_ca("kube-ca", rsa_bits=2048))
    out = {"kube-ca": _entry("kube-ca", ca, kubeconfig=False)}
    etcd_ips = sorted({n.get("internal_address") or n["address"] for n in nodes if "etcd" in n["role"]})

    def sign(cn: str, *, ips: tuple[str, ...] = (), org: str | None = None) -> CertKeyPair:
        return _pkcs1(issue_cert(ca, cn, ips=ips, rsa_bits=2048, organization=org))

    out["kube-node"] = _entry(
        "kube-node",
        sign("system:node", org="system:nodes"),
        cn="system:node",
        ou="system:nodes",
        kubeconfig=True,
    )
    out["kube-apiserver"] = _entry(
        "kube-apiserver", sign("kube-apiserver", ips=("10.43.0.1",)), kubeconfig=False
    )
    out["kube-admin"] = _entry(
        "kube-admin",
        sign("kube-admin", org="system:masters"),
        cn="kube-admin",
        ou="system:masters",
        kubeconfig=True,
    )
    out["kube-service-account-token"] = _entry(
        "kube-service-account-token", sign("kube-service-account-token"), kubeconfig=False
    )
    for n in nodes:
        if "etcd" in n["role"]:
            cert_addr = n.get("internal_address") or n["address"]
            name = f"kube-etcd-{_dashed(cert_addr)}"
            out[name] = _entry(name, sign("kube-etcd", ips=(*etcd_ips, "127.0.0.1")), kubeconfig=False)
    if external is not None:
        client = external["client"]
        out["kube-etcd-client"] = _entry("kube-etcd-client", client, kubeconfig=True)
        out["kube-etcd-client-ca"] = _entry(
            "kube-etcd-client-ca", CertKeyPair(external["ca"].cert_pem, b""), kubeconfig=True
        )
    return out, ca


def rke_config_json(yml_nodes: list[dict], *, cluster_name: str, etcd: dict, bastion: dict | None) -> dict:
    """The rkeConfig `rke up` stores: camelCase, cluster/defaults.go applied."""
    nodes = []
    for n in yml_nodes:
        node = {
            "address": n["address"],
            "port": str(n.get("port", 22)),
            "internalAddress": n.get("internal_address") or n["address"],
            "role": n["role"],
            "hostnameOverride": (n.get("hostname_override") or n["address"]).lower(),
            "user": n["user"],
            "sshKeyPath": n.get("ssh_key_path", "~/.ssh/id_rsa"),
        }
        nodes.append(node)
    etcd_json = {
        "image": ETCD_IMAGE,
        "extraArgs": {"election-timeout": "5000", "heartbeat-interval": "500", **etcd.get("extra_args", {})},
        "snapshot": etcd.get("snapshot", True),
        "retention": etcd.get("retention", "72h"),
        "creation": etcd.get("creation", "12h"),
        "backupConfig": {
            "enabled": True,
            "intervalHours": etcd.get("interval_hours", 12),
            "retention": etcd.get("backup_retention", 6),
            "s3BackupConfig": None,
            "timeout": 300,
        },
    }
    for y, j in (
        ("external_urls", "externalUrls"),
        ("ca_cert", "caCert"),
        ("cert", "cert"),
        ("key", "key"),
        ("path", "path"),
    ):
        if y in etcd:
            etcd_json[j] = etcd[y]
    return {
        "nodes": nodes,
        "services": {
            "etcd": etcd_json,
            "kubeApi": {
                "image": "rancher/hyperkube:" + RKE_VERSION_K8S.replace("-rancher1-1", "-rancher1"),
                "serviceClusterIpRange": "10.43.0.0/16",
                "serviceNodePortRange": "30000-32767",
            },
            "kubeController": {"clusterCidr": "10.42.0.0/16", "serviceClusterIpRange": "10.43.0.0/16"},
            "scheduler": {},
            "kubelet": {"clusterDomain": "cluster.local", "clusterDnsServer": "10.43.0.10"},
            "kubeproxy": {},
        },
        "network": {"plugin": "canal", "options": {"canal_flannel_backend_type": "vxlan"}},
        "authentication": {"strategy": "x509"},
        "systemImages": {"etcd": ETCD_IMAGE, "alpine": "rancher/rke-tools:v0.1.74"},
        "sshKeyPath": "~/.ssh/id_rsa",
        "sshAgentAuth": False,
        "authorization": {"mode": "rbac"},
        "ignoreDockerVersion": None,
        "enableCriDockerd": None,
        "kubernetesVersion": RKE_VERSION_K8S,
        "ingress": {"provider": "nginx", "defaultBackend": False, "defaultIngressClass": None},
        "clusterName": cluster_name,
        "prefixPath": "/",
        "winPrefixPath": "c:/",
        "addonJobTimeout": 45,
        "bastionHost": bastion or {},
        "monitoring": {"provider": "metrics-server", "replicas": 1},
        "restore": {},
        "rotateEncryptionKey": False,
        "dns": {"provider": "coredns"},
    }


def yml_text(
    nodes: list[dict], *, header: str, cluster_name: str, etcd_yaml: str, bastion_yaml: str = ""
) -> str:
    lines = [f"# {header}", "# managed by the platform team: keep the comments", "nodes:"]
    for n in nodes:
        lines.append(f"  - address: {n['address']}  # {n.get('comment', 'a node')}")
        for k in ("internal_address", "port", "hostname_override", "user", "ssh_key_path"):
            if k in n:
                v = n[k]
                lines.append(f"    {k}: {json.dumps(v) if k == 'port' and isinstance(v, str) else v}")
        lines.append(f"    role: [{', '.join(n['role'])}]")
    lines += [
        "",
        "services:",
        "  etcd:",
        etcd_yaml.rstrip("\n"),
        "  kube-api:",
        "    service_cluster_ip_range: 10.43.0.0/16  # the Service range",
        "  kube-controller:",
        "    cluster_cidr: 10.42.0.0/16",
        "    service_cluster_ip_range: 10.43.0.0/16",
        "",
        "network:",
        "  plugin: canal",
        "",
        f"cluster_name: {cluster_name}",
        f"kubernetes_version: {RKE_VERSION_K8S}",
        "ssh_key_path: ~/.ssh/id_rsa",
    ]
    if bastion_yaml:
        lines += [bastion_yaml.rstrip("\n")]
    return "\n".join(lines) + "\n"


def _indent_pem(pem: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line + "\n" for line in pem.strip().splitlines())


def write_shape(
    out: Path,
    name: str,
    nodes: list[dict],
    *,
    cluster_name: str,
    etcd: dict,
    etcd_yaml: str,
    bastion: dict | None = None,
    bastion_yaml: str = "",
    external: dict | None = None,
) -> None:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    certs, _ca = bundle(nodes, external=external)
    cfg = rke_config_json(nodes, cluster_name=cluster_name, etcd=etcd, bastion=bastion)
    state = {
        "desiredState": {"rkeConfig": cfg, "certificatesBundle": certs},
        "currentState": {"rkeConfig": cfg, "certificatesBundle": certs},
    }
    (d / "cluster.yml").write_text(
        yml_text(
            nodes,
            header=f"RKE cluster {cluster_name} ({name})",
            cluster_name=cluster_name,
            etcd_yaml=etcd_yaml,
            bastion_yaml=bastion_yaml,
        )
    )
    (d / "cluster.rkestate").write_text(json.dumps(state, indent=2) + "\n")
    (d / "cluster.rkestate").chmod(0o600)


ETCD_DEFAULT_YAML = """\
    snapshot: true      # recurring snapshots by RKE
    creation: 6h
    retention: 24h
    extra_args:
      heartbeat-interval: 500
      election-timeout: 5000
"""


def main(out: Path) -> None:
    master = ["controlplane", "etcd"]
    write_shape(
        out,
        "one-node",
        [
            {
                "address": "10.10.0.5",
                "user": "rancher",
                "role": ["controlplane", "etcd", "worker"],
                "comment": "all in one",
            }
        ],
        cluster_name="single",
        etcd={},
        etcd_yaml="    snapshot: false\n",
    )
    write_shape(
        out,
        "three-masters",
        [
            {
                "address": "10.231.0.11",
                "hostname_override": "master1",
                "user": "root",
                "role": master,
                "comment": "site A",
            },
            {
                "address": "10.231.0.12",
                "hostname_override": "master2",
                "user": "root",
                "role": master,
                "comment": "site A",
            },
            {
                "address": "10.231.0.13",
                "hostname_override": "master3",
                "user": "root",
                "role": master,
                "comment": "site A",
            },
            {
                "address": "10.231.0.21",
                "hostname_override": "node1",
                "user": "root",
                "role": ["worker"],
                "comment": "site B",
            },
            {
                "address": "10.231.0.22",
                "hostname_override": "node2",
                "user": "root",
                "role": ["worker"],
                "comment": "deploy",
            },
        ],
        cluster_name="prod-eu1",
        etcd={"creation": "6h", "retention": "24h"},
        etcd_yaml=ETCD_DEFAULT_YAML,
    )
    five = [
        {
            "address": f"203.0.113.{10 + i}",
            "internal_address": f"172.16.0.{10 + i}",
            "port": 2222,
            "hostname_override": f"Etcd{i}",
            "user": "ops",
            "role": ["etcd"],
            "comment": "NATed",
        }
        for i in range(1, 6)
    ]
    five += [
        {
            "address": "203.0.113.21",
            "internal_address": "172.16.0.21",
            "port": "2200",
            "hostname_override": "cp1",
            "user": "ops",
            "role": ["controlplane", "worker"],
            "comment": "cp",
        },
    ]
    write_shape(
        out,
        "five-etcd-internal",
        five,
        cluster_name="nat-cluster",
        etcd={"extra_args": {"heartbeat-interval": "250", "election-timeout": "2500"}},
        etcd_yaml="    extra_args:\n      heartbeat-interval: '250'\n      election-timeout: '2500'\n",
    )
    write_shape(
        out,
        "bastion",
        [
            {"address": "10.20.0.11", "user": "rancher", "role": master},
            {"address": "10.20.0.12", "user": "rancher", "role": master},
            {"address": "10.20.0.13", "user": "rancher", "role": master},
        ],
        cluster_name="behind-jump",
        etcd={},
        etcd_yaml="    snapshot: true\n",
        bastion={"address": "198.51.100.7", "port": "22", "user": "jump", "sshKeyPath": "~/.ssh/id_rsa"},
        bastion_yaml="bastion_host:\n  address: 198.51.100.7\n  user: jump\n  port: 22\n",
    )
    ext_ca = _pkcs1(new_ca("etcd-ext-ca", rsa_bits=2048))
    client = _pkcs1(issue_cert(ext_ca, "kube-apiserver-etcd-client", rsa_bits=2048, server=False))
    ext_etcd = {
        "external_urls": ["https://10.30.0.51:2379", "https://10.30.0.52:2379"],
        "ca_cert": ext_ca.cert_pem.decode(),
        "cert": client.cert_pem.decode(),
        "key": client.key_pem.decode(),
        "path": "/registry",
    }
    ext_yaml = (
        "    path: /registry\n    external_urls:\n      - https://10.30.0.51:2379\n      - https://10.30.0.52:2379\n"
        "    ca_cert: |-\n"
        + _indent_pem(ext_ca.cert_pem.decode(), 6)
        + "    cert: |-\n"
        + _indent_pem(client.cert_pem.decode(), 6)
        + "    key: |-\n"
        + _indent_pem(client.key_pem.decode(), 6)
    )
    write_shape(
        out,
        "external-etcd",
        [
            {
                "address": "10.30.0.11",
                "hostname_override": "cp1",
                "user": "root",
                "role": ["controlplane", "worker"],
            },
            {
                "address": "10.30.0.12",
                "hostname_override": "cp2",
                "user": "root",
                "role": ["controlplane", "worker"],
            },
        ],
        cluster_name="ext",
        etcd=ext_etcd,
        etcd_yaml=ext_yaml,
        external={"ca": ext_ca, "client": client},
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests/fixtures/rke")
