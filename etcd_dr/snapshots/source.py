"""Which member to snapshot: a pure decision on the frozen ClusterState, with its sentence."""

from __future__ import annotations

from dataclasses import dataclass

from etcd_dr.errors import EtcdDrError
from etcd_dr.state import ClusterState, MemberState

#: A voter this many raft entries or more behind the leader's commit index is lagging.
MAX_LAG = 100


class NoSnapshotSource(EtcdDrError):
    """No member qualifies as a snapshot source; the message says why."""


@dataclass(frozen=True)
class SourceChoice:
    name: str
    endpoint: str
    member_id: int
    raft_index: int
    revision: int
    version: str
    is_learner: bool
    reason: str


def choose_source(
    state: ClusterState, *, allow_learner: bool = False, allow_no_quorum: bool = False
) -> SourceChoice:
    """The healthiest member: a voter in sync with the leader (highest raft index among answering
    voters, applied index caught up, no alarm), a follower before the leader on a tie (a large
    snapshot's disk reads then do not slow heartbeats). A learner only with allow_learner; without
    quorum, nobody is known to be in sync, so only with allow_no_quorum (the most advanced survivor)."""
    answering = [m for m in state.members if m.status is not None and m.in_member_list and m.endpoint]
    leader = next((m for m in answering if m.name == state.leader), None)
    if not state.quorum or leader is None:
        if not allow_no_quorum:
            raise NoSnapshotSource(
                f"no snapshot source: {state.verdict}; no member is known to be in sync "
                "(pass allow_no_quorum to take the most advanced survivor)"
            )
        pool = [m for m in answering if allow_learner or not m.is_learner]
        if not pool:
            raise NoSnapshotSource(f"no snapshot source: {state.verdict}")
        best = max(pool, key=lambda m: (m.status.raft_index, not m.is_learner))
        return _choice(best, f"quorum lost; {best.name} is the most advanced member answering")
    commit = leader.status.raft_index
    candidates: list[tuple[MemberState, str]] = []
    skipped: list[str] = []
    for m in answering:
        s = m.status
        if m.is_learner and not allow_learner:
            continue
        if any("CORRUPT" in e.upper() for e in s.errors):
            skipped.append(f"{m.name} has a CORRUPT alarm")
            continue
        if commit - s.raft_index >= MAX_LAG or s.raft_index - s.raft_applied_index >= MAX_LAG:
            skipped.append(
                f"{m.name} lags (raft index {s.raft_index}, applied {s.raft_applied_index}, leader {commit})"
            )
            continue
        candidates.append((m, ""))
    if not candidates:
        why = "; ".join(skipped) or "no voter answers"
        raise NoSnapshotSource(f"no snapshot source in sync with leader {leader.name}: {why}")

    def rank(m: MemberState) -> tuple:
        s = m.status
        return (not m.is_learner, s.raft_index, s.raft_applied_index, not s.errors, m.name != leader.name)

    best = max((m for m, _ in candidates), key=rank)
    role = "learner" if best.is_learner else ("leader" if best.name == leader.name else "voter")
    reason = (
        f"{best.name} ({role}) is in sync with leader {leader.name}: raft index {best.status.raft_index} "
        f"of {commit}"
    )
    if skipped:
        reason += f"; skipped: {'; '.join(skipped)}"
    return _choice(best, reason)


def _choice(m: MemberState, reason: str) -> SourceChoice:
    s = m.status
    assert s is not None
    return SourceChoice(
        name=m.name,
        endpoint=m.endpoint,
        member_id=s.member_id,
        raft_index=s.raft_index,
        revision=s.revision,
        version=s.version,
        is_learner=m.is_learner,
        reason=reason,
    )
