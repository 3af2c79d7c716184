"""The rehearsal's scenarios: which hosts are lost and how, what the recovery is expected to do and
what it may lose; and carrying the fault out and back through the fault core (etcd_dr.faults.steps,
the same core as `etcd-dr fault kill-master`).

- masters-lost: every voter but the last loses power (master1, master2); the survivor is a voter,
  so no acknowledged write may be lost.
- all-voters-lost: every voter loses power; the learner (node1, other data center) survives and is
  restored into a one-member cluster; it may be behind: writes it had not applied may be lost.
- all-lost: every etcd host loses power, then the first voter (master1) comes back with its etcd
  killed (`fault kill-master --mode etcd`): a host answers SSH, no member answers; the newest
  verified snapshot is restored, so everything after it may be lost.
- incident: the source incident from start to end: all-voters-lost (the learner restored), with
  kubelet on a worker (node2) put into its sandbox loop as the fault begins (`fault orphan-sandbox`),
  Kubernetes brought back through external etcd, the loop cleaned, and after the masters rejoined a
  member certificate dated ahead (`fault cert-not-yet-valid` on master1) found and renewed
  (etcd_dr.lab.rehearsal.incident).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import audit_log_for
from etcd_dr.faults.plan import FaultMode
from etcd_dr.faults.steps import FaultRun, heal, inject, inject_host_fault
from etcd_dr.inventory import Inventory, Role
from etcd_dr.lab import lifecycle
from etcd_dr.lab.config import LabConfig
from etcd_dr.lab.faults import controls_for
from etcd_dr.lab.rehearsal.measure import LossRule
from etcd_dr.recovery.plan import RecoveryPath
from etcd_dr.stepctx import Say

ETCD_BACK_S = 60.0  # a powered-on host: boot, dockerd, the etcd container (restart=always)


class RehearsalError(EtcdDrError):
    """A rehearsal could not be carried out (the fault, the lab): no verdict on the recovery."""


class Scenario(enum.StrEnum):
    MASTERS_LOST = "masters-lost"
    ALL_VOTERS_LOST = "all-voters-lost"
    ALL_LOST = "all-lost"
    INCIDENT = "incident"


class Return(enum.StrEnum):
    """How the lost hosts come back after the recovery."""

    TOGETHER = "together"  # all at once (the power comes back), then `rejoin --all`
    ONE_BY_ONE = "one-by-one"  # each powered on and rejoined before the next: no old majority forms


@dataclass(frozen=True)
class ScenarioSpec:
    scenario: Scenario
    lose_voters: tuple[str, ...]  # powered off through the fault core (kill-master --mode power)
    lose_others: tuple[str, ...]  # other etcd hosts (the learner): the lab's power control
    back_etcd_killed: tuple[str, ...]  # powered back on at once, then etcd killed (--mode etcd)
    expected_paths: tuple[RecoveryPath, ...]
    loss_rule: LossRule
    needs_snapshot: bool
    description: str  # one sentence
    # every voter back at once is the whole old cluster, alive again next to the recovered one:
    # those scenarios bring them back one at a time, as the recovery plan says to
    returns: Return = Return.TOGETHER
    # incident: the host faults of the source incident's last hours and Kubernetes brought back
    orphan_on: str | None = None  # a worker whose kubelet is put into its sandbox loop with the fault
    cert_on: str | None = None  # a voter whose certificate, reissued at its rejoin, is dated ahead
    kubernetes: bool = False  # restore-kubernetes after the recovery, as --through-kubernetes

    @property
    def lost(self) -> tuple[str, ...]:
        return (*self.lose_voters, *self.lose_others)


def spec_for(scenario: Scenario, inv: Inventory) -> ScenarioSpec:
    """The scenario on this inventory's hosts. Pure; InputError when the inventory cannot play it."""
    voters = [h.name for h in inv.voters]
    learners = [h.name for h in inv.hosts if h.is_learner]
    if len(voters) < 3:
        raise InputError(f"a rehearsal needs at least 3 voters in the inventory (it has {len(voters)})")
    if scenario is Scenario.MASTERS_LOST:
        lost = tuple(voters[:-1])
        return ScenarioSpec(
            scenario, lost, (), (),
            (RecoveryPath.VOTER_RESTORE, RecoveryPath.FORCE_NEW_CLUSTER), LossRule.NONE, False,
            f"{_and(lost)} lose power; {voters[-1]} survives and is recovered as a one-member cluster",
        )  # fmt: skip
    if not learners:
        raise InputError(
            f"{scenario} needs a learner in the inventory (role etcd-learner): build the lab with "
            "`--learner` (the rehearsal does)"
        )
    if scenario is Scenario.INCIDENT:
        worker = next((h.name for h in inv.hosts if Role.WORKER in h.roles and not h.runs_etcd), None)
        if worker is None or inv.rke is None:
            raise InputError(
                "the incident needs a worker that runs no etcd member (node2) and the inventory's rke: "
                "section (the lab as RKE left it: `lab up` writes both)"
            )
        return ScenarioSpec(
            scenario, tuple(voters), (), (),
            (RecoveryPath.LEARNER_RESTORE,), LossRule.BEYOND_SOURCE, False,
            f"every voter ({_and(voters)}) loses power while kubelet on {worker} is in its sandbox loop; the "
            f"learner {_and(learners)} is restored into a new one-member cluster, Kubernetes comes back "
            f"through external etcd, {worker}'s loop is cleaned, the masters rejoin one by one and "
            f"{voters[0]}'s certificate, dated ahead, is found and renewed", Return.ONE_BY_ONE,
            orphan_on=worker, cert_on=voters[0], kubernetes=True,
        )  # fmt: skip
    if scenario is Scenario.ALL_VOTERS_LOST:
        return ScenarioSpec(
            scenario, tuple(voters), (), (),
            (RecoveryPath.LEARNER_RESTORE,), LossRule.BEYOND_SOURCE, False,
            f"every voter ({_and(voters)}) loses power; the learner {_and(learners)} survives and its db "
            "is restored into a new one-member cluster", Return.ONE_BY_ONE,
        )  # fmt: skip
    return ScenarioSpec(
        scenario, tuple(voters), tuple(learners), (voters[0],),
        (RecoveryPath.SNAPSHOT_RESTORE,), LossRule.BEYOND_SNAPSHOT, True,
        f"every etcd host ({_and([*voters, *learners])}) loses power, then {voters[0]} comes back with its "
        "etcd killed; the newest verified snapshot is restored onto it", Return.ONE_BY_ONE,
    )  # fmt: skip


