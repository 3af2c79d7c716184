"""etcd_dr.recovery.incident: a plan bound to the picture it was made from, checked against a fresh
one (no I/O)."""

from __future__ import annotations

import dataclasses

from etcd_dr.etcd.client import Member
from etcd_dr.recovery.incident import Incident, changed_since, changed_under, healthy_without, plan_target
from etcd_dr.recovery.plan import plan_recovery
from etcd_dr.state import Gathered, MemberListSource, Reach, assess
from tests.unit.test_recovery import INV, INV5, NOW, SNAPS, cluster, fenced, mid, status

MASTERS_LOST = {"master3": (65451,), "node1": (65440,)}


def _incident(inv=INV, up=MASTERS_LOST, **kw):
    state = cluster(inv, up)
    voters = [h.name for h in inv.voters]
    plan = plan_recovery(state, inv, fenced=fenced(*voters), **kw)
    assert not plan.refused, plan.reason
    return Incident.of(plan, state), plan


def _one_member(leader: str, index: int, *, cluster_id: int = 0):
    """What the cluster looks like once someone else recovered it onto `leader`."""
    st = dataclasses.replace(status(INV, leader, index, leader=leader), cluster_id=cluster_id)
    h = INV.host(leader)
    g = Gathered(
        statuses={
            INV.client_url(x): st if x.name == leader else "connection refused" for x in INV.etcd_hosts
        },
        ssh={x.name: (Reach.OK, None) for x in INV.etcd_hosts},
        member_list=(Member(mid(leader), f"etcd-{leader}", (INV.peer_url(h),), (INV.client_url(h),), False),),
        member_list_source=MemberListSource.LINEARIZABLE,
        started=0.0,
        finished=0.1,
    )
    return assess(INV, g, now=NOW)


def test_the_incident_records_what_the_plan_was_made_for() -> None:
    inc, plan = _incident()
    assert plan_target(plan) == "master3" and inc.target == "master3"
    assert inc.target_member_id == mid("master3") and inc.target_index == 65451
    assert inc.voter_ids == (mid("master1"), mid("master2"), mid("master3"))
    assert inc.answering == ("master3", "node1")
    assert Incident.from_json(inc.to_json()) == inc


def test_the_same_picture_still_fits() -> None:
    inc, _ = _incident()
    assert changed_since(inc, cluster(INV, MASTERS_LOST)) is None
    # the survivor applying what it had is no change (its index may only grow)
    assert changed_since(inc, cluster(INV, {"master3": (65452,), "node1": (65440,)})) is None


def test_a_cluster_recovered_meanwhile_is_not_recovered_again() -> None:
    """Issue 15: a paused approval, meanwhile a CLI recovery: master3 leads a one-member cluster."""
    inc, _ = _incident()
    why = changed_since(inc, _one_member("master3", 65460))
    assert why is not None and why.startswith("quorum is held again (quorum held: 1 of 1 voters healthy")
    assert healthy_without(inc, _one_member("master3", 65460)) is None  # the plan's own work: finish it


def test_the_old_quorum_back_is_healthy_without_the_recovery() -> None:
    inc, _ = _incident()
    back = cluster(INV, {h: (65470, 65470, "master1") for h in ("master1", "master2", "master3")})
    assert changed_since(inc, back) is not None
    assert healthy_without(inc, back) == (
        "the cluster is healthy again without this recovery (quorum held: 3 of 3 voters healthy, "
        "leader master1; learner node1 not answering)"
    )
    assert healthy_without(inc, cluster(INV, {"master3": (65451,)})) is None  # still lost: resume


def test_a_stale_plan_for_another_survivor_is_not_carried_out() -> None:
    """Issue 15: the old plan forces master3; now master2 is the only survivor."""
    inc, _ = _incident()
    why = changed_since(inc, cluster(INV, {"master2": (70000,)}))
    assert why == "master3, the member the plan acts on, no longer answers etcd"


def test_another_member_more_advanced_or_a_new_cluster_id() -> None:
    inc, _ = _incident(INV5, {"master3": (500,)}, highest_index_seen=None)
    why = changed_since(inc, cluster(INV5, {"master3": (500,), "master4": (510,)}))
    assert why == "master4 is now more advanced than master3 (raft index 510 > 500)"
    other = dataclasses.replace(status(INV5, "master3", 500), cluster_id=0xC46E)
    inc = dataclasses.replace(inc, cluster_id=0x3ED8)
    assert changed_since(inc, cluster(INV5, {"master3": other})) == (
        "master3 now reports cluster c46e, the plan was made for cluster 3ed8"
    )
    wiped = dataclasses.replace(status(INV5, "master3", 3), member_id=0x999)
    assert changed_since(inc, cluster(INV5, {"master3": wiped})) == (
        "master3 is now member 999, the plan was made for member 103"
    )


def test_a_snapshot_plan_is_stale_once_a_member_answers() -> None:
    state = cluster(INV, {})
    plan = plan_recovery(state, INV, fenced=fenced("master1", "master2", "master3", "node1"), snapshots=SNAPS)
    assert not plan.refused, plan.reason
    inc = Incident.of(plan, state)
    assert inc.target_member_id is None and changed_since(inc, cluster(INV, {})) is None
    assert changed_since(inc, cluster(INV, {"master2": (900,)})) == (
        "master2 answers etcd again: a member may hold newer data than the snapshot"
    )


def test_a_plan_under_way_resumes_on_its_own_changes_only() -> None:
    """Resume with "changed since": the plan's own work (master3 stopped, then forced into a
    one-member cluster) is resumed; a member back with more data, or master3's data replaced by
    another hand, is not."""
    inc, _ = _incident()
    assert changed_under(inc, cluster(INV, MASTERS_LOST), keeps_identity=True) is None
    assert changed_under(inc, cluster(INV, {"node1": (65440,)}), keeps_identity=True) is None  # m3 stopped
    assert changed_under(inc, _one_member("master3", 65460), keeps_identity=True) is None  # forced: finish
    back = cluster(INV, {"master1": (65500,), "node1": (65440,)})  # master3 stopped by the plan
    assert changed_under(inc, back, keeps_identity=True) == (
        "master1 answers etcd again and is more advanced than master3 (raft index 65500 > 65451): "
        "resuming would drop what only it holds"
    )
    other = dataclasses.replace(status(INV, "master3", 65460), member_id=0xBEEF)
    why = changed_under(inc, cluster(INV, {"master3": other}), keeps_identity=True)
    assert why == f"master3 is now member beef, the plan was made for member {mid('master3'):x}"
    # a restore path makes a new member by design: the new id is its own work
    assert changed_under(inc, cluster(INV, {"master3": other}), keeps_identity=False) is None
