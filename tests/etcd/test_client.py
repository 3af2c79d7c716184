"""The etcd client against real 3-member TLS clusters (3.4 and 3.5): no mocks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcd_dr.etcd import (
    EtcdClient,
    EtcdTimeout,
    EtcdUnavailable,
    LearnerNotInSync,
    Member,
    MemberNotFound,
    NotSupportedOnLearner,
    TooManyLearners,
    UnhealthyCluster,
)
from etcd_dr.etcd.localcluster import LocalCluster, Node, wait_for

pytestmark = pytest.mark.etcd


def test_member_list(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        members = c.member_list()
        local = c.member_list(linearizable=False)
        st = c.status(cluster.endpoints[0])
    assert sorted(m.name for m in members) == ["m1", "m2", "m3"]
    assert {m.client_urls for m in members} == {(ep,) for ep in cluster.endpoints}
    assert not any(m.is_learner for m in members)
    assert {m.id for m in local} == {m.id for m in members}
    assert st.version == cluster.bins.version
    assert st.member_id in {m.id for m in members}
    assert st.leader in {m.id for m in members}
    assert st.raft_applied_index > 0 and st.errors == ()


def test_put_range_alarm_hash(cluster: LocalCluster, tmp_path: Path) -> None:
    # TLS material from files, as an inventory gives it.
    for name, data in (
        ("ca.pem", cluster.ca.cert_pem),
        ("c.pem", cluster.client_pair.cert_pem),
        ("c-key.pem", cluster.client_pair.key_pem),
    ):
        (tmp_path / name).write_bytes(data)
    client = EtcdClient(
        cluster.endpoints, ca_cert=tmp_path / "ca.pem", cert=tmp_path / "c.pem", key=tmp_path / "c-key.pem"
    )
    assert "PRIVATE" not in repr(client) and "key" not in repr(client)
    with client as c:
        for i in range(5):
            c.put(f"/t/prh/{i}", f"v{i}")
        r = c.range("/t/prh/", "/t/prh0")
        assert [kv.value for kv in r.kvs] == [f"v{i}".encode() for i in range(5)]
        assert c.range("/t/prh/", "/t/prh0", count_only=True).count == 5
        assert c.range("/t/prh/", "/t/prh0", keys_only=True, limit=2).kvs[1].value == b""
        assert c.alarm_list() == ()
        rev = r.header.revision
        wait_for(
            "members applied rev", lambda: all(c.status(ep).revision >= rev for ep in cluster.endpoints), 5
        )
        hashes = {c.hash_kv(ep, rev).hash for ep in cluster.endpoints}
    assert len(hashes) == 1


@dataclass
class Learner:
    node: Node
    member: Member


def _add_learner(cluster: LocalCluster, c: EtcdClient, name: str) -> Learner:
    node = cluster.new_node(name)
    # Strict reconfig check refuses changes until peers have been connected for 5 s: retry.
    deadline = time.monotonic() + 15
    while True:
        try:
            added = c.member_add([node.peer_url], is_learner=True)
            break
        except UnhealthyCluster:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert added.member.is_learner and added.member.peer_urls == (node.peer_url,)
    others = [m for m in added.members if m.id != added.member.id]
    initial = ",".join([f"{m.name}={m.peer_urls[0]}" for m in others] + [f"{name}={node.peer_url}"])
    cluster.start(node, initial, "existing")
    cluster.extra_nodes.append(node)
    return Learner(node, added.member)


@pytest.fixture
def learner(cluster: LocalCluster) -> Iterator[Learner]:
    """A 4th etcd, added as a learner and started with --initial-cluster-state existing."""
    with cluster.client() as c:
        ln = _add_learner(cluster, c, "l4")
        try:
            yield ln
        finally:
            with contextlib.suppress(MemberNotFound):
                c.member_remove(ln.member.id)
            cluster.kill(ln.node)  # by the PID we started
            shutil.rmtree(ln.node.data_dir, ignore_errors=True)


def test_learner_reads(cluster: LocalCluster, learner: Learner, tmp_path: Path) -> None:
    with cluster.client() as c:
        c.put("/t/learner/k", "v")
    with cluster.client([learner.node.client_url]) as lc:
        st = wait_for("learner answers status", lambda: lc.status(learner.node.client_url), 15)
        assert st.is_learner
        # Serializable reads are served by the learner's local store once it has caught up.
        kv = wait_for(
            "learner serves serializable read", lambda: lc.range("/t/learner/k", serializable=True).kvs, 10
        )
        assert kv[0].value == b"v"
        with pytest.raises(NotSupportedOnLearner) as ei:
            lc.range("/t/learner/k")
        assert "rpc not supported for learner" in str(ei.value)
        assert learner.node.client_url in str(ei.value)
        with pytest.raises(NotSupportedOnLearner):
            lc.member_list(linearizable=False)  # a learner serves only Status and serializable reads
        # Snapshot streams: refused by a 3.4 learner, served by a 3.5 one.
        if cluster.bins.major_minor == "3.4":
            with pytest.raises(NotSupportedOnLearner):
                lc.snapshot(learner.node.client_url, tmp_path / "learner.db")
            assert not (tmp_path / "learner.db.part").exists()
        else:
            assert lc.snapshot(learner.node.client_url, tmp_path / "learner.db").db_sha256_ok
    with cluster.client([learner.node.client_url, *cluster.endpoints]) as c:
        # Learner first in the list: cluster-wide reads move on to a voter.
        assert c.range("/t/learner/k").kvs[0].value == b"v"


def test_second_learner_refused(cluster: LocalCluster, learner: Learner) -> None:
    spare = cluster.new_node("l5")
    with cluster.client() as c, pytest.raises(TooManyLearners) as ei:
        c.member_add([spare.peer_url], is_learner=True)
    assert "too many learner members" in str(ei.value)


def test_learner_promote_and_remove(cluster: LocalCluster, learner: Learner) -> None:
    with cluster.client() as c:
        # Promote fails while the learner lags: retry within a deadline.
        deadline = time.monotonic() + 20
        not_in_sync = 0
        while True:
            try:
                c.member_promote(learner.member.id)
                break
            except LearnerNotInSync:
                not_in_sync += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        promoted = {m.id: m for m in c.member_list()}[learner.member.id]
        assert not promoted.is_learner
        assert promoted.name == "l4"
        wait_for("promoted member is a voter", lambda: not c.status(learner.node.client_url).is_learner, 10)
        left = c.member_remove(learner.member.id)
        assert learner.member.id not in {m.id for m in left}
        assert len(c.member_list()) == 3
        with pytest.raises(MemberNotFound):
            c.member_remove(learner.member.id)
    # A removed member shuts itself down.
    wait_for("removed member exits", lambda: not learner.node.running, 15)


def _snapshot_status(cluster: LocalCluster, path: Path) -> dict:
    tool = cluster.bins.etcdutl or cluster.bins.etcdctl
    p = subprocess.run(
        [str(tool), "snapshot", "status", "-w", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(p.stdout)


def test_snapshot_matches_etcdctl(cluster: LocalCluster, tmp_path: Path) -> None:
    ep = cluster.endpoints[1]
    with cluster.client() as c:
        for i in range(300):
            c.put(f"/t/snap/{i:04d}", "x" * 200)
        rev = c.range("/t/snap/0000").header.revision
        wait_for("member applied", lambda: c.status(ep).revision >= rev, 5)
        seen: list[int] = []
        ours = c.snapshot(ep, tmp_path / "ours.db", progress=seen.append)
        member_id = c.status(ep).member_id
    pki = cluster.root / "pki"
    (pki / "client.pem").write_bytes(cluster.client_pair.cert_pem)
    (pki / "client-key.pem").write_bytes(cluster.client_pair.key_pem)
    subprocess.run(
        [
            str(cluster.bins.etcdctl),
            f"--endpoints={ep}",
            f"--cacert={pki / 'ca.pem'}",
            f"--cert={pki / 'client.pem'}",
            f"--key={pki / 'client-key.pem'}",
            "snapshot",
            "save",
            str(tmp_path / "etcdctl.db"),
        ],
        capture_output=True,
        check=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    data = (tmp_path / "ours.db").read_bytes()
    assert ours.size == len(data) and ours.sha256 == hashlib.sha256(data).hexdigest()
    assert ours.db_sha256_ok
    assert seen and seen[-1] == ours.size and seen == sorted(seen)
    assert not (tmp_path / "ours.db.part").exists()
    assert ours.revision_exact == rev
    assert ours.member_id == member_id
    s_ours = _snapshot_status(cluster, tmp_path / "ours.db")
    s_ctl = _snapshot_status(cluster, tmp_path / "etcdctl.db")
    assert s_ours["revision"] == s_ctl["revision"] == rev
    assert s_ours["hash"] == s_ctl["hash"]
    assert s_ours["totalKey"] == s_ctl["totalKey"]


def test_failover_one_member_killed(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        leader = c.status(cluster.endpoints[0]).leader
        follower = next(n for n in cluster.nodes if c.status(n.client_url).member_id != leader)
    order = [follower.client_url] + [ep for ep in cluster.endpoints if ep != follower.client_url]
    with cluster.client(order) as c:
        c.put("/t/failover/warm", "1")  # connect to the follower first: it is the preferred endpoint
        cluster.kill(follower)
        t0 = time.monotonic()
        assert len(c.member_list()) == 3
        assert c.put("/t/failover/k", "v").endpoint != follower.client_url
        assert c.range("/t/failover/k").kvs[0].value == b"v"
        assert c.alarm_list() == ()
        assert time.monotonic() - t0 < c.request_timeout
        with pytest.raises(EtcdUnavailable) as ei:
            c.status(follower.client_url)
        assert follower.client_url in str(ei.value)


def test_leader_killed_read_waits_for_election(cluster: LocalCluster) -> None:
    """Right after the leader dies, survivors hang or answer `no leader` until they elect a new one:
    a linearizable read retries in rounds inside its deadline and succeeds. (A write sent in that
    window may instead raise EtcdTimeout `possibly due to previous leader failure`: outcome unknown.)"""
    with cluster.client(request_timeout=8.0, dial_timeout=0.5) as c:
        c.put("/t/election/k", "v")
        leader_id = c.status(cluster.endpoints[0]).leader
        leader = next(n for n in cluster.nodes if c.status(n.client_url).member_id == leader_id)
        cluster.kill(leader)
        t0 = time.monotonic()
        r = c.range("/t/election/k")
        took = time.monotonic() - t0
        assert r.kvs[0].value == b"v" and r.endpoint != leader.client_url
        assert c.status(r.endpoint).leader not in (0, leader_id)
        assert c.put("/t/election/k", "w").endpoint != leader.client_url
    assert took < 8.0


def test_failover_hung_member(cluster: LocalCluster) -> None:
    """A member that stops answering (SIGSTOP: connections stay open, like a host that lost power
    with its link up) costs a read its share of the deadline and a write one dial_timeout."""
    with cluster.client() as c:
        leader = c.status(cluster.endpoints[0]).leader
        follower = next(n for n in cluster.nodes if c.status(n.client_url).member_id != leader)
    order = [follower.client_url] + [ep for ep in cluster.endpoints if ep != follower.client_url]
    assert follower.proc is not None
    with cluster.client(order, dial_timeout=0.5, request_timeout=3.0) as c:
        c.range("/t/hung/warm")  # the follower answers and becomes the preferred endpoint
        os.kill(follower.proc.pid, signal.SIGSTOP)
        _wait_stopped(follower.proc.pid)  # else, on a loaded machine, it may still answer the probe
        try:
            t0 = time.monotonic()
            assert c.put("/t/hung/k", "v").endpoint != follower.client_url  # probe skips it
            t_put = time.monotonic() - t0
            assert c.range("/t/hung/k").kvs[0].value == b"v"
            t0 = time.monotonic()
            assert len(c.member_list()) == 3
            t_list = time.monotonic() - t0
            with pytest.raises(EtcdTimeout) as ei:
                c.status(follower.client_url, timeout=0.5)
            assert follower.client_url in str(ei.value)
        finally:
            os.kill(follower.proc.pid, signal.SIGCONT)
    assert t_put < 0.5 + 0.5, t_put
    assert t_list < 0.5, t_list  # the hung member was demoted to last by the failed put


def test_all_members_killed_unavailable(cluster: LocalCluster) -> None:
    # Failed rounds are retried (a member may be restarting) until the deadline, then EtcdUnavailable.
    with cluster.client(request_timeout=1.5, dial_timeout=0.5) as c:
        c.member_list()
        for n in cluster.nodes:
            cluster.kill(n)
        for call in (c.member_list, lambda: c.range("k"), lambda: c.put("k", "v")):
            t0 = time.monotonic()
            with pytest.raises(EtcdUnavailable) as ei:
                call()
            elapsed = time.monotonic() - t0
            assert elapsed <= c.request_timeout + 0.5, elapsed
            msg = str(ei.value)
            for ep in cluster.endpoints:
                assert ep in msg, msg
            assert "BEGIN" not in msg and "PRIVATE" not in msg
    # The next test's `cluster` fixture restarts the members from their data dirs.


def test_put_if_mod_revision_puts_only_while_the_key_is_unchanged(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        key = f"/txn-test/{time.monotonic_ns()}"
        ok, rev = c.put_if_mod_revision(key, "first", 0)  # 0: only while absent
        assert ok and c.range(key).kvs[0].mod_revision == rev
        assert c.put_if_mod_revision(key, "again", 0) == (False, rev)  # present now: not put
        ok, rev2 = c.put_if_mod_revision(key, "second", rev)
        assert ok and rev2 > rev and c.range(key).kvs[0].value == b"second"


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until every thread of pid is stopped (a SIGSTOP takes effect per thread, when it next runs)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tasks = Path(f"/proc/{pid}/task")
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
        if all(st == "T" for st in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} not stopped after {timeout} s")
