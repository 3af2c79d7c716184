"""`etcd-dr kubernetes plan|cluster-yml` on the real lab, after real recoveries: masters lost (master3
survives: the surviving plane), all voters lost (node1's learner restored: external etcd, whose PEMs
the recovered etcd must accept). RKE's files for the lab are written here in RKE's formats (the
fixture generator, with the lab's addresses), beside an inventory copy that names them (`rke:`) and
reaches etcd with an RSA client certificate signed by the lab's kube-ca, as RKE's kube-node is (RKE
refuses an EC key for external etcd; the lab's own client key is EC: refused too, by the planner)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from etcd_dr.certs import CertKeyPair, issue_cert
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.inventory import InMemoryFile, load_inventory
from etcd_dr.kubernetes import rkemessages as msg
from etcd_dr.kubernetes.rkefiles import read_cluster_yml, read_state_file
from etcd_dr.lab import lifecycle
from etcd_dr.lab.config import EtcdSeries
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def _fixtures():
    spec = importlib.util.spec_from_file_location("make_rke_fixtures", ROOT / "scripts/make_rke_fixtures.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rke_inventory(lab: Lab) -> tuple[Path, Path]:
    """RKE's cluster.yml and state for the lab's five hosts (masters: controlplane+etcd), and an
    inventory copy naming them with an RSA kube-node-like client certificate. (inventory, cluster.yml)"""
    d, inv = lab.cfg.dir, load_inventory(lab.cfg.inventory_path)
    roles = {"master1": ["controlplane", "etcd"], "master2": ["controlplane", "etcd"]}
    roles |= {"master3": ["controlplane", "etcd"], "node1": ["worker"], "node2": ["worker"]}
    nodes = [
        {"address": h.address, "hostname_override": h.name, "user": "root", "role": roles[h.name]}
        for h in inv.hosts
    ]
    fx = _fixtures()
    fx.write_shape(d, "kplan", nodes, cluster_name=inv.cluster, etcd={}, etcd_yaml=fx.ETCD_DEFAULT_YAML)
    ca = CertKeyPair((d / "certs/kube-ca.pem").read_bytes(), (d / "certs/kube-ca-key.pem").read_bytes())
    node = issue_cert(ca, "system:node", rsa_bits=2048, organization="system:nodes")
    (d / "certs/kplan-node.pem").write_bytes(node.cert_pem)
    fd = os.open(d / "certs/kplan-node-key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(node.key_pem)
    text = lab.cfg.inventory_path.read_text()
    text = text.replace("cert: certs/kube-etcd-client.pem", "cert: certs/kplan-node.pem")
    text = text.replace("key: certs/kube-etcd-client-key.pem", "key: certs/kplan-node-key.pem")
    out = d / "kplan-inventory.yaml"
    out.write_text(with_rke(text, "kplan/cluster.yml"))
    return out, d / "kplan/cluster.yml"


def with_rke(text: str, cluster_yml: str) -> str:
    """The lab's inventory text with its own `rke:` section (RKE's files as `lab up` left them)
    replaced by one naming cluster_yml (a second `rke:` key would be refused as a duplicate)."""
    data = yaml.safe_load(text)
    data["rke"] = {"cluster_yml": cluster_yml, "deploy_host": "node2"}
    return yaml.safe_dump(data, sort_keys=False)


def kube(lab: Lab, inv: Path, *args: str) -> tuple[int, dict, float]:
    r, wall = cli(lab, "kubernetes", *args, "-i", str(inv), "--json", timeout=60)
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), wall


def test_masters_lost_surviving_plane(running_lab: Lab) -> None:
    lab = running_lab
    inv_path, yml = rke_inventory(lab)
    rc, out, wall = kube(lab, inv_path, "plan")
    assert rc == 0 and out["decision"] == "surviving-plane" and out["nodes"] == [], out
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    rc, out, wall = kube(lab, inv_path, "plan")
    assert rc == 1 and out["decision"] == "refused", out
    assert out["refusal"]["message"] == msg.REQUEST_TIMED_OUT and "etcd-dr recover" in out["fix"]
    print(f"plan, quorum lost: {wall:.2f} s")

    r, _ = cli(lab, "recover", "--yes", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    rc, out, wall = kube(lab, inv_path, "plan")
    assert rc == 0 and out["decision"] == "surviving-plane", out
    assert out["recovered"] == ["master3"]
    assert [(n["name"], n["after"]) for n in out["nodes"]] == [("master1", None), ("master2", None)]
    print(f"plan after the recovery: {wall:.2f} s")

    rc, out, wall = kube(lab, inv_path, "cluster-yml")
    assert rc == 0, out
    new = read_cluster_yml(Path(out["cluster_yml"]))
    assert [n.hostname_override for n in new.etcd_nodes] == ["master3"]
    assert [n.hostname_override for n in new.nodes] == ["master3", "node1", "node2"]
    assert Path(out["state_file"]) == yml.with_name("cluster.recovered.rkestate")
    print(f"cluster-yml: {wall:.2f} s")


def test_all_voters_lost_external_etcd_the_recovered_etcd_accepts(lab: Lab) -> None:
    lifecycle.up(dataclasses.replace(lab.cfg, learner_etcd=EtcdSeries("3.5")), say=print)
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        c.put("/registry/namespaces/default", "before the fault")
    inv_path, _ = rke_inventory(lab)
    for h in ("master1", "master2", "master3"):
        assert lab.cli("power", h, "off").returncode == 0
    r, _ = cli(lab, "recover", "--yes", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr

    rc, out, wall = kube(lab, inv_path, "plan")
    assert rc == 0 and out["decision"] == "external-etcd", out
    node1 = load_inventory(inv_path).host("node1")
    assert out["external"]["urls"] == [f"https://{node1.address}:2379"]
    assert out["as_is"]["constant"] == "NO_ETCD_PLANE_UNREACHABLE"
    print(f"plan, all voters lost: {wall:.2f} s")

    rc, out, _ = kube(lab, inv_path, "cluster-yml")
    assert rc == 0, out
    assert "PRIVATE KEY" not in out["diff"]
    new = read_cluster_yml(Path(out["cluster_yml"]))
    assert not new.etcd_nodes and new.etcd.path == "/registry"
    assert [n.hostname_override for n in new.controlplane_nodes][-1] == "node1"  # the masters are dead
    assert read_state_file(Path(out["state_file"])).current.rke_config.etcd_nodes == ()  # type: ignore[union-attr]
    # what kube-apiserver will be given: the recovered etcd accepts it and serves the data
    e = new.etcd
    with EtcdClient(
        list(e.external_urls),
        ca_cert=InMemoryFile(e.ca_cert, "ca_cert"),
        cert=InMemoryFile(e.cert, "cert"),
        key=InMemoryFile(e.key, "key"),
    ) as c:
        kv = c.range("/registry/namespaces/default").kvs
        assert [x.value for x in kv] == [b"before the fault"]

    # the lab's own client key is P-256: RKE would stop on it; the planner says so first
    plain = lab.cfg.dir / "kplan-ec-inventory.yaml"
    plain.write_text(with_rke(lab.cfg.inventory_path.read_text(), "kplan/cluster.yml"))
    rc, out, _ = kube(lab, plain, "plan")
    assert rc == 1 and "clientKey.(*rsa.PrivateKey)" in out["reason"], out
