"""The learner-add planner on ClusterState fixtures (pure: no I/O)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EndpointStatus, Member
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.learner import HostFacts, LearnerAction, LearnerOptions, plan_learner_add
from etcd_dr.plans import Refusal
from etcd_dr.state import Gathered, MemberListSource, Reach, assess

VOTER = frozenset({Role.ETCD, Role.CONTROLPLANE})
HOSTS = (
    Host("master1", "10.9.0.11", VOTER),
    Host("master2", "10.9.0.12", VOTER),
    Host("master3", "10.9.0.13", VOTER),
    Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER, Role.WORKER}), etcd_image="lab/etcd:3.5.16"),
    Host("node2", "10.9.0.22", frozenset({Role.WORKER})),
)
INV = Inventory(
    cluster="t",
    hosts=HOSTS,
    etcd=EtcdSettings(
        RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k")), image="lab/etcd:3.4.23"
    ),
    ssh=SshSettings(Path("id"), Path("kh")),
)
IDS = {"master1": 0x11, "master2": 0x12, "master3": 0x13, "node1": 0x21, "node2": 0x22}
FRESH = HostFacts("node1", cert_problem="no kube-etcd-10-9-0-21.pem on node1")


def _ep(name: str) -> str:
    return INV.client_url(INV.host(name))


def _member(name: str, learner: bool = False, started: bool = True) -> Member:
    h = INV.host(name)
    return Member(
        IDS[name], name if started else "", (INV.peer_url(h),), (_ep(name),) if started else (), learner
    )


def _status(name: str, leader: str | None, learner: bool = False) -> EndpointStatus:
    return EndpointStatus(
        _ep(name),
        IDS[name],
        IDS[leader] if leader else 0,
        100,
        100,
        3,
        90,
        "3.4.23",
        20480,
        16384,
        learner,
        (),
    )


def state(
    *, members: tuple[Member, ...] | None = None, up: tuple[str, ...] = ("master1", "master2", "master3")
):
    members = members or tuple(_member(n) for n in ("master1", "master2", "master3"))
    learners = {m.name for m in members if m.is_learner}
    leader = "master1" if len([u for u in up if u.startswith("master")]) >= 2 else None
    g = Gathered(
        statuses={_ep(n): _status(n, leader, n in learners) for n in up},
        ssh={h.name: (Reach.OK, None) for h in INV.etcd_hosts},
        member_list=members,
        member_list_source=MemberListSource.LINEARIZABLE if leader else MemberListSource.LOCAL,
        started=0.0,
        finished=0.1,
    )
    return assess(INV, g)


def test_fresh_host_gets_every_step_in_order() -> None:
    plan = plan_learner_add(INV, state(), "node1", FRESH, LearnerOptions(promote=True))
    assert not plan.refused
    assert [s.action for s in plan.steps] == [
        LearnerAction.ISSUE_CERT,
        LearnerAction.MEMBER_ADD,
        LearnerAction.START,
        LearnerAction.WAIT_CAUGHT_UP,
        LearnerAction.PROMOTE,
    ]
    assert not any(s.holds for s in plan.steps)
    assert [s.destructive for s in plan.steps] == [False, False, False, False, True]
    assert plan.params["runs"] == "lab/etcd:3.5.16"  # the host's own image beats etcd.image
    start = plan.steps[2]
    assert "lab/etcd:3.5.16" in start.runs and "--initial-cluster-state=existing" in start.runs
    assert "--name=etcd-node1" in start.runs
    assert plan.reason == (
        "quorum held: 3 of 3 voters healthy, leader master1; node1 is not a member: add it as a learner "
        "running lab/etcd:3.5.16 and promote it"
    )
    assert plan.steps[-1].reason == "asked to promote: voters go from 3 to 4, quorum from 2 to 3"
    text = plan.render()
    assert "5. promote node1 to voter [destructive]" in text


def test_without_promote_there_is_no_promote_step() -> None:
    plan = plan_learner_add(INV, state(), "node1", FRESH, LearnerOptions())
    assert LearnerAction.PROMOTE not in [s.action for s in plan.steps]


def test_already_a_learner_skips_cert_add_and_start() -> None:
    members = (*(_member(n) for n in ("master1", "master2", "master3")), _member("node1", learner=True))
    facts = HostFacts(
        "node1", cert_problem=None, data_dir_in_use=True, runtime_exists=True, runtime_running=True
    )
    st = state(members=members, up=("master1", "master2", "master3", "node1"))
    plan = plan_learner_add(INV, st, "node1", facts, LearnerOptions(promote=True))
    holds = {s.action: s.holds for s in plan.steps}
    assert holds == {
        LearnerAction.ISSUE_CERT: True,
        LearnerAction.MEMBER_ADD: True,
        LearnerAction.START: True,
        LearnerAction.WAIT_CAUGHT_UP: False,
        LearnerAction.PROMOTE: False,
    }
    assert plan.params["member_id"] == 0x21
    assert "node1 is a learner already (member 21): continue and promote it" in plan.reason


def test_added_but_never_started_member_is_started_not_added_again() -> None:
    members = (
        *(_member(n) for n in ("master1", "master2", "master3")),
        _member("node1", True, started=False),
    )
    plan = plan_learner_add(INV, state(members=members), "node1", FRESH, LearnerOptions())
    holds = {s.action: s.holds for s in plan.steps}
    assert holds[LearnerAction.MEMBER_ADD] is True and holds[LearnerAction.START] is False


def test_already_a_voter_is_nothing_to_do() -> None:
    members = (*(_member(n) for n in ("master1", "master2", "master3")), _member("node1"))
    st = state(members=members, up=("master1", "master2", "master3", "node1"))
    plan = plan_learner_add(INV, st, "node1", FRESH, LearnerOptions(promote=True))
    assert not plan.refused and plan.steps == ()
    assert plan.reason == "node1 is already a voter of t (member 21): nothing to do"


def test_quorum_lost_is_refused_with_the_verdict() -> None:
    st = state(up=("master3",))
    plan = plan_learner_add(INV, st, "node1", FRESH, LearnerOptions())
    assert plan.refusal is Refusal.UNSAFE and plan.steps == ()
    assert plan.reason.startswith("quorum lost: 1 of 3 voters reachable, master3 has the highest raft index")
    assert plan.reason.endswith("a member can only be added while quorum holds: recover quorum first")


def test_host_not_in_inventory_is_bad_input() -> None:
    plan = plan_learner_add(INV, state(), "node9", None, LearnerOptions())
    assert plan.refusal is Refusal.BAD_INPUT
    assert plan.reason == (
        "no host named 'node9' in the inventory (hosts: master1, master2, master3, node1, node2); "
        "add it to the inventory first"
    )


def test_worker_without_learner_role_is_bad_input_naming_the_field() -> None:
    plan = plan_learner_add(INV, state(), "node2", FRESH, LearnerOptions())
    assert plan.refusal is Refusal.BAD_INPUT
    assert (
        "node2 has roles [worker] in the inventory, not etcd-learner; add etcd-learner to hosts[4].roles"
        in (plan.reason)
    )


def test_a_voter_of_the_inventory_is_bad_input() -> None:
    plan = plan_learner_add(INV, state(), "master2", FRESH, LearnerOptions())
    assert plan.refusal is Refusal.BAD_INPUT and "hosts[1].roles has etcd" in plan.reason


def test_no_image_anywhere_is_bad_input() -> None:
    bare = dataclasses.replace(
        INV,
        etcd=dataclasses.replace(INV.etcd, image=None),
        hosts=tuple(dataclasses.replace(h, etcd_image=None) for h in HOSTS),
    )
    plan = plan_learner_add(bare, state(), "node1", FRESH, LearnerOptions())
    assert plan.refusal is Refusal.BAD_INPUT
    assert "set etcd.image or hosts[3].etcd_image in the inventory, or pass --image" in plan.reason
    # --image fixes it
    assert not plan_learner_add(bare, state(), "node1", FRESH, LearnerOptions(image="x:1")).refused


def test_another_learner_is_refused() -> None:
    inv = dataclasses.replace(
        INV, hosts=(*HOSTS[:4], dataclasses.replace(HOSTS[4], roles=frozenset({Role.ETCD_LEARNER})))
    )
    members = (*(_member(n) for n in ("master1", "master2", "master3")), _member("node1", learner=True))
    g_state = state(members=members, up=("master1", "master2", "master3", "node1"))
    plan = plan_learner_add(inv, g_state, "node2", HostFacts("node2"), LearnerOptions(image="x:1"))
    assert plan.refusal is Refusal.UNSAFE
    assert "has a learner already (node1) and etcd allows one" in plan.reason


def test_unreachable_host_is_refused() -> None:
    plan = plan_learner_add(
        INV, state(), "node1", HostFacts("node1", ssh_error="no answer in 3 s"), LearnerOptions()
    )
    assert plan.refusal is Refusal.UNSAFE
    assert (
        plan.reason == "node1 cannot be reached over SSH (no answer in 3 s); fix the connection and run again"
    )


def test_running_etcd_on_a_non_member_is_refused() -> None:
    facts = HostFacts("node1", runtime_exists=True, runtime_running=True)
    plan = plan_learner_add(INV, state(), "node1", facts, LearnerOptions())
    assert plan.refusal is Refusal.UNSAFE and "etcd runs on node1 although it is not a member" in plan.reason


def test_leftovers_of_an_earlier_member_are_set_aside_first() -> None:
    facts = HostFacts("node1", cert_problem=None, data_dir_in_use=True, runtime_exists=True)
    plan = plan_learner_add(INV, state(), "node1", facts, LearnerOptions())
    assert [s.action for s in plan.steps][:3] == [
        LearnerAction.ISSUE_CERT,
        LearnerAction.SET_ASIDE,
        LearnerAction.MEMBER_ADD,
    ]
    aside = plan.steps[1]
    assert not aside.destructive and ".bak-<UTC timestamp>" in aside.runs
    assert aside.reason == (
        "node1 is not a member but has an etcd container and /var/lib/etcd/member from an earlier one: "
        "kept aside (never deleted) so that etcd starts clean"
    )


def test_process_runtime_runs_the_hosts_binary() -> None:
    inv = dataclasses.replace(
        INV,
        etcd=dataclasses.replace(INV.etcd, runtime=RuntimeKind.PROCESS),
        hosts=(*HOSTS[:3], dataclasses.replace(HOSTS[3], etcd_binary="/opt/etcd-3.5.16/bin/etcd"), HOSTS[4]),
    )
    plan = plan_learner_add(inv, state(), "node1", FRESH, LearnerOptions())
    assert plan.params["runs"] == "/opt/etcd-3.5.16/bin/etcd"
    assert plan.steps[2].runs.startswith("/opt/etcd-3.5.16/bin/etcd --name=etcd-node1")


def test_bad_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="add_timeout"):
        LearnerOptions(add_timeout=0)
    with pytest.raises(InputError, match="--max-lag -1"):
        LearnerOptions(max_lag=-1)


# -- rejoin: a lost master back after a recovery (master3 forced into a one-member cluster)

REJOIN = LearnerOptions(promote=True, rejoin=True)
OLD = HostFacts("master1", cert_problem=None, data_dir_in_use=True, runtime_exists=True, runtime_running=True)


def recovered(members: tuple[str, ...] = ("master3",)):
    g = Gathered(
        statuses={_ep(n): _status(n, "master3") for n in members},
        ssh={h.name: (Reach.OK, None) for h in INV.etcd_hosts},
        member_list=tuple(_member(n) for n in members),
        member_list_source=MemberListSource.LINEARIZABLE,
        started=0.0,
        finished=0.1,
    )
    return assess(INV, g)


def test_rejoin_sets_the_old_member_aside_adds_and_promotes() -> None:
    plan = plan_learner_add(INV, recovered(), "master1", OLD, REJOIN)
    assert plan.kind == "rejoin" and not plan.refused
    assert [s.action for s in plan.steps] == [
        LearnerAction.ISSUE_CERT,
        LearnerAction.SET_ASIDE,
        LearnerAction.MEMBER_ADD,
        LearnerAction.START,
        LearnerAction.WAIT_CAUGHT_UP,
        LearnerAction.PROMOTE,
    ]
    assert plan.steps[0].holds  # its certificate is still valid
    assert "removed by a recovery; it must not start on its old data" in plan.steps[1].reason
    assert plan.reason == (
        "quorum held: 1 of 1 voters healthy, leader master3; master1 is an inventory voter but no "
        "member: rejoin it as a learner running lab/etcd:3.4.23 and promote it"
    )


def test_rejoin_of_a_voter_member_is_refused() -> None:
    plan = plan_learner_add(INV, recovered(), "master3", OLD, REJOIN)
    assert plan.refusal is Refusal.BAD_INPUT and plan.kind == "rejoin"
    assert plan.reason == "master3 is a voter member of t already (member 13): nothing to rejoin"


def test_rejoin_of_a_learner_host_comes_back_as_a_learner() -> None:
    plan = plan_learner_add(INV, recovered(), "node1", FRESH, REJOIN)
    assert (
        plan.refusal is Refusal.BAD_INPUT and "node1 rejoins as a learner: do not promote it" in plan.reason
    )
    plan = plan_learner_add(INV, recovered(), "node1", FRESH, dataclasses.replace(REJOIN, promote=False))
    assert (
        not plan.refused
        and "node1 is an inventory learner but no member: rejoin it as a learner" in plan.reason
    )
    assert "promote" not in [str(s.action) for s in plan.steps]


def test_rejoin_without_quorum_is_refused() -> None:
    plan = plan_learner_add(INV, state(up=("master3",)), "master1", OLD, REJOIN)
    assert plan.refusal is Refusal.UNSAFE and "a member can only be added while quorum holds" in plan.reason


def test_a_master_rejoins_promoted() -> None:
    plan = plan_learner_add(INV, recovered(), "master1", OLD, LearnerOptions(rejoin=True))
    assert plan.refusal is Refusal.BAD_INPUT and "master1 rejoins as a voter: promote it" in plan.reason


class _Status:
    """Status answers of a learner ('me') and the leader ('lead'), as (applied index, revision)."""

    def __init__(self, me: tuple[int, int], lead: tuple[int, int]) -> None:
        self.at = {"me": me, "lead": lead}

    def status(self, url: str, timeout: float) -> EndpointStatus:
        applied, rev = self.at[url]
        return EndpointStatus(url, 1, 2, applied, applied, 3, rev, "3.4.23", 1, 1, url == "me", ())


def _rejoin_ctx(me: tuple[int, int], lead: tuple[int, int]):
    from types import SimpleNamespace

    return SimpleNamespace(
        cluster=_Status(me, lead),
        client_url="me",
        inv=SimpleNamespace(etcd=SimpleNamespace(dial_timeout=1.0)),
        members=(Member(2, "lead", (), ("lead",), False),),
        host=SimpleNamespace(name="master1"),
    )


def test_rejoin_promotes_only_a_member_with_the_leaders_revision() -> None:
    from etcd_dr.learner.steps import StepFailed, same_revision

    rt = SimpleRuntime()
    assert same_revision(_rejoin_ctx((50, 201), (50, 201)), rt) == (
        "; revision 201 as on the leader at applied index 50"
    )
    with pytest.raises(StepFailed, match="has revision 200 where the leader has 201 at the same applied"):
        same_revision(_rejoin_ctx((50, 200), (50, 201)), rt)
    assert "not compared" in same_revision(_rejoin_ctx((49, 200), (50, 201)), rt, tries=2)


class SimpleRuntime:
    def is_running(self) -> bool:
        return True


def test_a_forked_cluster_gets_no_member() -> None:
    forked = dataclasses.replace(
        state(), quorum=False, forked=True, verdict="forked: the members form 2 clusters"
    )
    plan = plan_learner_add(INV, forked, "node1", FRESH, LearnerOptions(promote=True))
    assert plan.refused and plan.refusal is Refusal.UNSAFE and plan.steps == ()
    assert plan.reason.startswith("forked: the members form 2 clusters; both sides accept writes: stop etcd")
