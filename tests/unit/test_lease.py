"""The cluster lease (etcd_dr.recovery.lease): its script run for real by sh and flock(1) on this machine
through the LocalExecutor, each "host" a directory of its own."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import pytest

from etcd_dr.errors import TransportError
from etcd_dr.executor import LocalExecutor
from etcd_dr.recovery.lease import ClusterLease, lease_path, release, take


def test_take_hold_release(tmp_path: Path) -> None:
    ex, base = LocalExecutor("m3"), str(tmp_path)
    assert take(ex, "c1", "inc-a", "alice@box pid 1", 600, base) is None
    held = take(ex, "c1", "inc-b", "bob@other pid 2", 600, base)
    assert held is not None and held.holder == "inc-a" and held.owner == "alice@box pid 1"
    assert 595 <= held.expires_in_s <= 600
    assert (
        held.sentence
        == f"m3 is leased to another recovery (alice@box pid 1) for another {held.expires_in_s} s"
    )
    # the same holder (the next run from the same place, after a crash) takes it again at once
    assert take(ex, "c1", "inc-a", "alice@box pid 9", 600, base) is None
    assert not release(ex, "c1", "inc-b", base)  # not bob's to give back
    assert Path(lease_path("c1", base)).exists()
    assert release(ex, "c1", "inc-a", base)
    assert take(ex, "c1", "inc-b", "bob", 600, base) is None
    assert take(ex, "c2", "inc-c", "carol", 600, base) is None  # another cluster, another lease


def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    ex, base = LocalExecutor("m3"), str(tmp_path)
    assert take(ex, "c1", "crashed", "alice", -5, base) is None  # expired 5 s ago (the host's clock)
    assert take(ex, "c1", "inc-b", "bob", 600, base) is None
    held = take(ex, "c1", "crashed", "alice", 600, base)
    assert held is not None and held.holder == "inc-b"


def test_one_of_many_racing_takers_wins(tmp_path: Path) -> None:
    base = str(tmp_path)
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        got = list(
            pool.map(lambda i: take(LocalExecutor("m3"), "c1", f"inc-{i}", f"op{i}", 600, base), range(8))
        )
    winners = [i for i, h in enumerate(got) if h is None]
    assert len(winners) == 1
    assert {h.holder for h in got if h is not None} == {f"inc-{winners[0]}"}


class _Host(LocalExecutor):
    """A host of its own: the lease file lives under a directory named after it."""

    def __init__(self, name: str, root: Path, down: bool = False) -> None:
        super().__init__(name)
        self.root, self.down = root, down

    def run(self, argv, **kw):
        if self.down:
            raise TransportError(self.host, "timed out connecting")
        argv = list(argv)
        argv[5] = argv[5].replace("/var/lib/etcd-dr", str(self.root / self.host))
        return super().run(argv, **kw)


def test_the_cluster_lease_is_all_or_nothing(tmp_path: Path) -> None:
    hosts = {h: _Host(h, tmp_path) for h in ("master1", "master3", "node1")}
    a = ClusterLease("c1", "inc-a", ["master3", "node1"], hosts.__getitem__, required=["master3"], owner="a")
    assert a.acquire() is None and a.held == ["master3", "node1"]
    # b picked another target (the learner) but meets a's lease on the first host they share
    b = ClusterLease("c1", "inc-b", ["master1", "node1"], hosts.__getitem__, required=["node1"], owner="b")
    held = b.acquire()
    assert held is not None and held.host == "node1" and held.holder == "inc-a" and held.owner == "a"
    assert b.held == [] and not (tmp_path / "master1" / "recover-c1.lease").exists()  # given back
    a.release()
    assert b.acquire() is None and b.held == ["master1", "node1"]


def test_an_unreachable_host_is_skipped_unless_required(tmp_path: Path) -> None:
    hosts = {"master1": _Host("master1", tmp_path, down=True), "master3": _Host("master3", tmp_path)}
    lease = ClusterLease("c1", "ctl", ["master1", "master3"], hosts.__getitem__, required=["master3"])
    assert lease.acquire() is None and lease.held == ["master3"] and "master1" in lease.skipped
    lease.release()
    hosts["master3"].down = True
    with pytest.raises(TransportError):
        ClusterLease("c1", "ctl", ["master3"], hosts.__getitem__, required=["master3"]).acquire()


def test_the_holder_is_the_controller(tmp_path: Path) -> None:
    from etcd_dr.recovery.lease import controller_id, owner_text

    assert controller_id(tmp_path) == controller_id(tmp_path / ".") != controller_id(tmp_path / "other")
    text = owner_text("3f2a", "run-1")
    assert "incident 3f2a, flow run run-1" in text and "\n" not in text
