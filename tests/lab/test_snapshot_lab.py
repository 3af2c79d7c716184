"""`etcd-dr snapshot --json` on the real lab: >= 100 MB of data, from a voter in sync, verified by a
trial restore, cataloged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.snapshots import Catalog
from etcd_dr.state import client_for

from .conftest import Lab

pytestmark = pytest.mark.lab


def test_snapshot_of_100mb_lab_cluster(running_lab: Lab) -> None:
    inv = load_inventory(running_lab.state.config.inventory_path)
    value = os.urandom(1 << 20)  # random: the db grows ~1 MB a put; under etcd's 1.5 MiB request cap
    t0 = time.monotonic()
    with client_for(inv) as c:
        for i in range(110):
            c.put(f"/bench/lab/{i:04d}", value, timeout=30.0)
    fill_s = time.monotonic() - t0
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "snapshot", "--json", "--progress", "never"],
        env=running_lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    snap_s = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads(r.stdout)
    print(f"fill {fill_s:.1f} s, etcd-dr snapshot {snap_s:.1f} s, {rec['size'] / 1e6:.0f} MB")
    assert rec["size"] >= 100_000_000
    assert rec["verdict"] == "verified" and rec["verified"], rec["reason"]
    assert rec["member"] in {"master1", "master2", "master3"}  # a voter, not node1 (the learner host)
    assert "in sync with leader" in rec["source_reason"]
    assert f"revision {rec['revision']}" in rec["reason"]
    newest = Catalog(inv.snapshot_settings().dir).newest(inv.cluster)
    assert newest is not None and newest.id == rec["id"] and newest.sha256 == rec["sha256"]
