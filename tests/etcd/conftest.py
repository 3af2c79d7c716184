"""Fixtures: a real 3-member TLS etcd cluster on 127.0.0.1, per etcd version (3.4, 3.5).

Built by etcd_dr.etcd.localcluster; ports 23000-23999; data dirs under pytest's tmp dir, removed after.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from etcd_dr.certs import CertKeyPair, issue_cert, new_ca
from etcd_dr.etcd.localcluster import LocalCluster
from etcd_dr.etcdbin import ensure_binaries


@pytest.fixture(scope="session")
def pki() -> tuple[CertKeyPair, CertKeyPair, CertKeyPair]:
    ca = new_ca("kube-ca")
    member = issue_cert(ca, "etcd-member", ips=("127.0.0.1",), dns=("localhost",))
    client = issue_cert(ca, "etcd-dr-client", server=False, client=True)
    return ca, member, client


@pytest.fixture(scope="module", params=["3.4", "3.5"], ids=lambda v: f"etcd{v}")
def etcd_cluster(request, tmp_path_factory, pki) -> Iterator[LocalCluster]:
    bins = ensure_binaries(request.param)
    ca, member, client = pki
    root = tmp_path_factory.mktemp(f"etcd{request.param}")
    cluster = LocalCluster.launch(bins, root, ca, member, client, size=3)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(etcd_cluster: LocalCluster) -> LocalCluster:
    """The module's cluster, with every member running and healthy before the test."""
    etcd_cluster.ensure_running()
    return etcd_cluster