@dataclass(frozen=True)
class FaultPhase:
    at: float  # epoch: the first host was lost
    done_at: float  # epoch: the last host was lost (quorum gone)
    actions: tuple[str, ...]  # what was done, one sentence each
    duration_s: float

    def to_json(self) -> dict[str, object]:
        return {
            "at": round(self.at, 3),
            "done_at": round(self.done_at, 3),
            "actions": list(self.actions),
            "duration_s": round(self.duration_s, 3),
        }


def _checked(run: FaultRun, what: str) -> str:
    if not run.ok:
        failed = run.outcome.failed if run.outcome else None
        why = f"{failed.step.description}: {failed.error}" if failed else run.plan.reason
        raise RehearsalError(f"{what} failed: {why}")
    return f"{what}: {run.plan.reason} ({run.duration_s:.2f} s)"


def _audit(inv: Inventory, host: str, action: str, reason: str) -> None:
    audit = audit_log_for(inv)
    if audit is not None:
        audit.event(host=host, action=action, outcome="ok", reason=reason)


def inject_scenario(inv: Inventory, lab: LabConfig, spec: ScenarioSpec, say: Say) -> FaultPhase:
    """Lose the scenario's hosts, one after the other, the way `etcd-dr fault kill-master` does.
    The incident's orphaned sandbox comes first (`fault orphan-sandbox`), so that kubelet is in its
    loop when the masters go, and the RTO still counts from the first host lost."""
    t0 = time.monotonic()
    actions: list[str] = []
    if spec.orphan_on is not None:
        h = spec.orphan_on
        actions.append(
            _checked(
                inject_host_fault(inv, h, FaultMode.ORPHAN_SANDBOX, say=say, lab=controls_for(inv)),
                f"orphaned sandbox on {h}",
            )
        )
    at = time.time()
    for host in spec.lose_voters:
        actions.append(
            _checked(
                inject(inv, host, FaultMode.POWER, say=say, lab=controls_for(inv)), f"power loss of {host}"
            )
        )
    for host in spec.lose_others:
        # kill-master takes voters only (a learner is no master): the lab's own power control
        lifecycle.power_off(lab, host, say=say)
        why = f"rehearsal {spec.scenario}: power loss of {host} (not a voter: the lab's power control)"
        _audit(inv, host, "rehearsal-power-off", why)
        actions.append(why)
    done_at = time.time()
    for host in spec.back_etcd_killed:
        actions.append(
            _checked(heal(inv, host, wait=False, say=say, lab=controls_for(inv)), f"power {host} back on")
        )
        _wait_etcd_running(lab, host)
        actions.append(
            _checked(
                inject(inv, host, FaultMode.ETCD, say=say, lab=controls_for(inv)), f"etcd killed on {host}"
            )
        )
    return FaultPhase(at, done_at, tuple(actions), time.monotonic() - t0)


def _wait_etcd_running(lab: LabConfig, host: str, timeout: float = ETCD_BACK_S) -> None:
    """After a power on, docker brings the etcd container back (restart=always): wait for it, so that
    the kill that follows kills it rather than racing its start."""
    end = time.monotonic() + timeout
    while True:
        try:
            if lifecycle.runtime(lifecycle.load_state(lab), host).is_running():
                return
        except EtcdDrError:
            pass  # dockerd not up yet
        if time.monotonic() > end:
            raise RehearsalError(f"etcd on {host} did not come back within {timeout:.0f} s of its power on")
        time.sleep(0.3)


def bring_back(inv: Inventory, lab: LabConfig, spec: ScenarioSpec, host: str, say: Say) -> str:
    """After the recovery, one lost host comes back: its fault undone (without waiting for its
    member, which the recovered cluster does not know: `rejoin` brings it back), or, for a host
    the lab powered off itself, powered on. For the recovered host itself (all-lost: its etcd was
    killed, the recovery started a new one), only its fault record is closed."""
    if host in spec.lose_others:
        lifecycle.power_on(lab, host, say=say)
        why = f"rehearsal {spec.scenario}: {host} powered back on (the lab's power control)"
        _audit(inv, host, "rehearsal-power-on", why)
        return why
    return _checked(heal(inv, host, wait=False, say=say, lab=controls_for(inv)), f"{host} back")


def _and(names: list[str] | tuple[str, ...]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
