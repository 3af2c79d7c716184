"""plan_fault / plan_heal (pure) and the fault ledger."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from etcd_dr.errors import InputError
from etcd_dr.faults.plan import (
    CertAheadParams,
    CertRestoreParams,
    FaultAction,
    FaultLedger,
    FaultMode,
    OrphanParams,
    Via,
    plan_cert_not_yet_valid,
    plan_fault,
    plan_heal,
    plan_orphan_sandbox,
)
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.plans import params_json

NOW = dt.datetime(2026, 11, 27, 9, 41, 0, tzinfo=dt.UTC)
INV = Inventory(
    cluster="t",
    hosts=(
        Host("master1", "10.9.0.11", frozenset({Role.ETCD, Role.CONTROLPLANE})),
        Host("master2", "10.9.0.12", frozenset({Role.ETCD, Role.CONTROLPLANE})),
        Host("node2", "10.9.0.22", frozenset({Role.WORKER})),
    ),
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
    rehearsal=True,
)


def fault(host="master1", mode=FaultMode.POWER, via=Via.LAB, inv=INV, **kw):
    return plan_fault(inv, host, mode, via=via, now=NOW, **kw)


def test_refused_unless_the_inventory_is_marked_for_rehearsal() -> None:
    plan, rec = fault(inv=dataclasses.replace(INV, rehearsal=False))
    assert plan.refused and rec is None and not plan.steps
    assert plan.reason == (
        "fault injection refused: cluster t is not marked for rehearsal (the inventory has rehearsal: "
        "false); set `rehearsal: true` only in the inventory of a cluster meant for drills"
    )


def test_refused_on_a_host_that_is_not_a_voter_and_bad_host_is_input_error() -> None:
    plan, rec = fault("node2")
    assert plan.refused and rec is None
    assert plan.reason.endswith(
        "node2 is not an etcd voter (roles: worker); kill-master takes one of master1, master2"
    )
    with pytest.raises(InputError, match="no host named 'nosuch'"):
        fault("nosuch")


def test_power_on_a_real_host_needs_the_explicit_flag_and_is_not_reversible() -> None:
    plan, _ = fault(via=Via.SSH)
    assert plan.refused and "pass --power-off-real-host" in plan.reason
    plan, rec = fault(via=Via.SSH, power_off_real_host=True)
    assert not plan.refused and rec is not None and not rec.reversible
    assert plan.steps[0].action == "poweroff"
    assert "cannot be healed remotely" in plan.reason


def test_a_second_fault_on_the_same_host_is_refused() -> None:
    _, rec = fault()
    plan, _ = fault(mode=FaultMode.ETCD, active=[rec])
    assert plan.refused and "master1 already has an active fault (power" in plan.reason
    plan, _ = fault("master2", active=[rec])
    assert not plan.refused


@pytest.mark.parametrize(
    ("mode", "via", "action"),
    [
        (FaultMode.POWER, Via.LAB, "lab-power-off"),
        (FaultMode.NETWORK, Via.LAB, "lab-unplug"),
        (FaultMode.ETCD, Via.LAB, "etcd-kill"),
        (FaultMode.ETCD, Via.SSH, "etcd-kill"),
        (FaultMode.NETWORK, Via.SSH, "iptables-drop"),
    ],
)
def test_one_destructive_step_with_a_checkable_postcondition(mode, via, action) -> None:
    plan, rec = fault(mode=mode, via=via)
    assert rec is not None and rec.reversible and rec.id == f"master1-{mode}-20261127T094100000000Z"
    (step,) = plan.steps
    assert step.action == action and step.destructive
    assert "master1 does not answer on 2379" in step.postcondition
    assert plan.reason.startswith("rehearsal fault on t: ") and plan.reason.endswith(
        "`etcd-dr fault heal --host master1` undoes it"
    )


def test_network_cut_rules_are_tagged_and_keep_loopback() -> None:
    plan, rec = fault(mode=FaultMode.NETWORK, via=Via.SSH)
    rules = params_json(plan.steps[0].params)["rules"]  # typed: as the plan's JSON shows them
    assert all(r[r.index("--comment") + 1] == rec.tag for r in rules)
    assert rules[0][:5] == ["iptables", "-w", "5", "-I", "INPUT"] and "2379,2380" in rules[0]
    assert rules[0][5:8] == ["!", "-i", "lo"]


def test_heal_undoes_everything_first_then_waits_for_each_member() -> None:
    _, a = fault()
    _, b = fault("master2", mode=FaultMode.NETWORK, via=Via.SSH)
    plan = plan_heal(INV, [a, b])
    assert [s.action for s in plan.steps] == ["lab-power-on", "iptables-undrop", "wait-member", "wait-member"]
    assert params_json(plan.steps[1].params)["tag"] == b.tag
    assert plan.reason == "heal 2 active faults: master1 (power), master2 (network)"
    empty = plan_heal(INV, [])
    assert not empty.steps and not empty.refused and empty.reason == "no active fault: nothing to heal"


def test_heal_without_waiting_only_undoes() -> None:
    """After a recovery the returning member is refused by design: heal(wait=False) powers it on and
    leaves the member to `etcd-dr rejoin` (the rehearsal does this)."""
    _, a = fault()
    plan = plan_heal(INV, [a], wait=False)
    assert [s.action for s in plan.steps] == ["lab-power-on"]
    assert plan.reason.endswith("(not waiting for the members: they rejoin separately)")


def test_ledger_round_trip_and_needs_an_audit_log(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="audit_log: fault injection needs an audit log"):
        FaultLedger.for_inventory(INV)
    ledger = FaultLedger.for_inventory(dataclasses.replace(INV, audit_log=tmp_path / "audit.jsonl"))
    assert ledger.path == tmp_path / "faults-t.json" and ledger.active() == []
    _, a = fault()
    _, b = fault("master2", mode=FaultMode.ETCD)
    ledger.add(a)
    ledger.add(b)
    ledger.add(a)  # idempotent
    assert ledger.active() == [b, a]
    ledger.remove([a.id])
    assert ledger.active() == [b]


# --- host faults: orphan-sandbox, cert-not-yet-valid -------------------------------------------------

AT = dt.datetime(2026, 6, 1, 4, 49, 1, tzinfo=dt.UTC)


def test_host_faults_are_guarded_like_the_others_and_kill_master_keeps_its_modes() -> None:
    off = dataclasses.replace(INV, rehearsal=False)
    plan, rec = plan_orphan_sandbox(off, "master1", via=Via.LAB, now=AT, sandbox_id="a" * 64)
    assert plan.refused and rec is None and "not marked for rehearsal" in plan.reason
    plan, rec = plan_cert_not_yet_valid(off, "master1", via=Via.LAB, now=AT, ips=(), dns=())
    assert plan.refused and rec is None
    with pytest.raises(InputError, match="kill-master takes power, etcd, network"):
        fault(mode=FaultMode.ORPHAN_SANDBOX)


def test_orphan_sandbox_then_heal_removes_exactly_its_container_and_waits_for_no_member() -> None:
    plan, rec = plan_orphan_sandbox(INV, "master2", via=Via.SSH, now=AT, sandbox_id="a" * 64)
    assert rec is not None and rec.mode is FaultMode.ORPHAN_SANDBOX and rec.reversible
    create, into_loop = plan.steps
    assert create.action is FaultAction.CREATE_ORPHAN and create.typed(OrphanParams).sandbox_id == "a" * 64
    assert into_loop.action is FaultAction.KUBELET_INTO_LOOP
    busy, _ = plan_orphan_sandbox(INV, "master2", via=Via.SSH, now=AT, sandbox_id="b" * 64, active=[rec])
    assert busy.refused and "already has an active fault" in busy.reason
    heal = plan_heal(INV, [rec])
    assert [s.action for s in heal.steps] == [FaultAction.REMOVE_ORPHAN, FaultAction.KUBELET_SETTLE]


def test_cert_not_yet_valid_keeps_the_old_pair_and_heal_puts_it_back() -> None:
    plan, rec = plan_cert_not_yet_valid(INV, "master1", via=Via.LAB, now=AT, ips=("10.9.0.11",), dns=("m1",))
    assert rec is not None
    ahead, restart = plan.steps
    p = ahead.typed(CertAheadParams)
    assert p.hours == 8.0 and p.kept_suffix == f"before-{rec.id}" and p.ips == ("10.9.0.11",)
    assert restart.action is FaultAction.MEMBER_RESTART
    heal = plan_heal(INV, [rec])
    assert [s.action for s in heal.steps] == [FaultAction.CERT_RESTORE, FaultAction.WAIT_MEMBER]
    assert heal.steps[0].typed(CertRestoreParams).kept_suffix == p.kept_suffix
    with pytest.raises(InputError, match="--hours"):
        plan_cert_not_yet_valid(INV, "master1", via=Via.LAB, now=AT, ips=(), dns=(), hours=0)
