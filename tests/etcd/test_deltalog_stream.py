"""The delta log's watcher against real 3-member TLS clusters (3.4, 3.5): killed mid-segment it
resumes with no gap and no duplicate, and a compaction that overtakes it is reported (then healed by
a newer snapshot). Members that die under it: test_deltalog_quorum_loss.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etcd_dr.deltalog import DeltaLog
from etcd_dr.deltalog.log import GAP_FILE
from etcd_dr.deltalog.stream import Streamer, StreamSettings, StreamState, read_gap, read_status
from etcd_dr.etcd import EtcdClient, EtcdTimeout, EtcdUnavailable, TxnDelete, TxnPut
from etcd_dr.etcd.localcluster import LocalCluster, wait_for

pytestmark = pytest.mark.etcd

FAST = StreamSettings(
    segment_max_bytes=4096,
    segment_max_age_s=30.0,
    progress_interval_s=0.2,
    silence_timeout_s=2.0,
    retry_interval_s=0.2,
    status_interval_s=0.2,
)


class Writer:
    """Writes puts (and every 7th time a txn of a put and a delete) and remembers each revision's
    writes as etcd acknowledged them."""

    def __init__(self, c: EtcdClient, prefix: str) -> None:
        self.c, self.prefix = c, prefix
        self.acked: dict[int, list[tuple[str, bytes, bytes]]] = {}
        self.i = 0

    def write(self, n: int) -> int:
        rev = 0
        for _ in range(n):
            self.i += 1
            k = f"{self.prefix}/{self.i % 50}".encode()
            v = f"v{self.i}".encode()
            deadline = time.monotonic() + 30
            while True:
                try:
                    if self.i % 7 == 0:
                        gone = f"{self.prefix}/{(self.i + 1) % 50}".encode()
                        rev = self.c.txn([TxnPut(k, v), TxnDelete(gone)], timeout=5.0)
                        self.acked[rev] = [("put", k, v), ("delete?", gone, b"")]
                    else:
                        rev = self.c.put(k, v, timeout=5.0).revision
                        self.acked[rev] = [("put", k, v)]
                    break
                except (EtcdTimeout, EtcdUnavailable):
                    # a member just restarted may not answer yet; an unacknowledged write that was
                    # applied anyway is in the log but not in `acked`, which check_log allows
                    if time.monotonic() > deadline:
                        raise
        return rev


def check_log(log_dir: Path, start: int, end: int, w: Writer) -> None:
    """Every revision start..end exactly once, in order, and each acknowledged write in its revision."""
    recs = list(DeltaLog(log_dir).records(start, end))
    assert [r.revision for r in recs] == list(range(start, end + 1))
    by_rev = {r.revision: r for r in recs}
    for rev, writes in w.acked.items():
        if not start <= rev <= end:
            continue
        got = [(e.type, e.key, e.value) for e in by_rev[rev].events]
        for kind, k, v in writes:
            if kind == "put":
                assert ("put", k, v) in got, f"revision {rev}: {k!r}={v!r} missing from {got}"
        assert len(got) <= len(writes)


def streamer(cluster: LocalCluster, c: EtcdClient, log_dir: Path, snap: list[int], **kw) -> Streamer:
    return Streamer(
        c, cluster.endpoints, log_dir, "test", snapshot_revision=lambda: snap[0], settings=FAST, **kw
    )


_CHILD = """
import sys, threading
from pathlib import Path
from etcd_dr.deltalog.stream import Streamer, StreamSettings
from etcd_dr.etcd import EtcdClient
d, snap, *eps = sys.argv[1:]
p = Path(d)
c = EtcdClient(eps, ca_cert=p / "ca.pem", cert=p / "c.pem", key=p / "c-key.pem")
s = StreamSettings(segment_max_bytes=1 << 30, segment_max_age_s=3600, progress_interval_s=0.2,
                   status_interval_s=0.1)
