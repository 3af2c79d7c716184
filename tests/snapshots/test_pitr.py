"""Point-in-time recovery on a real etcd (3.4 and 3.5): `etcd-dr backup stream` logs every revision
after a verified snapshot, `etcd-dr snapshot roll-forward` replays the log into the restored
snapshot up to a revision in the middle of a segment (or a time, or the end), and the result holds
exactly the keys a real etcd Range returned at that revision before the fault."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etcd_dr.deltalog import DeltaLog
from etcd_dr.deltalog.replay import choose_target
from etcd_dr.deltalog.service import log_dir_for, roll_forward
from etcd_dr.errors import InputError
from etcd_dr.etcd import EtcdClient, KeyValue, TxnDelete, TxnPut
from etcd_dr.etcd.localcluster import wait_for
from etcd_dr.snapshots import Catalog, Verdict, service
from etcd_dr.snapshots.etcdtool import binaries_for
from etcd_dr.snapshots.trial import served_db
from etcd_dr.state import observe
from tests.snapshots.conftest import Env

pytestmark = pytest.mark.etcd

Keys = list[tuple[bytes, bytes, int, int, int, int]]


def keys(kvs: tuple[KeyValue, ...]) -> Keys:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in kvs]


def workload(c: EtcdClient, n: int, lease: int, tag: str) -> int:
    """Puts, overwrites, multi-key txns with deletes, leased keys: the shapes Kubernetes writes."""
    rev = 0
    for i in range(n):
        k = f"/pitr/{i % 17}".encode()
        if i % 5 == 0:
            rev = c.txn(
                [TxnPut(k, f"{tag}{i}".encode()), TxnPut(b"/pitr/leased/" + k[-2:], b"l", lease=lease),
                 TxnDelete(f"/pitr/{(i + 3) % 17}".encode())]
            )  # fmt: skip
        else:
            rev = c.put(k, f"{tag}{i}".encode()).revision
    return rev


def test_roll_forward_to_a_revision_mid_segment_gives_exactly_the_keys_of_that_revision(env: Env) -> None:
    inv = env.inv
    c = env.cluster.client()
    try:
        old_lease = c.lease_grant(3600)
        workload(c, 20, old_lease, "before")
        snap, _ = service.snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
        assert snap.verdict is Verdict.VERIFIED, snap.reason
        stream = subprocess.Popen(
            [sys.executable, "-m", "etcd_dr.cli", "backup", "stream", "-i", str(env.inventory_path),
             "--segment-max-bytes", "3000", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            log_dir = log_dir_for(inv)
            wait_for("the watcher", lambda: (log_dir / "status.json").exists(), 20)
            new_lease = c.lease_grant(3600)  # granted after the snapshot: the replay grants it again
            workload(c, 30, old_lease, "a")
            b_end = workload(c, 7, new_lease, "b")
            wait_for("the log at b", lambda: (DeltaLog(log_dir).last_revision() or 0) >= b_end, 20)
            time.sleep(0.05)  # what comes next is received later
            end = workload(c, 30, new_lease, "c")
            at_end = keys(c.range(b"\0", b"\0").kvs)
            wait_for("the log at the end", lambda: (DeltaLog(log_dir).last_revision() or 0) >= end, 20)
        finally:
            stream.send_signal(signal.SIGTERM)
            out, err = stream.communicate(timeout=20)
        assert stream.returncode == 0, err
        result = json.loads(out)
        assert result["state"] == "stopped" and result["start_revision"] == snap.revision + 1
        log = DeltaLog(log_dir)
        assert log.open_segment() is None and len(log.segments()) >= 3  # sealed on size, and on stop
        second = log.segments()[1]
        mid = (second.first + second.last) // 2  # in the middle of a segment
        assert second.first < mid < second.last
        at_mid = keys(c.range(b"\0", b"\0", revision=mid).kvs)  # a real Range at mid, before the fault
    finally:
        c.close()

    listed = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "snapshot", "list", "-i", str(env.inventory_path), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert {r["id"]: r["rolls_forward_to"] for r in json.loads(listed.stdout)} == {snap.id: end}
    text = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "snapshot", "list", "-i", str(env.inventory_path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "ROLLS FORWARD TO" in text and f"| {end} " in text
    assert f"revisions {snap.revision + 1}..{end}; watcher stopped" in text

    # a revision in the middle of a segment
    t0 = time.monotonic()
    res = roll_forward(inv, to_revision=mid)
    took = time.monotonic() - t0
    assert res.source == snap.id and res.target.revision == mid and res.record.revision == mid
    assert res.replayed.records == mid - snap.revision  # one transaction per original revision
    assert res.record.verified and Catalog(env.snapdir).newest("loop").id == res.record.id
    with served_db(binaries_for(snap.version), res.path, env.dir) as (rc, _, _):
        got = rc.range(b"\0", b"\0")
    assert got.header.revision == mid  # the revision did not go back, nor forward
    assert keys(got.kvs) == at_mid  # exactly the keys, values, revisions, versions, leases of `mid`

    # by time: the last revision received by then
    b_at = next(iter(log.records(b_end, b_end))).at
    assert choose_target(log, snap.revision, to_time=b_at).revision == b_end
    with pytest.raises(InputError, match=f"revision {mid} was rolled forward before"):
        roll_forward(inv, snapshot_id=snap.id, to_revision=mid)  # never written over

    # the last revision on record, through the CLI
    cli = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "snapshot", "roll-forward", snap.id,
         "-i", str(env.inventory_path), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    full = json.loads(cli.stdout)
    assert full["revision"] == end and full["snapshot"]["verdict"] == "verified"
    assert (
        full["replayed"]["leases_granted"] == 1
    )  # the lease granted after the snapshot (the old one is in it)
    with served_db(binaries_for(snap.version), Path(full["path"]), env.dir) as (rc, _, _):
        got = rc.range(b"\0", b"\0")
    assert got.header.revision == end and keys(got.kvs) == at_end
    print(f"\nroll-forward to {mid}: {res.replayed.events_per_s:.0f} events/s replayed, {took:.2f} s in all")

    with pytest.raises(
        InputError, match=rf"--to-revision {end + 5}: .* give a revision in {snap.revision}\.\.{end}"
    ):
        roll_forward(inv, snapshot_id=snap.id, to_revision=end + 5)


def test_a_corrupted_segment_stops_the_roll_forward_naming_it(env: Env) -> None:
    inv = env.inv
    with env.cluster.client() as c:
        c.put("/pitr/x", "1")
        snap, _ = service.snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
        from etcd_dr.deltalog.service import stream_cluster

        end = 0
        for i in range(5):
            end = c.put(f"/pitr/x{i}", "2").revision
        res = stream_cluster(inv, until_revision=end, max_seconds=20)
    assert res.ok and res.last_revision == end
    seg = DeltaLog(log_dir_for(inv)).segments()[-1]
    data = bytearray(seg.path.read_bytes())
    data[data.index(b'"v":"') + 6] ^= 1
    seg.path.write_bytes(bytes(data))
    before = len(Catalog(env.snapdir).records())
    with pytest.raises(Exception, match=rf"{seg.name}: checksum mismatch"):
        roll_forward(inv, snapshot_id=snap.id)
    assert len(Catalog(env.snapdir).records()) == before  # nothing cataloged
    assert not list(env.snapdir.glob(".rollforward-*"))  # the scratch dir is gone
    os.sync()


def test_the_3_5_restore_flags_the_plan_passes_move_the_revision_on_and_make_watchers_relist(
    env: Env, tmp_path: Path
) -> None:
    """What `--bump-revision=1000000000 --mark-compacted` (the all-lost plan's etcdutl restore)
    does on a real etcd 3.5: the revision moves on, an old watcher is told to relist."""
    from etcd_dr.certs import issue_cert, new_ca
    from etcd_dr.etcd import RevisionCompacted
    from etcd_dr.etcd.localcluster import LocalCluster
    from etcd_dr.recovery.plan import BUMP_REVISION

    if env.cluster.bins.etcdutl is None:
        pytest.skip("etcd 3.4 has no etcdutl: its restore keeps the snapshot's revision")
    with env.cluster.client() as c:
        rev = c.put("/bump/k", "v").revision
        snap = c.snapshot(env.cluster.endpoints[0], tmp_path / "s.db")
    ca = new_ca("bump")
    lc = LocalCluster(env.cluster.bins, tmp_path / "r", ca, issue_cert(ca, "m", ips=("127.0.0.1",)),
                      issue_cert(ca, "c", server=False))  # fmt: skip
    lc._write_certs()
    node = lc.new_node("r")
    argv = [
        str(env.cluster.bins.etcdutl), "snapshot", "restore", str(snap.path),
        f"--bump-revision={BUMP_REVISION}", "--mark-compacted", f"--name={node.name}",
        f"--initial-cluster={node.name}={node.peer_url}", f"--initial-advertise-peer-urls={node.peer_url}",
        f"--data-dir={node.data_dir}",
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    lc.nodes = [node]
    lc.start(node, f"{node.name}={node.peer_url}", "new")
    try:
        lc.wait_healthy()
        with lc.client() as rc:
            now = rc.range("/bump/k")
            assert now.kvs[0].value == b"v" and now.header.revision == rev + BUMP_REVISION
            with pytest.raises(RevisionCompacted), rc.watch(node.client_url, rev) as w:
                w.get(5.0)  # a watcher from before the restore: told to relist
    finally:
        lc.stop_all()
