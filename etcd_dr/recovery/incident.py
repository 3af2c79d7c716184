"""What a recovery plan was made for, and whether a fresh picture still shows that incident.

A plan is only as good as the observation it came from. Between planning and the first destructive
step there can be an approval wait of an hour, a crash and a resume, or another operator's
recovery; acting on the old picture then kills a healthy cluster's only member or forces a second
new cluster. So the plan is bound to its `Incident` (the cluster id, the voters' member ids, the
member it acts on and how far that member had come), and just before the first destructive step a
fresh observation is checked against it: `changed_since()` says, in one sentence, why the plan no
longer fits, or None. A plan already under way changes the cluster itself, so its resume asks a
different question: `healthy_without()` says whether the cluster became healthy by other means.

Pure: frozen pictures in, a sentence or None out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from etcd_dr.plans import Plan
from etcd_dr.state import ClusterState, MemberListSource, MemberState


def plan_target(plan: Plan) -> str | None:
    """The host a recovery plan acts on: every recovery path works on exactly one member."""
    return next((s.host for s in plan.steps if s.host), None)


@dataclass(frozen=True)
class Incident:
    id: str  # a new one per plan: the journal and the cluster lease carry it
    cluster: str
    target: str | None  # the host the plan acts on
    target_member_id: int | None  # its etcd member id when planned (None: it did not answer)
    target_index: int | None  # its raft index when planned
    cluster_id: int | None  # the etcd cluster id the answering members reported
    voter_ids: tuple[int, ...]  # the voters' member ids in the member list the plan saw
    answering: tuple[str, ...]  # the members that answered etcd
    observed_at: str
    verdict: str

    @classmethod
    def of(cls, plan: Plan, state: ClusterState) -> Incident:
        target = plan_target(plan)
        tm = _member(state, target)
        st = tm.status if tm else None
        ids = {m.status.cluster_id for m in state.members if m.status and m.status.cluster_id}
        return cls(
            id=uuid.uuid4().hex[:16],
            cluster=plan.cluster,
            target=target,
            target_member_id=st.member_id if st else None,
            target_index=st.raft_index if st else None,
            cluster_id=ids.pop() if len(ids) == 1 else None,
            voter_ids=_voter_ids(state),
            answering=tuple(sorted(m.name for m in state.members if m.status is not None)),
            observed_at=state.observed_at.isoformat(),
            verdict=state.verdict,
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Incident:
        return cls(
            id=str(d["id"]),
            cluster=str(d["cluster"]),
            target=_opt_str(d.get("target")),
            target_member_id=_opt_int(d.get("target_member_id")),
            target_index=_opt_int(d.get("target_index")),
            cluster_id=_opt_int(d.get("cluster_id")),
            voter_ids=tuple(int(i) for i in d.get("voter_ids") or ()),  # type: ignore[union-attr]
            answering=tuple(str(n) for n in d.get("answering") or ()),  # type: ignore[union-attr]
            observed_at=str(d.get("observed_at", "")),
            verdict=str(d.get("verdict", "")),
        )


def changed_since(inc: Incident, fresh: ClusterState) -> str | None:
    """Why a plan made for `inc` must not start on the cluster `fresh` shows, or None when the
    incident is still the same: quorum still lost, the same member to act on, no member more
    advanced than it, the same cluster id and voters."""
    if fresh.quorum:
        return f"quorum is held again ({fresh.verdict})"
    if fresh.voters and fresh.voters_answering >= fresh.quorum_needed:
        return f"a majority of voters answers again ({fresh.voters_answering} of {fresh.voters})"
    now_answering = {m.name for m in fresh.members if m.status is not None}
    if inc.target_member_id is None:  # planned with no member answering: a snapshot restore
        back = sorted(now_answering - set(inc.answering))
        if back:
            verb = "answers" if len(back) == 1 else "answer"
            return f"{', '.join(back)} {verb} etcd again: a member may hold newer data than the snapshot"
        return None
    tm = _member(fresh, inc.target)
    if tm is None or tm.status is None:
        return f"{inc.target}, the member the plan acts on, no longer answers etcd"
    st = tm.status
    if inc.cluster_id and st.cluster_id and st.cluster_id != inc.cluster_id:
        return (
            f"{inc.target} now reports cluster {st.cluster_id:x}, "
            f"the plan was made for cluster {inc.cluster_id:x}"
        )
    if st.member_id != inc.target_member_id:
        return (
            f"{inc.target} is now member {st.member_id:x}, "
            f"the plan was made for member {inc.target_member_id:x}"
        )
    if inc.target_index is not None and st.raft_index < inc.target_index:
        return f"{inc.target}'s raft index went back from {inc.target_index} to {st.raft_index}"
    rivals = [
        m
        for m in fresh.members
        if m is not tm and m.status is not None and (tm.is_learner or not m.is_learner)
    ]
    ahead = [m for m in rivals if m.status and m.status.raft_index > st.raft_index]
    if ahead:
        m = max(ahead, key=lambda m: m.status.raft_index if m.status else 0)
        assert m.status is not None
        return (
            f"{m.name} is now more advanced than {inc.target} "
            f"(raft index {m.status.raft_index} > {st.raft_index})"
        )
    voters = _voter_ids(fresh)
    if (
        fresh.member_list_source is not MemberListSource.INVENTORY
        and inc.voter_ids
        and voters != inc.voter_ids
    ):
        return f"the voters are now {_ids(voters)}, the plan was made for {_ids(inc.voter_ids)}"
    return None


def healthy_without(inc: Incident, fresh: ClusterState) -> str | None:
    """For a plan already under way: why it must not be resumed because the cluster is healthy by
    other means (quorum held by voters other than the plan's one member), or None to resume. A
    quorum of the plan's own member alone is the plan's own work, half done: it is finished."""
    if not fresh.quorum:
        return None
    voters = sorted(m.host or m.name for m in fresh.members if m.in_member_list and not m.is_learner)
    if voters == [inc.target]:
        return None
    return f"the cluster is healthy again without this recovery ({fresh.verdict})"


def changed_under(inc: Incident, fresh: ClusterState, *, keeps_identity: bool) -> str | None:
    """For a plan already under way (after healthy_without said resume): why it must not be resumed
    because the cluster changed in what the plan rests on and did not change itself, or None.
    `keeps_identity`: the plan keeps its member's cluster and member id (force-new-cluster), so a
    different one means another hand replaced its data. Until the plan has made its one-member
    cluster (no quorum yet), a member that answers again more advanced than the plan's one would
    lose what only it holds: the plan was made without it."""
    tm = _member(fresh, inc.target)
    st = tm.status if tm is not None else None
    if keeps_identity and st is not None:
        if inc.cluster_id and st.cluster_id and st.cluster_id != inc.cluster_id:
            return (
                f"{inc.target} now reports cluster {st.cluster_id:x}, the plan was made for cluster "
                f"{inc.cluster_id:x}"
            )
        if inc.target_member_id is not None and st.member_id != inc.target_member_id:
            return (
                f"{inc.target} is now member {st.member_id:x}, the plan was made for member "
                f"{inc.target_member_id:x}"
            )
    if fresh.quorum:
        return None
    others = [m for m in fresh.members if m.status is not None and inc.target not in (m.name, m.host)]
    if inc.target_member_id is None:  # a snapshot restore: planned with no member answering
        back = sorted(m.name for m in others if m.name not in inc.answering)
        if back:
            return f"{', '.join(back)} answer(s) etcd again: a member may hold newer data than the snapshot"
        return None
    mine = st.raft_index if st is not None else inc.target_index
    learner = tm.is_learner if tm is not None else False
    ahead = [
        m
        for m in others
        if (learner or not m.is_learner) and m.status and mine is not None and m.status.raft_index > mine
    ]
    if ahead:
        m = max(ahead, key=lambda m: m.status.raft_index if m.status else 0)
        assert m.status is not None
        return (
            f"{m.name} answers etcd again and is more advanced than {inc.target} (raft index "
            f"{m.status.raft_index} > {mine}): resuming would drop what only it holds"
        )
    return None


def _member(state: ClusterState, host: str | None) -> MemberState | None:
    if host is None:
        return None
    try:
        return state.member(host)
    except KeyError:
        return None


def _voter_ids(state: ClusterState) -> tuple[int, ...]:
    return tuple(
        sorted(m.member_id for m in state.members if m.in_member_list and not m.is_learner and m.member_id)
    )


def _ids(ids: tuple[int, ...]) -> str:
    return ", ".join(f"{i:x}" for i in ids) or "none"


def _opt_int(v: object) -> int | None:
    return None if v is None else int(v)  # type: ignore[call-overload]


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)
