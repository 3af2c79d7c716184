"""A one-member TLS etcd on loopback (3.4 and 3.5) and an inventory pointing at it, with snapshot
settings in a temporary directory. One member: the inventory gives every host one client port, and
a LocalCluster's members share 127.0.0.1 on different ports (source choice among voters is unit-tested
on ClusterState fixtures and exercised on the lab)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from etcd_dr.etcd.localcluster import LocalCluster
from etcd_dr.etcdbin import ensure_binaries
from etcd_dr.inventory import Inventory, load_inventory
from tests.etcd.conftest import pki  # noqa: F401 - the shared session fixture


@pytest.fixture(scope="module", params=["3.4", "3.5"], ids=lambda v: f"etcd{v}")
def one_member(request, tmp_path_factory, pki) -> Iterator[LocalCluster]:  # noqa: F811
    bins = ensure_binaries(request.param)
    ca, member, client = pki
    root = tmp_path_factory.mktemp(f"snap-etcd{request.param}")
    cluster = LocalCluster.launch(bins, root, ca, member, client, size=1)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Env:
    cluster: LocalCluster
    dir: Path
    inventory_path: Path

    @property
    def inv(self) -> Inventory:
        return load_inventory(self.inventory_path)

    @property
    def snapdir(self) -> Path:
        return self.dir / "snapshots"


def write_inventory(cluster: LocalCluster, d: Path, offsite: dict | None = None, **snap: object) -> Path:
    (d / "keys").mkdir(parents=True, exist_ok=True)
    (d / "keys/id").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (d / "keys/known_hosts").write_text("")
    (d / "ca.pem").write_bytes(cluster.ca.cert_pem)
    (d / "client.pem").write_bytes(cluster.client_pair.cert_pem)
    (d / "client-key.pem").write_bytes(cluster.client_pair.key_pem)
    node = cluster.nodes[0]
    snapshots: dict = {"dir": "snapshots", **snap}
    if offsite:
        snapshots["offsite"] = offsite
    inv = {
        "cluster": "loop",
        "audit_log": "audit.jsonl",
        "ssh": {"key_file": "keys/id", "known_hosts": "keys/known_hosts"},
        "etcd": {
            "runtime": "process",
            "client_port": node.client_port,
            "peer_port": node.peer_port,
            "client": {"ca_cert": "ca.pem", "cert": "client.pem", "key": "client-key.pem"},
            "dial_timeout": 1,
            "request_timeout": 5,
        },
        "snapshots": snapshots,
        "hosts": [{"name": "m1", "address": "127.0.0.1", "roles": ["etcd"]}],
    }
    path = d / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


@pytest.fixture
def env(one_member: LocalCluster, tmp_path: Path) -> Env:
    one_member.ensure_running()
    return Env(one_member, tmp_path, write_inventory(one_member, tmp_path))
