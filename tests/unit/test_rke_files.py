"""RKE's files read as RKE reads them (etcd_dr.kubernetes.rkefiles), on fixtures in RKE's formats
(tests/fixtures/rke, written by scripts/make_rke_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcd_dr.kubernetes.rkefiles import (
    RkeFileError,
    RkeRole,
    read_cluster_yml,
    read_state_file,
    state_path_for,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rke"


def test_three_masters_as_rke_reads_them() -> None:
    cfg = read_cluster_yml(FIX / "three-masters/cluster.yml")
    assert cfg.cluster_name == "prod-eu1"
    assert [n.hostname_override for n in cfg.etcd_nodes] == ["master1", "master2", "master3"]
    m1 = cfg.etcd_nodes[0]
    assert (m1.address, m1.internal_address, m1.port, m1.user) == ("10.231.0.11", "10.231.0.11", 22, "root")
    assert m1.roles == {RkeRole.CONTROLPLANE, RkeRole.ETCD}
    assert m1.etcd_member_name == "etcd-master1"
    # yaml.v2 decodes 500 into a Go string as its text
    assert dict(cfg.etcd.extra_args) == {"heartbeat-interval": "500", "election-timeout": "5000"}
    assert (cfg.etcd.snapshot, cfg.etcd.creation, cfg.etcd.retention) == (True, "6h", "24h")
    assert cfg.bastion is None and not cfg.etcd.external


def test_internal_addresses_name_the_certificates_and_defaults_apply() -> None:
    cfg = read_cluster_yml(FIX / "five-etcd-internal/cluster.yml")
    assert len(cfg.etcd_nodes) == 5
    e1 = cfg.etcd_nodes[0]
    # GetCrtNameForHost: the internal address when set and different; hostname lower-cased
    assert e1.etcd_cert_name == "kube-etcd-172-16-0-11"
    assert (e1.address, e1.port, e1.hostname_override) == ("203.0.113.11", 2222, "etcd1")
    cp = cfg.controlplane_nodes[0]
    assert cp.port == 2200  # RKE's ports are strings: "2200" read as 2200
    one = read_cluster_yml(FIX / "one-node/cluster.yml")
    n = one.nodes[0]
    assert (n.hostname_override, n.internal_address, n.port) == ("10.10.0.5", "10.10.0.5", 22)
    assert n.etcd_cert_name == "kube-etcd-10-10-0-5"


def test_state_file_json_names_and_bundle() -> None:
    st = read_state_file(FIX / "five-etcd-internal/cluster.rkestate")
    cur = st.current.rke_config
    assert cur is not None and [n.etcd_cert_name for n in cur.etcd_nodes] == [
        f"kube-etcd-172-16-0-{i}" for i in range(11, 16)
    ]
    certs = st.current.certificates
    assert {"kube-ca", "kube-node", "kube-etcd-172-16-0-11"} <= set(certs)
    ca = certs["kube-ca"]
    assert ca.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert ca.key_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert ca.path == "/etc/kubernetes/ssl/kube-ca.pem"
    assert "PRIVATE" not in repr(ca) and "PRIVATE" not in repr(cur.etcd)


def test_bastion_and_external_etcd_are_read() -> None:
    b = read_cluster_yml(FIX / "bastion/cluster.yml")
    assert b.bastion is not None and (b.bastion.address, b.bastion.user, b.bastion.port) == (
        "198.51.100.7",
        "jump",
        22,
    )
    ext = read_cluster_yml(FIX / "external-etcd/cluster.yml")
    assert ext.etcd.external and ext.etcd.path == "/registry" and not ext.etcd_nodes
    assert ext.etcd.key.startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_state_path_is_cluster_yml_with_the_extension_replaced() -> None:
    assert state_path_for(Path("/x/cluster.yml")) == Path("/x/cluster.rkestate")
    assert state_path_for(Path("/x/prod.yaml")) == Path("/x/prod.rkestate")


def test_unknown_and_bad_fields_are_reported_with_their_paths(tmp_path: Path) -> None:
    yml = tmp_path / "cluster.yml"
    yml.write_text(
        "nodes:\n"
        "  - address: 10.0.0.1\n    internal_adress: 10.1.0.1\n    user: root\n    role: [etcd, master]\n"
        "  - address: 10.0.0.2\n    role: [etcd]\n    port: x\n"
        "services:\n  etcd:\n    extra_arg: {a: b}\n"
        "clustr_name: a\n"
    )
    with pytest.raises(RkeFileError) as e:
        read_cluster_yml(yml)
    text = str(e.value)
    assert str(yml) in text
    assert "nodes[0].internal_adress: not a field RKE knows here; did you mean 'internal_address'?" in text
    assert (
        "nodes[0].role[1]: 'master' is not a role (RKE: \"Role [master] for host (1) is not recognized\")"
        in text
    )
    assert "nodes[1].user: is missing (RKE: 'User for host (2) is not provided'); add it" in text
    assert "nodes[1].port: 'x' is not a port number" in text
    assert "services.etcd.extra_arg: not a field RKE knows here; did you mean 'extra_args'?" in text
    assert "clustr_name: not a field RKE knows here; did you mean 'cluster_name'?" in text


def test_state_file_problems_name_their_path_and_never_a_key(tmp_path: Path) -> None:
    st = json.loads((FIX / "one-node/cluster.rkestate").read_text())
    st["currentState"]["certificatesBundle"]["kube-ca"]["keyPem"] = "-----BEGIN RSA PRIVATE KEY-----\nsecret"
    st["currentState"]["rkeConfig"]["nodes"][0]["internal_address"] = "10.0.0.1"  # yaml name in JSON
    p = tmp_path / "cluster.rkestate"
    p.write_text(json.dumps(st))
    with pytest.raises(RkeFileError) as e:
        read_state_file(p)
    text = str(e.value)
    assert (
        "currentState.certificatesBundle.kube-ca.keyPem: not a field RKE knows here; did you mean 'keyPEM'?"
        in text
    )
    assert (
        "currentState.rkeConfig.nodes[0].internal_address: not a field RKE knows here; did you mean " in text
    )
    assert "secret" not in text
    p.write_text("{not json")
    with pytest.raises(RkeFileError, match="not valid JSON at line 1"):
        read_state_file(p)
    with pytest.raises(RkeFileError, match=r"no such file; pass cluster\.rkestate"):
        read_state_file(tmp_path / "missing.rkestate")
