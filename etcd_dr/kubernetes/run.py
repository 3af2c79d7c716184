"""`etcd-dr restore-kubernetes` (and `etcd-dr kubernetes up`): from a recovered etcd to a Kubernetes
API that answers with the objects it had. The one entry point the CLI and the flow share.

    res = restore_kubernetes(inv, yes=True, plan_only=False, say=print)
    res.status         # KubernetesStatus.RESTORED
    res.ready          # {"master3": None}: /readyz ok on each controlplane host
    res.counts_after   # the objects under /registry per resource prefix, after

Observe (status's look deadline), decide (etcd_dr.kubernetes.plan: the surviving plane, external
etcd, or RKE's refusal predicted), plan the steps (plan.restore_plan: ssl_old, etcd on it, RKE's
files, `rke up`, the API check), confirm (the plan shown first; --yes or confirm()), write the new
cluster.yml beside the operator's (clusteryml), execute (plans.execute; every step checks its
postcondition first and is audited). A run being executed is journalled in the state directory
(`kubernetes-<cluster>.json`): a re-run after a crash resumes that plan instead of deciding again
from a cluster the half-done run changed (etcd moved onto ssl_old, certificates regenerated). A
journal none of whose destructive steps had begun is closed and the run decides afresh.

The objects before the fault: `<state dir>/registry-counts.json` (apicheck.COUNTS_FILE; the lab's
`lab up` and `etcd-dr kubernetes counts --record` write it). Without one, the objects counted now on the
recovered etcd must all be there after `rke up` (said in the plan).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from etcd_dr import journal as journals
from etcd_dr.audit import AuditLog
from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.kubernetes import apicheck
from etcd_dr.kubernetes.clusteryml import recovered_path, render, write_recovered
from etcd_dr.kubernetes.decide import Decided, decide, look
from etcd_dr.kubernetes.importer import write_beside
from etcd_dr.kubernetes.plan import KubernetesDecision, RestoreFiles, restore_plan
from etcd_dr.kubernetes.rkefiles import state_path_for
from etcd_dr.kubernetes.steps import ApiCheckParams, Ctx, KubernetesAction, handlers, typed_plan
from etcd_dr.plans import (
    Outcome,
    Plan,
    StepRunner,
    execute,
)
from etcd_dr.state import client_for
from etcd_dr.stepctx import Say

Confirm = Callable[[Plan], bool]


class KubernetesStatus(enum.StrEnum):
    RESTORED = "restored"  # rke up succeeded and the API check held
    PLANNED = "planned"  # --plan: shown, nothing changed
    REFUSED = "refused"  # the decision refused (rke up would fail): the sentence and the fix
    NOT_CONFIRMED = "not-confirmed"
    BUSY = "busy"  # another restore of this cluster runs here: nothing done
    STALE = "stale"  # resumed after etcd changed under the plan: nothing done, journal closed
    FAILED = "failed"  # a step failed: a re-run resumes the journalled plan


@dataclass(frozen=True)
class KubernetesResult:
    status: KubernetesStatus
    reason: str
    plan: Plan
    decision: KubernetesDecision | None = None  # None: resumed from a journal (decided then)
    outcome: Outcome | None = None
    resumed: bool = False
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    ready: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # host -> None: ready
    counts_before: Mapping[str, int] = dataclasses.field(default_factory=dict)
    counts_after: Mapping[str, int] = dataclasses.field(default_factory=dict)
    counted: str = ""  # where counts_before come from
    journal: str | None = None
    diff: str = ""  # the new cluster.yml against the operator's (the client key as a placeholder)
    ready_at: float | None = None  # epoch seconds the API check held

    @property
    def ok(self) -> bool:
        return self.status in (KubernetesStatus.RESTORED, KubernetesStatus.PLANNED)

    def to_json(self) -> dict:
        prefixes = sorted({*self.counts_before, *self.counts_after})
        return {
            "status": str(self.status),
            "ok": self.ok,
            "reason": self.reason,
            "decision": self.decision.to_json() if self.decision else None,
            "resumed": self.resumed,
            "ready": {h: {"ready": said is None, "said": said} for h, said in self.ready.items()},
            "ready_at": self.ready_at,
            "objects": {
                "counted": self.counted,
                "per_resource": {
                    p: {"before": self.counts_before.get(p), "after": self.counts_after.get(p)}
                    for p in prefixes
                },
                "before": sum(self.counts_before.values()),
                "after": sum(self.counts_after.values()) if self.counts_after else None,
            },
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "journal": self.journal,
            "diff": self.diff,
            "plan": self.plan.to_json(),
            "steps": self.outcome.to_json()["steps"] if self.outcome else [],
        }


# --- the objects before the fault ----------------------------------------------------------------------


def counts_path(inv: Inventory) -> Path:
    return inv.state_path(apicheck.COUNTS_FILE)


def expected_counts(inv: Inventory, endpoints: list[str]) -> tuple[dict[str, int], str]:
    """The objects per resource prefix the API check compares against, and where they come from."""
    p = counts_path(inv)
    try:
        d = json.loads(p.read_text())
        return {str(k): int(v) for k, v in d.items()}, f"recorded before the fault ({p})"
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise InputError(
            f"{p}: the object counts recorded before the fault are unreadable ({e}); fix or move it aside"
        ) from None
    with client_for(inv, endpoints or None) as c:
        now = apicheck.registry_counts(c)
    return now, f"counted on the recovered etcd before rke up (no {p} recorded before the fault)"


@dataclass(frozen=True)
class Counted:
    """The objects under /registry per resource prefix now, and where they were recorded (if)."""

    counts: dict[str, int]
    recorded: Path | None = None
    moved_aside: Path | None = None  # the file recorded before (a different one), kept

    def to_json(self) -> dict:
        return {
            "ok": True,
            "counts": self.counts,
            "objects": sum(self.counts.values()),
            "recorded": str(self.recorded) if self.recorded else None,
            "moved_aside": str(self.moved_aside) if self.moved_aside else None,
        }


def count_objects(inv: Inventory, *, record: bool, client: EtcdClient | None = None) -> Counted:
    """Count the objects under /registry (one keys-only linearizable range: it needs quorum, as
    kube-apiserver's reads do) and, with record, keep them in the state directory as what the API
    check compares against after a fault (`etcd-dr kubernetes counts --record`, before one). A file
    recorded before with other counts is moved aside, never overwritten."""
    with contextlib.nullcontext(client) if client is not None else client_for(inv) as c:
        counts = apicheck.registry_counts(c)
    if not record:
        return Counted(counts)
    p = counts_path(inv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = write_beside(p, (json.dumps(counts, indent=2) + "\n").encode(), 0o644, stamp)
    return Counted(counts, p, aside)


# --- the journal -------------------------------------------------------------------------------------------


def journal_path(inv: Inventory) -> Path:
    return journals.journal_path(inv, journals.KUBERNETES)


# --- restore ----------------------------------------------------------------------------------------------


def restore_kubernetes(
    inv: Inventory,
    *,
    yes: bool,
    plan_only: bool,
    say: Say = print,
    confirm: Confirm | None = None,
    run_step: StepRunner | None = None,
) -> KubernetesResult:
    """Decide, plan and (with yes, or confirm() saying so) carry out the way back to a ready API.
    Without yes and without confirm nothing is changed (NOT_CONFIRMED). Bad input (no rke: section,
    RKE's files unreadable) raises InputError before any host is contacted."""
    jpath = journal_path(inv)
    if inv.rke is None:
        decide(inv)  # its InputError names the missing rke: section and the fix
    with journals.lock(jpath) as held:
        if not held:
            why = (
                f"another restore-kubernetes of cluster {inv.cluster} is running (it holds "
                f"{jpath.with_suffix('.lock')}); nothing was done: wait for it"
            )
            return KubernetesResult(KubernetesStatus.BUSY, why, Plan("kubernetes", inv.cluster, why))
        return _restore(inv, jpath, yes, plan_only, say, confirm, run_step)


def _restore(
    inv: Inventory,
    jpath: Path,
    yes: bool,
    plan_only: bool,
    say: Say,
    confirm: Confirm | None,
    run_step: StepRunner | None,
) -> KubernetesResult:
    audit = audit_log_for(inv)
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    journal = journals.load(jpath, inv.cluster, journals.KUBERNETES, typed_plan)
    if journal is not None and not journal.started:
        closed = journals.close(jpath, "closed")
        say(f"journal closed ({closed.name}): none of its destructive steps had begun; deciding afresh")
        journal = None
    decided: Decided | None = None
    diff = ""
    if journal is not None:
        plan, counted = journal.plan, str(journal.body.get("counted", ""))
        say(f"resuming the unfinished restore in {jpath}: {plan.reason}")
        basis = journal.body.get("basis")
        if basis:  # a journal written before the basis was recorded is resumed as it always was
            fresh = look(inv)
            timings["observe"] = time.monotonic() - t0
            why = journals.changed_since(journals.Basis.from_json(basis), fresh)
            if why:
                return _stale(inv, jpath, journal, why, audit, say, timings, t0)
    else:
        decided = decide(inv)
        timings["observe+decide"] = time.monotonic() - t0
        say(f"etcd: {decided.state.verdict}")
        d = decided.decision
        if d.ok:
            endpoints = [
                inv.client_url(inv.host(m.host))
                for m in decided.state.members
                if m.host and m.in_member_list and not m.is_learner and m.status is not None
            ]
            expected, counted = expected_counts(inv, endpoints)
            new_yml = recovered_path(decided.cluster_yml)
            files = RestoreFiles(str(new_yml), str(state_path_for(new_yml)), new_yml.name)
            diff = render(decided.cluster_yml.read_text(), decided.config, d).diff
        else:
            expected, counted, files = {}, "", RestoreFiles("", "", "")
        plan = restore_plan(
            d, decided.state, inv, decided.config, files, expected, counted=counted, diff=diff
        )
        timings["plan"] = time.monotonic() - t0 - timings["observe+decide"]
    resumed = journal is not None
    api = next((s for s in plan.steps if s.action == KubernetesAction.API_CHECK), None)
    before = dict(api.typed(ApiCheckParams).expected) if api is not None else {}

    def result(status: KubernetesStatus, reason: str, **kw: object) -> KubernetesResult:
        timings["total"] = time.monotonic() - t0
        if audit is not None:
            audit.event(host="-", action="restore-kubernetes", outcome=str(status), reason=reason)
        return KubernetesResult(
            status,
            reason,
            plan,
            decided.decision if decided else None,
            resumed=resumed,
            timings=timings,
            counts_before=before,
            counted=counted,
            diff=str(plan.params.get("diff") or ""),
            **kw,  # type: ignore[arg-type]
        )

    if plan.refused:
        return result(KubernetesStatus.REFUSED, plan.reason)
    if plan_only:
        return result(KubernetesStatus.PLANNED, plan.reason)
    if not yes and not (confirm is not None and confirm(plan)):
        return result(
            KubernetesStatus.NOT_CONFIRMED, "not confirmed: nothing was changed; pass --yes to restore"
        )
    if decided is not None:
        w = write_recovered(
            decided.cluster_yml, decided.state_file, decided.kube_config, decided.config, decided.decision
        )
        aside = "".join(f"; moved aside: {p}" for p in w.moved_aside)
        say(f"written: {w.cluster_yml}, {w.state_file}{aside}")
        # what the plan rests on goes with it: a resume checks the cluster against it first
        journals.write(jpath, plan, counted=counted, basis=journals.Basis.of(decided.state).to_json())
    c = Ctx(inv, audit, say)
    t1 = time.monotonic()
    try:
        outcome = execute(
            plan, handlers(c), audit=audit, say=say, run_step=journals.journalled(jpath, run_step)
        )
    finally:
        c.close()
    timings["execute"] = time.monotonic() - t1
    for r in outcome.results:
        timings[f"step:{r.step.id}"] = r.duration_s
    seen = {"ready": dict(c.ready), "counts_after": dict(c.counts)}
    if not outcome.ok:
        f = outcome.failed
        why = f"{f.step.description}: {f.error}" if f else "a step did not finish"
        return result(
            KubernetesStatus.FAILED,
            f"restore-kubernetes failed at: {why}; run `etcd-dr restore-kubernetes` again to resume "
            f"this plan (or, to decide afresh, move {jpath} aside first)",
            outcome=outcome,
            journal=str(jpath),
            **seen,
        )
    done = journals.close(jpath, "done")
    return result(
        KubernetesStatus.RESTORED,
        plan.reason,
        outcome=outcome,
        journal=str(done),
        ready_at=time.time(),
        **seen,
    )


def _stale(
    inv: Inventory,
    jpath: Path,
    journal: journals.Loaded,
    why: str,
    audit: AuditLog | None,
    say: Say,
    timings: dict[str, float],
    t0: float,
) -> KubernetesResult:
    """A journalled plan whose etcd changed in what it rests on: closed (moved aside), not resumed;
    nothing done. The sentence says what changed and to decide again."""
    closed = journals.close(jpath, "closed")
    begun = ", ".join(journal.started or ()) or "none"
    reason = (
        f"the cluster changed since this plan was made: {why}; this restore's journal is closed, not "
        f"resumed (steps it had begun: {begun}); nothing was done now: check `etcd-dr status`, then run "
        "`etcd-dr restore-kubernetes` again to decide from what the cluster is now"
    )
    say(f"journal closed ({closed.name}): {reason}")
    timings["total"] = time.monotonic() - t0
    if audit is not None:
        audit.event(
            host="-", action="restore-kubernetes", outcome="stale", reason=reason, journal=str(closed)
        )
    return KubernetesResult(
        KubernetesStatus.STALE, reason, journal.plan, resumed=True, timings=timings, journal=str(closed)
    )


__all__ = [
    "Counted",
    "KubernetesResult",
    "KubernetesStatus",
    "count_objects",
    "expected_counts",
    "journal_path",
    "restore_kubernetes",
]
