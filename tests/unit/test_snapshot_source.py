"""The snapshot source is chosen on a frozen ClusterState: a voter in sync with the leader."""

from __future__ import annotations

import datetime as dt

import pytest

from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.snapshots.source import NoSnapshotSource, choose_source
from etcd_dr.state import ClusterState, MemberListSource, MemberState, Reach

IDS = {"m1": 1, "m2": 2, "m3": 3, "n1": 4}


def member(
    name: str, raft: int | None, *, learner: bool = False, leader: str = "m1", applied=None, errors=()
):
    st = None
    if raft is not None:
        st = EndpointStatus(
            endpoint=f"https://{name}:2379", member_id=IDS[name], leader=IDS[leader], raft_index=raft,
            raft_applied_index=raft if applied is None else applied, raft_term=2, revision=raft - 10,
            version="3.4.23", db_size=1 << 20, db_size_in_use=1 << 20, is_learner=learner,
            errors=tuple(errors),
        )  # fmt: skip
    return MemberState(
        name, name, f"etcd-{name}", IDS[name], f"https://{name}:2379", learner, Reach.OK, None, st,
        None if st else "down", True,
    )  # fmt: skip


def state(*members: MemberState, quorum: bool = True, leader: str | None = "m1") -> ClusterState:
    voters = [m for m in members if not m.is_learner]
    return ClusterState(
        "c", dt.datetime.now(dt.UTC), tuple(members), MemberListSource.LINEARIZABLE, len(voters),
        sum(1 for m in voters if m.status), 2, quorum, leader if quorum else None, None, "verdict here",
    )  # fmt: skip


def test_highest_raft_index_follower_preferred_on_tie() -> None:
    c = choose_source(state(member("m1", 1000), member("m2", 1000), member("m3", 999)))
    assert c.name == "m2"
    assert c.reason == "m2 (voter) is in sync with leader m1: raft index 1000 of 1000"


def test_leader_when_it_is_ahead() -> None:
    assert choose_source(state(member("m1", 1001), member("m2", 1000), member("m3", None))).name == "m1"


def test_lagging_and_alarmed_members_are_skipped() -> None:
    s = state(
        member("m1", 5000),
        member("m2", 4000),  # 1000 behind
        member("m3", 5000, applied=4800),  # committed but not applied
    )
    c = choose_source(s)
    assert c.name == "m1" and "m2 lags" in c.reason and "m3 lags" in c.reason
    s = state(member("m1", 5000), member("m2", 5001, errors=["memberID:2 alarm:CORRUPT"]))
    assert choose_source(s).name == "m1"


def test_learner_only_when_asked() -> None:
    s = state(member("m1", 100), member("n1", 100, learner=True))
    assert choose_source(s).name == "m1"
    assert choose_source(s, allow_learner=True).name == "m1"  # a voter still wins
    s = state(member("m1", None), member("n1", 100, learner=True), quorum=False)
    with pytest.raises(NoSnapshotSource):
        choose_source(s, allow_no_quorum=True)  # the learner is all that answers, and was not allowed
    assert choose_source(s, allow_no_quorum=True, allow_learner=True).name == "n1"


def test_no_quorum_refused_unless_allowed() -> None:
    s = state(member("m1", None), member("m2", 700, leader="m1"), member("m3", None), quorum=False)
    with pytest.raises(NoSnapshotSource, match="no member is known to be in sync"):
        choose_source(s)
    c = choose_source(s, allow_no_quorum=True)
    assert c.name == "m2" and "quorum lost" in c.reason
