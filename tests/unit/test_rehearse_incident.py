"""`rehearse --scenario incident`, its pure parts: the scenario on the lab's shape, the phases judged
one by one, the approvals, the guard against --force-new-cluster on a learner, the report and text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from etcd_dr.cli.rehearse import _text
from etcd_dr.errors import InputError
from etcd_dr.inventory import RkeSettings
from etcd_dr.lab.rehearsal.incident import (
    Approval,
    CertFacts,
    IncidentFacts,
    KubeletFacts,
    Phase,
    approval_for,
    forced_on_learner,
    incident_phases,
    judge_incident,
)
from etcd_dr.lab.rehearsal.measure import AllowedLoss, LossRule, analyze
from etcd_dr.lab.rehearsal.report import KubernetesFacts, RecoveryFacts, RehearsalReport, judge
from etcd_dr.lab.rehearsal.scenarios import FaultPhase, Return, Scenario, spec_for
from etcd_dr.plans import Plan, Step
from etcd_dr.recovery.plan import RecoveryPath
from tests.unit.test_rehearse import INV, LOG, T0, T1, _rejoined, present

RKE_INV = dataclasses.replace(INV, rke=RkeSettings(cluster_yml=Path("/x/cluster.yml"), deploy_host="node2"))
PATHS = ("learner-restore",)
REC = RecoveryFacts("recovered", "learner-restore", "quorum lost: 0 of 3 voters ...", recovered_on="node1")
ALLOWED = AllowedLoss(
    LossRule.BEYOND_SOURCE, 14, "the learner had applied up to revision 14: writes after it"
)
FAULT = FaultPhase(
    T0, T1, ("orphaned sandbox on node2: fault ... (2.1 s)", "power loss of master1: ... (0.5 s)"), 3.0
)
KUBE = KubernetesFacts(
    "restored", "external-etcd", "no overlap: ...", {"node1": None}, {"pods": 5, "namespaces": 3},
    {"pods": 5, "namespaces": 3}, "recorded at lab up", 21.5,
)  # fmt: skip
TIMINGS = {
    "lab_up": 10.0, "dataset": 4.0, "fault": 3.0, "recover": 9.0, "verify": 0.1, "kubernetes": 12.0,
    "kubelet": 15.5, "rejoin": 80.0, "certificate": 20.0,
}  # fmt: skip


def _step(sid: str, action: str, host: str, *, destructive: bool = False, **params: object) -> Step:
    return Step(sid, action, host, sid, "done", "why", destructive, params)


def _facts(**kw: object) -> IncidentFacts:
    base = IncidentFacts(
        "node2",
        "master1",
        kubelet=KubeletFacts("node2", True, "kubelet on node2 loops on 1 sandbox", ("orphan-x",), True),
        cert=CertFacts(
            "master1", True, "/etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem",
            "x509: certificate has expired or is not yet valid: current time ... is before ...",
            "master1's clock is right: ...", (), True, "renew", True, "clocks ok", True,
        ),
        approvals=(
            Approval(Phase.RECOVER, "etcd-dr recover --yes", "recover", "quorum lost", ("etcd-stop",), 9, 4),
        ),
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


def _phases(facts: IncidentFacts, timings: dict[str, float] = TIMINGS, **kw: object):
    m = analyze(LOG, present(*(r for r in LOG if r.acked)), fault_at=T0, fault_done_at=T1, allowed=ALLOWED)
    args: dict = dict(
        keys=500, fault=FAULT, expected_paths=PATHS, recovery=REC, measures=m, allowed=ALLOWED,
        kubernetes=KUBE, rejoin=_rejoined(),
    )  # fmt: skip
    args.update(kw)
    return incident_phases(facts, timings, **args)


def test_the_incident_on_the_lab_shape() -> None:
    s = spec_for(Scenario.INCIDENT, RKE_INV)
    assert s.lose_voters == ("master1", "master2", "master3") and s.lose_others == ()
    assert s.expected_paths == (RecoveryPath.LEARNER_RESTORE,) and s.loss_rule is LossRule.BEYOND_SOURCE
    assert (s.orphan_on, s.cert_on, s.kubernetes, s.returns) == ("node2", "master1", True, Return.ONE_BY_ONE)
    with pytest.raises(InputError, match="rke: section"):
        spec_for(Scenario.INCIDENT, INV)  # no RKE files: Kubernetes cannot come back
    no_learner = dataclasses.replace(RKE_INV, hosts=tuple(h for h in INV.hosts if not h.is_learner))
    with pytest.raises(InputError, match="needs a learner"):
        spec_for(Scenario.INCIDENT, no_learner)


def test_force_new_cluster_on_a_learner_is_caught() -> None:
    restore = Plan(
        "recover", "t", "learner restore", (
            _step("stop:node1", "etcd-stop", "node1", destructive=True),
            _step("run:node1", "etcd-run", "node1", extra_flags=["--snapshot-count=1"], args=[]),
        ),
    )  # fmt: skip
    assert forced_on_learner(restore, INV) == ()
    on_voter = Plan(
        "recover", "t", "fnc", (_step("run:m3", "etcd-run", "master3", extra_flags=["--force-new-cluster"]),)
    )
    assert forced_on_learner(on_voter, INV) == ()  # a voter's data dir may be forced
    forced = Plan(
        "recover", "t", "x", (_step("run:node1", "etcd-run", "node1", extra_flags=["--force-new-cluster"]),)
    )
    assert forced_on_learner(forced, INV) == ("run:node1",)
    by_runs = dataclasses.replace(restore.steps[1], params={}, runs="etcd --force-new-cluster --name node1")
    assert forced_on_learner(Plan("recover", "t", "x", (by_runs,)), INV) == ("run:node1",)
    phases = _phases(_facts(forced_on_learner=("run:node1",)))
    rec = next(p for p in phases if p.phase is Phase.RECOVER)
    assert not rec.ok and "`panic: removed all voters`" in rec.sentence


def test_an_approval_names_the_plan_and_its_step_kinds_in_order() -> None:
    plan = Plan(
        "kubelet-cleanup", "t", "kubelet on node2 loops", (
            _step("rm:node2", "remove-containers", "node2", destructive=True),
            _step("restart:node2", "restart-kubelet", "node2"),
            _step("rm2:node2", "remove-containers", "node2", destructive=True),
        ),
    )  # fmt: skip
    a = approval_for(Phase.KUBELET, "etcd-dr hosts kubelet-cleanup --host node2 --yes", plan)
    assert a.actions == ("remove-containers", "restart-kubelet") and (a.steps, a.destructive) == (3, 2)
    assert a.to_json() == {
        "phase": "kubelet", "command": "etcd-dr hosts kubelet-cleanup --host node2 --yes",
        "plan": "kubelet-cleanup", "reason": "kubelet on node2 loops",
        "step_kinds": ["remove-containers", "restart-kubelet"], "steps": 3, "destructive_steps": 2,
    }  # fmt: skip


def test_every_phase_ok_and_the_verdict() -> None:
    facts = _facts()
    phases = _phases(facts)
    assert [str(p.phase) for p in phases] == [
        "lab", "dataset", "fault", "recover", "verify", "kubernetes", "kubelet", "rejoin", "certificate",
    ]  # fmt: skip
    assert all(p.ok for p in phases), [p for p in phases if not p.ok]
    assert phases[2].sentence == "orphaned sandbox on node2, power loss of master1"
    assert phases[5].duration_s == 12.0 and "8 of 8 /registry objects back" in phases[5].sentence
    ok, verdict = judge_incident(phases, facts, True, "all fine")
    assert ok and verdict.startswith(
        "incident: every phase ok; all fine; kubelet on node2 out of its sandbox"
    )
    assert verdict.endswith("1 approvals given as --yes: recover (9 steps)")
    ok, _ = judge_incident(phases, facts, False, "rejoin FAILED")
    assert not ok  # the rehearsal's own judgement counts too


def test_a_failed_or_missing_phase_fails_the_incident() -> None:
    no_loop = _facts(kubelet=KubeletFacts("node2", True, "refused: not in the loop", (), False))
    ok, verdict = judge_incident(_phases(no_loop), no_loop, True, "v")
    assert not ok and verdict.startswith("incident FAILED at kubelet: node2: nothing removed: refused")
    still = _facts(
        cert=dataclasses.replace(_facts().cert, clean_after=False, after_verdict="1 certificate ...")
    )
    phases = _phases(still)
    assert not phases[-1].ok and "still flagged after: 1 certificate" in phases[-1].sentence
    blamed = _facts(cert=dataclasses.replace(_facts().cert, skewed=("master1",)))
    assert not _phases(blamed)[-1].ok  # the clocks are right: blaming one is a wrong diagnosis
    short = dict(TIMINGS)
    del short["certificate"]
    phases = _phases(_facts(cert=None), short, rejoin=None, kubernetes=None)
    missing = {str(p.phase): p for p in phases if not p.ok}
    assert set(missing) == {"kubernetes", "rejoin", "certificate"}
    assert missing["certificate"].sentence == "not reached" and missing["certificate"].duration_s is None
    back = dataclasses.replace(KUBE, counts_after={"pods": 4, "namespaces": 3})
    kube = next(p for p in _phases(_facts(), kubernetes=back) if p.phase is Phase.KUBERNETES)
    assert not kube.ok and "7 of 8 /registry objects back" in kube.sentence


def test_the_report_json_markdown_and_text() -> None:
    facts = _facts()
    phases = _phases(facts)
    m = analyze(LOG, present(*(r for r in LOG if r.acked)), fault_at=T0, fault_done_at=T1, allowed=ALLOWED)
    base_ok, base = judge(Scenario.INCIDENT, PATHS, REC, m, ALLOWED, _rejoined(), None, KUBE)
    ok, verdict = judge_incident(phases, facts, base_ok, base)
    r = RehearsalReport(
        Scenario.INCIDENT, ok, verdict, "run1", {"prefix": "einc"}, "force-new-cluster", FAULT, REC, m,
        ALLOWED, 14, None, _rejoined(), TIMINGS, "/tmp/x.jsonl", kubernetes=KUBE, incident=facts,
        phases=phases,
    )  # fmt: skip
    j = r.to_json()
    assert j["ok"] and j["scenario"] == "incident" and j["rto_api_s"] == 21.5 and j["rpo_writes"] == 0
    assert [p["phase"] for p in j["phases"]][-1] == "certificate" and all(p["ok"] for p in j["phases"])
    assert j["approvals"][0]["plan"] == "recover" and j["approvals"][0]["step_kinds"] == ["etcd-stop"]
    assert j["incident"]["force_new_cluster_on_learner"] == []
    assert j["incident"]["kubelet"]["removed"] == ["orphan-x"] and j["incident"]["certificate"]["ok"]
    md = r.markdown()
    assert "| kubelet | yes | 15.50 s | node2: removed orphan-x:" in md
    assert "| etcd-dr recover --yes | recover: quorum lost | etcd-stop |" in md
    text = _text(r)
    assert "  certificate  ok        20.0 s  hosts clock found master1:" in text
    assert "RTO to etcd writes 27.31 s; RTO to a ready API 21.5 s; RPO 0 of 7" in text
    assert "  etcd-dr recover --yes: recover plan, 9 steps (etcd-stop)" in text
    assert text.splitlines()[-2].startswith("OK: incident: every phase ok")