Streamer(c, eps, p / "log", "test", snapshot_revision=lambda: int(snap), settings=s).run()
"""


def test_a_watcher_killed_mid_segment_resumes_with_no_gap_and_no_duplicate(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    for name, data in (
        ("ca.pem", cluster.ca.cert_pem),
        ("c.pem", cluster.client_pair.cert_pem),
        ("c-key.pem", cluster.client_pair.key_pem),
    ):
        (tmp_path / name).write_bytes(data)
    log_dir = tmp_path / "log"
    with cluster.client() as c:
        w = Writer(c, "/kill")
        snap = w.write(3)  # the "snapshot" the log starts after
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), str(snap), *cluster.endpoints],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            w.write(40)
            wait_for("the child's log", lambda: (DeltaLog(log_dir).last_revision() or 0) > snap + 20, 15)
            w.write(20)
        finally:
            os.kill(child.pid, signal.SIGKILL)  # mid-segment: nothing sealed, a .part open
            child.wait(10)
        part = DeltaLog(log_dir).open_segment()
        assert part is not None and DeltaLog(log_dir).segments() == []
        killed_at = DeltaLog(log_dir).last_revision()
        end = w.write(30)  # written while no watcher runs
        res = streamer(cluster, c, log_dir, [snap]).run(until_revision=end, max_seconds=30)
    assert res.state is StreamState.STOPPED, res.reason
    assert res.start_revision == killed_at + 1  # resumed from the last revision on disk
    assert DeltaLog(log_dir).open_segment() is None  # sealed on the clean stop
    check_log(log_dir, snap + 1, end, w)
    st = read_status(log_dir)
    assert st is not None and st.last_revision == end and st.state is StreamState.STOPPED


def test_a_compaction_that_overtakes_it_is_reported_then_a_newer_snapshot_heals_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    log_dir = tmp_path / "log"
    with cluster.client() as c:
        w = Writer(c, "/cmp")
        snap = [w.write(2)]
        snap0 = snap[0]
        first = w.write(10)
        res = streamer(cluster, c, log_dir, snap).run(until_revision=first, max_seconds=20)
        assert res.state is StreamState.STOPPED
        w.write(10)
        compacted = w.write(1)
        c.compact(compacted)  # etcd drops what the log has not read yet
        res = streamer(cluster, c, log_dir, snap).run(max_seconds=20)
        assert res.state is StreamState.GAP and not res.ok
        assert f"compacted past revision {first + 1} (up to {compacted})" in res.reason
        assert "a new full snapshot is needed" in res.reason
        gap = read_gap(log_dir)
        assert gap is not None and gap["after_revision"] == first and gap["compact_revision"] == compacted
        st = read_status(log_dir)
        assert st is not None and st.state is StreamState.GAP
        # a new full snapshot at (or after) the compaction: the log goes on after it
        snap[0] = w.write(1)
        end = w.write(5)
        res = streamer(cluster, c, log_dir, snap).run(until_revision=end, max_seconds=20)
    assert res.state is StreamState.STOPPED, res.reason
    assert DeltaLog(log_dir).spans() == [(snap0 + 1, first), (snap[0] + 1, end)]  # two runs, no mix
    assert not (log_dir / GAP_FILE).exists() and list(log_dir.glob("gap.healed-*.json"))
    check_log(log_dir, snap[0] + 1, end, w)
    assert json.loads((log_dir / "status.json").read_text())["state"] == "stopped"


def test_another_cluster_that_is_not_restored_from_the_logs_end_is_a_gap(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A member answering for another cluster id goes on only if it holds the log's last revision
    as the log does (a restore from the log's end, tested on the lab); another history is a gap."""
    log_dir = tmp_path / "log"
    with cluster.client() as c:
        w = Writer(c, "/hist")
        snap = [w.write(1)]
        end = w.write(5)
        assert streamer(cluster, c, log_dir, snap).run(until_revision=end, max_seconds=20).ok
    other = LocalCluster.launch(cluster.bins, tmp_path / "other", cluster.ca, cluster.member_pair,
                                cluster.client_pair, size=1)  # fmt: skip
    try:
        with other.client() as oc:
            for i in range(end + 3):  # past the log's end, with other writes
                oc.put(f"/hist/{i % 50}", f"elsewhere{i}")
            s = Streamer(
                oc, other.endpoints, log_dir, "test", snapshot_revision=lambda: snap[0], settings=FAST
            )
            res = s.run(max_seconds=20)
    finally:
        other.stop_all()
    assert res.state is StreamState.GAP
    assert "answers for cluster" in res.reason and f"at revision {end} otherwise than the log" in res.reason
    assert read_gap(log_dir)["after_revision"] == end


@pytest.mark.parametrize("pull_interval_s", [0.0, 0.2], ids=["one-watch-kept-open", "a-watch-per-cycle"])
def test_it_watches_a_follower_and_leaves_the_leader_for_the_writes(
    cluster: LocalCluster, tmp_path: Path, pull_interval_s: float
) -> None:
    """Listed first, the leader is still asked last: a watch costs the member that serves it."""
    with cluster.client() as c:
        leader = next(ep for ep in cluster.endpoints if c.status(ep).is_leader)
        eps = [leader, *(ep for ep in cluster.endpoints if ep != leader)]
        w = Writer(c, "/fol")
        snap = w.write(1)
        end = w.write(10)
        settings = dataclasses.replace(FAST, pull_interval_s=pull_interval_s)
        s = Streamer(c, eps, tmp_path / "log", "test", snapshot_revision=lambda: snap, settings=settings)
        assert s.run(until_revision=end, max_seconds=20).ok
    st = read_status(tmp_path / "log")
    assert st is not None and st.endpoint == eps[1] != leader  # the first follower listed
    check_log(tmp_path / "log", snap + 1, end, w)


def test_a_watch_that_starts_behind_is_caught_up_in_batched_responses(cluster: LocalCluster) -> None:
    """What the watcher's cycles rest on: etcd sends the revisions a new watch starts behind in a
    few responses (its store read every 100 ms, up to 1000 revisions each), not one per revision
    as it does to a watch that is caught up."""
    with cluster.client() as c:
        w = Writer(c, "/batch")
        first = w.write(1) + 1
        end = w.write(200)
        ep = next(ep for ep in cluster.endpoints if not c.status(ep).is_leader)
        got: list[int] = []
        responses = 0
        with c.watch(ep, first) as watch:
            while not got or got[-1] < end:
                b = watch.get(timeout=5.0)
                assert b is not None, f"nothing after revision {got[-1] if got else first - 1}"
                if b.events:
                    responses += 1
                    got.extend(dict.fromkeys(e.kv.mod_revision for e in b.events))
    assert got == list(range(first, end + 1))
    assert responses <= 3, f"{end - first + 1} revisions came in {responses} responses"
