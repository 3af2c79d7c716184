"""The learner's step vocabulary (no I/O): every action paired with its params type and handler, a
plan's params read back from its JSON into the same types, and checks (done()) that only look: they
record nothing on the run's context."""

from __future__ import annotations

import json

import pytest

from etcd_dr.etcd.client import Member
from etcd_dr.learner import VOCABULARY, Ctx, HostFacts, LearnerAction, LearnerOptions, plan_learner_add
from etcd_dr.learner.steps import CatchUpParams, CertParams, MemberAdd, Promote, SetAsideParams, typed_plan
from etcd_dr.plans import ParamsError, plan_from_json
from tests.unit.test_learner_plan import INV, OLD, recovered, state


def test_every_action_has_its_params_type_and_handler() -> None:
    assert set(VOCABULARY) == set(LearnerAction)


def _json_round_trip(plan):
    return typed_plan(plan_from_json(json.loads(json.dumps(plan.to_json()))))


def test_a_plans_params_come_back_from_json_in_their_types() -> None:
    opts = LearnerOptions(promote=True, ips=("10.1.0.5",), dns=("n1.example",), max_lag=7, catchup_timeout=9)
    plan = plan_learner_add(INV, state(), "node1", HostFacts("node1", cert_problem="missing"), opts)
    back = _json_round_trip(plan)
    assert back.steps == plan.steps  # every field, the params typed as they were planned
    assert back.steps[0].typed(CertParams) == CertParams(("10.1.0.5",), ("n1.example",))
    assert plan.steps[3].typed(CatchUpParams) == CatchUpParams(9.0, 7, same_revision=False)
    assert plan.to_json()["steps"][0]["params"] == {"ips": ["10.1.0.5"], "dns": ["n1.example"]}


def test_a_rejoin_plan_carries_the_diverged_read_and_the_revision_check() -> None:
    plan = plan_learner_add(INV, recovered(), "master1", OLD, LearnerOptions(rejoin=True, promote=True))
    aside = _json_round_trip(plan).steps[1]
    assert aside.action is LearnerAction.SET_ASIDE
    assert aside.typed(SetAsideParams) == SetAsideParams(INV.etcd.data_dir, report_diverged=True)
    wait = next(s for s in plan.steps if s.action is LearnerAction.WAIT_CAUGHT_UP)
    assert wait.typed(CatchUpParams).same_revision


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s[2].update(action="etcd-kill"), "action 'etcd-kill' is not a learner action"),
        (lambda s: s[1]["params"].pop("timeout_s"), "MemberAddParams: field 'timeout_s' is missing"),
        (lambda s: s[0]["params"].update(ips="10.0.0.1"), "CertParams: field 'ips': a list"),
    ],
)
def test_params_of_another_version_are_refused_naming_the_step(change, why: str) -> None:
    plan = plan_learner_add(
        INV, state(), "node1", HostFacts("node1", cert_problem="missing"), LearnerOptions()
    )
    d = json.loads(json.dumps(plan.to_json()))
    change(d["steps"])
    with pytest.raises(ParamsError, match=why):
        typed_plan(plan_from_json(d))


class _Cluster:
    """The cluster's answers to a member list: node1 a learner member."""

    def __init__(self) -> None:
        self.lists = 0

    def member_list(self, linearizable: bool = True) -> tuple[Member, ...]:
        self.lists += 1
        return (
            Member(0x11, "etcd-master1", ("https://10.0.0.11:2380",), (), False),
            Member(0x21, "", (INV.peer_url(INV.host("node1")),), (), True),
        )

    def close(self) -> None:
        pass


def test_checks_only_look_and_record_nothing() -> None:
    plan = plan_learner_add(
        INV, state(), "node1", HostFacts("node1", cert_problem="missing"), LearnerOptions(promote=True)
    )
    by = {s.action: s for s in plan.steps}
    with Ctx.for_host(INV, "node1") as c:
        cluster = _Cluster()
        c._cluster = cluster  # type: ignore[assignment]
        assert (
            MemberAdd(c).done(by[LearnerAction.MEMBER_ADD]) == "member 21 has peer URL https://10.9.0.21:2380"
        )
        assert Promote(c).done(by[LearnerAction.PROMOTE]) is None  # a learner still
        assert cluster.lists == 2  # each check asked afresh
        assert c.member_id is None and c.members == ()  # and kept nothing
        c._cluster = None


def test_the_probe_asks_the_target_host_twice() -> None:
    """The planner's probe: the member pair, the clock and the data dir in one command, the etcd
    container in one `docker inspect` (7 commands and reads before)."""
    from etcd_dr.certs import new_ca
    from etcd_dr.executor import CommandResult
    from etcd_dr.learner import gather_facts
    from tests.unit.test_cert_issue import FakeHost

    class Target(FakeHost):
        def __init__(self) -> None:
            super().__init__()
            self.ran: list[str] = []

        def run(self, argv, **kw):
            self.ran.append(argv[0] if argv[0] != "sh" else argv[3])
            if argv[0] == "docker":
                return CommandResult(self.host, tuple(argv), 1, "", "Error: No such object: etcd", 0.001)
            return super().run(argv, **kw)

    host = Target()
    host.files[f"{INV.etcd.data_dir}/member"] = (b"", 0o700)  # FakeHost answers `test` by path
    with Ctx.for_host(INV, "node1", ca=new_ca("kube-ca")) as c:
        c._executors["node1"] = host  # type: ignore[assignment]
        facts = gather_facts(c, LearnerOptions())
        c._executors.clear()
    assert host.ran == ["look", "docker"]
    assert facts.cert_problem is not None and facts.cert_problem.startswith("no kube-etcd-")
    assert facts.data_dir_in_use and not facts.runtime_exists and not facts.runtime_running
    assert facts.clock_skew_s is not None and abs(facts.clock_skew_s) < 5
