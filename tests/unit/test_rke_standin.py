"""The lab's stand-in rke: RKE's refusals decided as RKE decides them (pure parts), the state file in
RKE's JSON shape, and the lab's Kubernetes objects in Kubernetes' key layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from etcd_dr.certs import CertKeyPair, new_ca
from etcd_dr.kubernetes.apicheck import count_by_resource
from etcd_dr.lab import kube
from etcd_dr.lab.config import LabConfig
from etcd_dr.lab.standins import rke

CFG = LabConfig(prefix="unit", subnet="10.231.200.0/24", dir=Path("/tmp/etcd-dr/lab-unit"))


def config(**etcd: object) -> dict:
    c = kube.cluster_yml(CFG)
    c["services"]["etcd"].update(etcd)
    return c


def no_etcd_role(c: dict) -> dict:
    for n in c["nodes"]:
        n["role"] = [r for r in n["role"] if r != "etcd"] or ["worker"]
    return c


EXTERNAL = {
    "external_urls": ["https://10.231.200.13:2379"],
    "ca_cert": "CA",
    "cert": "C",
    "key": "K",
    "path": "/registry",
}


def test_the_lab_config_passes_every_check() -> None:
    c = config()
    assert rke.validate(c) is None
    assert rke.host_count(c, set()) is None
    assert not rke.plane_replaced(rke.nodes_of(c), c, set())


def test_no_etcd_node_and_no_external_etcd_is_refused_with_rkes_words() -> None:
    assert rke.host_count(no_etcd_role(config()), set()) == (
        "Cluster must have at least one etcd plane host: please specify one or more etcd in cluster config"
    )


def test_unreachable_etcd_hosts_are_named_as_rke_names_them() -> None:
    c = config()
    inactive = {"10.231.200.11", "10.231.200.12", "10.231.200.13"}
    assert rke.host_count(c, inactive) == (
        "Cluster must have at least one etcd plane host: failed to connect to the following etcd host(s) "
        "[10.231.200.11 10.231.200.12 10.231.200.13]"
    )


def test_internal_and_external_etcd_together_are_refused() -> None:
    assert rke.host_count(config(**EXTERNAL), set()) == "Cluster can't have both internal and external etcd"


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("ca_cert", "External CA Certificate for etcd can't be empty"),
        ("cert", "External Client Certificate for etcd can't be empty"),
        ("key", "External Client Key for etcd can't be empty"),
        ("path", "External etcd path can't be empty"),
    ],
)
def test_an_empty_external_field_is_refused(field: str, message: str) -> None:
    assert rke.validate(no_etcd_role(config(**{**EXTERNAL, field: ""}))) == message


def test_external_etcd_alone_passes() -> None:
    c = no_etcd_role(config(**EXTERNAL))
    assert rke.validate(c) is None and rke.host_count(c, set()) is None


def test_the_etcd_plane_is_replaced_without_overlap_or_with_every_old_host_down() -> None:
    old = rke.nodes_of(config())
    survivor_only = config()
    survivor_only["nodes"] = [n for n in survivor_only["nodes"] if n["hostname_override"] != "master1"]
    assert not rke.plane_replaced(old, survivor_only, set())  # master2, master3 overlap
    node1 = no_etcd_role(config())
    node1["nodes"][3]["role"] = ["etcd", "worker"]
    assert rke.plane_replaced(old, node1, set())  # node1 alone: no overlap
    assert rke.plane_replaced(old, config(), {"10.231.200.11", "10.231.200.12", "10.231.200.13"})
    assert not rke.plane_replaced(old, config(), {"10.231.200.11", "10.231.200.12"})


def test_state_path_and_rkeconfig_json_follow_rke() -> None:
    assert rke.state_path_for("cluster.yml") == "./cluster.rkestate"
    assert rke.state_path_for("/opt/rke/my.yaml") == "/opt/rke/my.rkestate"
    j = rke.rke_json(config(**EXTERNAL))
    assert j["nodes"][0]["hostnameOverride"] == "master1"
    assert j["services"]["etcd"]["externalUrls"] == EXTERNAL["external_urls"]
    assert j["services"]["etcd"]["caCert"] == "CA"
    assert j["services"]["etcd"]["extraArgs"] == {"heartbeat-interval": "500", "election-timeout": "5000"}
    assert "kubeApi" in j["services"]


def test_the_lab_state_file_holds_the_real_certificates_in_rkes_shape() -> None:
    ca = new_ca()
    members = {"kube-etcd-10-231-200-11": CertKeyPair(b"member-cert", b"member-key")}
    state = kube.rkestate(kube.cluster_yml(CFG), {"kube-ca": ca, **members}, {})
    assert set(state) == {"desiredState", "currentState"}
    bundle = state["currentState"]["certificatesBundle"]
    assert bundle["kube-ca"]["certificatePEM"] == ca.cert_pem.decode()
    e = bundle["kube-etcd-10-231-200-11"]
    assert e["path"] == "/etc/kubernetes/ssl/kube-etcd-10-231-200-11.pem"
    assert e["keyPath"] == "/etc/kubernetes/ssl/kube-etcd-10-231-200-11-key.pem"
    assert {"certificatePEM", "keyPEM", "name", "commonName"} <= set(e)
    json.dumps(state)  # plain JSON


def test_each_host_gets_the_files_of_its_roles_with_private_keys_0600() -> None:
    ca = rke.new_ca()
    nodes = rke.nodes_of(config())
    bundle = rke.build_bundle(config(), nodes, ca)
    m1 = rke.host_files(bundle, nodes[0])
    assert {"kube-ca.pem", "kube-apiserver.pem", "kube-node-key.pem", "kube-etcd-10-231-200-11.pem"} <= set(
        m1
    )
    assert "kube-ca-key.pem" not in m1 and m1["kube-node-key.pem"][1] == 0o600
    worker = rke.host_files(bundle, nodes[4])
    assert set(worker) == {"kube-ca.pem", "kube-node.pem", "kube-node-key.pem"}
    ext = no_etcd_role(config(**EXTERNAL))
    args = rke.apiserver_args(ext, rke.nodes_of(ext), rke.nodes_of(ext)[2])
    assert "--etcd-servers=https://10.231.200.13:2379" in args and "--etcd-prefix=/registry" in args
    assert "--etcd-certfile=/etc/kubernetes/ssl/kube-etcd-client.pem" in args


def test_the_lab_objects_use_kubernetes_key_layout() -> None:
    objs = kube.objects(CFG)
    assert "/registry/pods/default/hello-world-7d9c8b6f5-4xk2p" in objs
    assert "/registry/namespaces/kube-system" in objs
    counts = count_by_resource(objs)
    assert counts["/registry/pods/"] == 15 and counts["/registry/secrets/"] == 7
    assert {"/registry/services/", "/registry/leases/", "/registry/configmaps/"} <= set(counts)


def test_the_standins_texts_are_the_projects_once_it_has_them() -> None:
    """The stand-in keeps its own copy of RKE's texts (it runs on the hosts without etcd-dr); once
    etcd_dr.kubernetes.rkemessages exists, every one must be among its strings."""
    m = pytest.importorskip("etcd_dr.kubernetes.rkemessages")
    theirs = {v for v in vars(m).values() if isinstance(v, str)}
    theirs |= {x for v in vars(m).values() if isinstance(v, dict) for x in v.values() if isinstance(x, str)}
    ours = [rke.NO_ETCD_HOST, rke.BOTH_ETCD, rke.PLANE_REPLACED, *rke.EXTERNAL_EMPTY.values()]
    ours += [rke.NO_ETCD_HOST_UNREACHABLE, rke.CLIENT_KEY_NOT_RSA]
    missing = [t for t in ours if not any(t in v for v in theirs)]
    assert not missing, missing


def test_an_external_key_that_is_not_rsa_is_named_by_its_go_type() -> None:
    ec_key = new_ca().key_pem.decode()
    rsa_key = new_ca(rsa_bits=2048).key_pem.decode()
    assert rke.key_go_type(ec_key) == "*ecdsa.PrivateKey"
    assert rke.key_go_type(rsa_key) is None
    assert rke.CLIENT_KEY_NOT_RSA.format(type="*ecdsa.PrivateKey") == (
        "interface conversion: interface {} is *ecdsa.PrivateKey, not *rsa.PrivateKey"
    )


def test_the_lab_files_read_as_rke_reads_them(tmp_path: Path) -> None:
    """What `lab up` writes is what etcd_dr.kubernetes.rkefiles (RKE's reader) accepts: no unknown
    field, the etcd plane and the certificates where RKE keeps them."""
    from etcd_dr.certs import issue_cert
    from etcd_dr.kubernetes.rkefiles import read_cluster_yml, read_state_file

    ca = new_ca()
    members = {
        f"kube-etcd-10-231-200-{n}": issue_cert(ca, f"kube-etcd-10-231-200-{n}", ips=(f"10.231.200.{n}",))
        for n in (11, 12, 13)
    }
    files = kube.write_rke_files(
        dataclasses.replace(CFG, dir=tmp_path), ca, members, kube.kube_certs(CFG, ca)
    )
    assert set(files) == {"cluster.yml", "cluster.rkestate", "kube_config_cluster.yml"}
    config = read_cluster_yml(tmp_path / "cluster.yml")
    assert [n.hostname_override for n in config.etcd_nodes] == ["master1", "master2", "master3"]
    state = read_state_file(tmp_path / "cluster.rkestate")
    assert state.current is not None
    assert [n.address for n in state.current.rke_config.etcd_nodes] == [
        "10.231.200.11", "10.231.200.12", "10.231.200.13",
    ]  # fmt: skip
    assert {"kube-ca", "kube-node", "kube-etcd-10-231-200-13"} <= set(state.current.certificates)
    assert (tmp_path / "cluster.rkestate").stat().st_mode & 0o777 == 0o600


def test_kube_apiserver_runs_from_the_labs_stand_in_image() -> None:
    from etcd_dr.lab import kubelet

    assert rke.APISERVER_IMAGE == kubelet.IMAGE  # one image for the lab's stand-ins, loaded by lab up
    argv = rke.apiserver_run_argv(["--etcd-prefix=/registry"])
    assert argv[argv.index("--name") + 1] == "kube-apiserver" and "--network=host" in argv
    assert argv[-2:] == [f"{rke.SCRIPTS_DIR}/kube_apiserver.py", "--etcd-prefix=/registry"]
