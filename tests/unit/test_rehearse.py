"""The rehearsal's pure parts: RPO and RTO from a writer's log, what a scenario loses, the verdict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from etcd_dr.cli.result import exit_for
from etcd_dr.errors import InputError
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.lab.rehearsal.measure import AllowedLoss, LossRule, analyze, loss_sentence
from etcd_dr.lab.rehearsal.report import MemberFacts, RecoveryFacts, RehearsalReport, RejoinFacts, judge
from etcd_dr.lab.rehearsal.scenarios import FaultPhase, Scenario, spec_for
from etcd_dr.lab.rehearsal.writer import Phase, WriteRecord
from etcd_dr.recovery.plan import RecoveryPath

INV = Inventory(
    cluster="t",
    hosts=(
        *(Host(f"master{i}", f"10.9.0.1{i}", frozenset({Role.ETCD, Role.CONTROLPLANE})) for i in (1, 2, 3)),
        Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER, Role.WORKER})),
        Host("node2", "10.9.0.22", frozenset({Role.WORKER})),
    ),
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
    rehearsal=True,
)
T0 = 1_000_000.0  # the fault began
T1 = T0 + 1.0  # it was complete


def w(
    seq: int, t: float, rev: int | None = None, *, phase: Phase = Phase.WRITER, took: float = 0.01
) -> WriteRecord:
    """A write sent at T0+t: acknowledged at `rev`, or failed when rev is None."""
    key = f"/r/{'data' if phase is Phase.DATASET else 'w'}/{seq:08d}"
    err = None if rev is not None else "put: no etcd endpoint answered"
    return WriteRecord(seq, phase, key, f"v{seq}", T0 + t, T0 + t + took, rev, "https://m3:2379", err)


def present(*recs: WriteRecord) -> dict[str, str]:
    return {r.key: r.value for r in recs}


LOG = (
    w(0, -5, 10, phase=Phase.DATASET),
    w(1, -4, 11, phase=Phase.DATASET),
    w(2, -0.5, 12),
    w(3, -0.02, 13),  # the last acknowledged before the fault
    w(4, 0.3, None, took=0.9),  # in flight while the hosts went: unknown outcome
    w(5, 1.5, None),
    w(6, 19.0, 14),  # the forced member accepts a write
    w(7, 19.5, None),  # then it is restarted without the flag: a second outage
    w(8, 27.3, 15),  # writes accepted for good
    w(9, 27.4, 16),
)


def test_nothing_lost_rto_is_writes_accepted_for_good() -> None:
    m = analyze(
        LOG, present(*(r for r in LOG if r.acked)), fault_at=T0, fault_done_at=T1, allowed=AllowedLoss.none()
    )
    assert (m.rpo_writes, m.acknowledged, m.unacknowledged, m.unacknowledged_landed) == (0, 7, 3, 0)
    assert m.dataset == m.dataset_present == 2
    assert m.first_write_s == pytest.approx(19.01)
    assert m.rto_s == pytest.approx(27.31)  # not the forced member's first write: the outage came back
    assert m.outages == 2
    assert m.last_ack_before is LOG[3] and m.restored is LOG[8]
    assert m.outage_s == pytest.approx(27.31 - (-0.01))
    assert loss_sentence(m, AllowedLoss.none()) == "RPO 0 of 7 acknowledged writes lost"


def test_one_outage_and_an_unacknowledged_write_that_landed() -> None:
    log = (w(0, -1, 5), w(1, 0.2, None, took=1.0), w(2, 12.0, 7), w(3, 12.1, 8))
    m = analyze(log, present(*log), fault_at=T0, fault_done_at=T1, allowed=AllowedLoss.none())
    assert m.rpo_writes == 0 and m.unacknowledged_landed == 1  # "outcome unknown" landed after all
    assert m.outages == 1 and m.rto_s == m.first_write_s == pytest.approx(12.01)


def test_a_lost_acknowledged_write_fails_when_the_plan_keeps_it() -> None:
    kept = present(*(r for r in LOG if r.acked and r.seq != 3))
    m = analyze(LOG, kept, fault_at=T0, fault_done_at=T1, allowed=AllowedLoss.none())
    assert m.rpo_writes == 1 and m.missing == (LOG[3],) and m.lost_beyond_plan == 1
    assert loss_sentence(m, AllowedLoss.none()) == (
        "RPO 1 of 7 acknowledged writes lost, 1 of them where the plan may lose none (revisions 13)"
    )
    # a changed value is lost data too
    changed = {**present(*(r for r in LOG if r.acked)), LOG[2].key: "other"}
    assert analyze(LOG, changed, fault_at=T0, fault_done_at=T1, allowed=AllowedLoss.none()).missing == (
        LOG[2],
    )


def test_losses_after_the_allowed_revision_are_within_the_plan() -> None:
    allowed = AllowedLoss(LossRule.BEYOND_SOURCE, 12, "the learner had applied up to revision 12")
    kept = present(*(r for r in LOG if r.acked and r.revision != 13))
    m = analyze(LOG, kept, fault_at=T0, fault_done_at=T1, allowed=allowed)
    assert (m.rpo_writes, m.lost_within_plan, m.lost_beyond_plan) == (1, 1, 0)
    assert loss_sentence(m, allowed) == (
        "RPO 1 of 7 acknowledged writes lost, all after revision 12 as the plan allowed "
        "(the learner had applied up to revision 12)"
    )
    snap = AllowedLoss(LossRule.BEYOND_SNAPSHOT, 11, "snapshot s1 holds revision 11")
    kept = present(*(r for r in LOG if r.acked and r.revision not in (12, 13)))
    m = analyze(LOG, kept, fault_at=T0, fault_done_at=T1, allowed=snap)
    assert (m.lost_within_plan, m.lost_beyond_plan) == (2, 0)
    m = analyze(LOG, present(LOG[0]), fault_at=T0, fault_done_at=T1, allowed=snap)  # 11 is kept, yet lost
    assert m.lost_beyond_plan == 1 and "at or below revision 11, which the plan keeps (revisions 11)" in (
        loss_sentence(m, snap)
    )


def test_no_write_accepted_after_the_fault() -> None:
    log = (w(0, -1, 5), w(1, 2, None), w(2, 3, None))
    m = analyze(log, present(log[0]), fault_at=T0, fault_done_at=T1, allowed=AllowedLoss.none())
    assert m.rto_s is None and m.first_write_s is None and m.outage_s is None and m.outages == 1


def test_scenarios_on_the_incident_inventory() -> None:
    inv = INV
    s = spec_for(Scenario.MASTERS_LOST, inv)
    assert s.lose_voters == ("master1", "master2") and s.lose_others == () and s.loss_rule is LossRule.NONE
    assert RecoveryPath.VOTER_RESTORE in s.expected_paths
    s = spec_for(Scenario.ALL_VOTERS_LOST, inv)
    assert s.lose_voters == ("master1", "master2", "master3") and s.expected_paths == (
        RecoveryPath.LEARNER_RESTORE,
    )
    assert s.loss_rule is LossRule.BEYOND_SOURCE and not s.needs_snapshot
    s = spec_for(Scenario.ALL_LOST, inv)
    assert s.lost == ("master1", "master2", "master3", "node1") and s.back_etcd_killed == ("master1",)
    assert s.needs_snapshot and s.loss_rule is LossRule.BEYOND_SNAPSHOT


def test_scenarios_that_need_a_learner_are_refused_without_one() -> None:
    inv = INV
    no_learner = dataclasses.replace(inv, hosts=tuple(h for h in inv.hosts if not h.is_learner))
    assert spec_for(Scenario.MASTERS_LOST, no_learner).lose_voters == ("master1", "master2")
    with pytest.raises(InputError, match="needs a learner in the inventory"):
        spec_for(Scenario.ALL_VOTERS_LOST, no_learner)


def _rejoined(ok: bool = True, revived: tuple[str, ...] = ()) -> RejoinFacts:
    members = tuple(MemberFacts(h, False, 900, 850) for h in ("master1", "master2", "master3"))
    return RejoinFacts(ok, "master1 is a voter again", 9.0, 3, 3, members, ok, revived)


def _measures(kept_all: bool = True):
    kept = present(*(r for r in LOG if r.acked and (kept_all or r.seq != 3)))
    return analyze(LOG, kept, fault_at=T0, fault_done_at=T1, allowed=AllowedLoss.none())


REC = RecoveryFacts("recovered", "voter-restore", "quorum lost: ...", recovered_on="master3")
PATHS = ("voter-restore", "force-new-cluster")


def test_verdict_sentences() -> None:
    ok, s = judge(Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), _rejoined())
    assert ok
    assert s == (
        "masters-lost recovered by voter-restore on master3: RTO 27.3 s (fault to writes accepted for good), "
        "first write 19.0 s, 2 outages; RPO 0 of 7 acknowledged writes lost; 0 unacknowledged writes landed; "
        "rejoined: 3 voters, revision 900 and 850 keys on every member"
    )
    ok, s = judge(Scenario.MASTERS_LOST, PATHS, REC, _measures(False), AllowedLoss.none(), _rejoined())
    assert not ok and "1 of them where the plan may lose none" in s
    ok, s = judge(Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), _rejoined(False))
    assert not ok and s.endswith("rejoin FAILED: master1 is a voter again")
    revived = ("master2 follows leader 2a (not the recovered member 3c) at revision 700",)
    ok, s = judge(
        Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), _rejoined(True, revived)
    )
    assert not ok and "OLD CLUSTER REVIVED before the rejoin: master2 follows leader 2a" in s
    fork = (
        "forked: the members form 2 clusters: master1, master2 (cluster 5ab9, leader master1, revision 102) "
        "and master3 (cluster 2c57, leader master3, revision 103)"
    )
    forked = dataclasses.replace(_rejoined(), fork=fork)
    ok, s = judge(Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), forked)
    assert not ok and f"; FORK after the lost hosts came back: {fork}" in s
    assert forked.to_json()["fork"] == fork
    refused = dataclasses.replace(forked, ok=False, verdict=f"{fork}; both sides accept writes: ...")
    ok, s = judge(Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), refused)
    assert not ok and s.endswith(f"FORK after the lost hosts came back: {fork}; rejoin refused on the fork")
    ok, s = judge(Scenario.MASTERS_LOST, ("learner-restore",), REC, _measures(), AllowedLoss.none(), None)
    assert not ok and s.endswith("(expected learner-restore)")
    gone = dataclasses.replace(_rejoined(), not_members=("node1",))
    ok, s = judge(Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), gone)
    assert ok and s.endswith("; no member at the end: node1 (to add again by hand)")


def test_verdict_when_the_recovery_failed_or_the_rehearsal_broke() -> None:
    failed = RecoveryFacts("failed", "learner-restore", "recovery failed at: restore ...")
    ok, s = judge(Scenario.ALL_VOTERS_LOST, ("learner-restore",), failed, None, None, None)
    assert not ok and s.startswith(
        "all-voters-lost: not recovered: the learner-restore path returned failed (recovery failed at"
    )
    ok, s = judge(Scenario.ALL_LOST, (), None, None, None, None, error="the snapshot was not verified")
    assert not ok and s == "all-lost: rehearsal did not complete: the snapshot was not verified"


def test_report_json_and_markdown() -> None:
    m = _measures()
    fault = FaultPhase(T0, T1, ("power loss of master1",), 1.0)
    ok, verdict = judge(Scenario.MASTERS_LOST, PATHS, REC, m, AllowedLoss.none(), _rejoined())
    r = RehearsalReport(
        Scenario.MASTERS_LOST, ok, verdict, "run1", {"prefix": "rh"}, "restore", fault, REC, m,
        AllowedLoss.none(), 13, None, _rejoined(), {"recover": 25.0}, "/tmp/x.jsonl",
    )  # fmt: skip
    j = r.to_json()
    assert (j["scenario"], j["ok"], j["rpo_writes"], j["acknowledged"], j["unacknowledged_landed"]) == (
        "masters-lost", True, 0, 7, 0,
    )  # fmt: skip
    assert j["rto_s"] == 27.31 and j["first_write_s"] == 19.01 and j["outages"] == 2
    assert j["recovery_path"] == "voter-restore" and j["rejoin"]["voters"] == 3  # type: ignore[index]
    assert j["allowed_loss"] == {"rule": "none", "after_revision": None, "why": AllowedLoss.none().why}
    assert exit_for(r.ok) == 0
    md = r.markdown()
    assert md.startswith(f"**{verdict}**") and "| RTO (fault to writes accepted for good) | 27.31 s |" in md
    assert "| master3 | no | 900 | 850 |" in md
