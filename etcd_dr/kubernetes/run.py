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
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.kubernetes import apicheck
from etcd_dr.kubernetes.clusteryml import recovered_path, render, write_recovered
from etcd_dr.kubernetes.decide import Decided, decide
from etcd_dr.kubernetes.importer import write_beside
from etcd_dr.kubernetes.plan import KubernetesDecision, RestoreFiles, restore_plan
from etcd_dr.kubernetes.rkefiles import state_path_for
from etcd_dr.kubernetes.steps import ApiCheckParams, Ctx, KubernetesAction, handlers, typed_plan
from etcd_dr.plans import (
    Outcome,
    ParamsError,
    Plan,
    Step,
    StepBody,
    StepResult,
    StepRunner,
    execute,
    plan_from_json,
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
    if inv.audit_log is None:
        raise InputError(
            "audit_log: restore-kubernetes needs an audit log (every step is recorded, and its journal "
            "lives beside it); set audit_log in the inventory"
        )
    return inv.state_path(f"kubernetes-{inv.cluster}.json")


def _write_json(path: Path, body: dict) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)


def _load_journal(path: Path, cluster: str) -> tuple[Plan, list[str], str] | None:
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: journal unreadable ({e}); move it aside to decide afresh") from None
    try:
        if d.get("cluster") != cluster:
            other = d.get("cluster")
            raise InputError(f"{path}: journal of cluster {other!r}, not {cluster!r}; move it aside")
        plan = typed_plan(plan_from_json(d["plan"]))
        return plan, [str(s) for s in d.get("started") or []], str(d.get("counted", ""))
    except (ParamsError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(
            f"{path}: journal written by another version of etcd-dr ({e}); it cannot be resumed: move it "
            f"aside (mv {path} {path}.old) and run `etcd-dr restore-kubernetes` again"
        ) from None


def _close(path: Path, suffix: str) -> Path:
    done = path.with_name(f"{path.stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{suffix}.json")
    os.replace(path, done)
    return done


@contextlib.contextmanager
def _lock(jpath: Path) -> Iterator[bool]:
    """One restore per cluster and state directory (the kernel drops a dead holder's flock)."""
    jpath.parent.mkdir(parents=True, exist_ok=True)
    with open(jpath.with_suffix(".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _journalled(jpath: Path, run_step: StepRunner | None) -> StepRunner:
    """A destructive step is recorded in the journal as begun before it runs."""
    inner = run_step or (lambda _step, body: body())

    def wrap(step: Step, body: StepBody) -> StepResult:
        def journalled() -> StepResult:
            if step.destructive:
                d = json.loads(jpath.read_text())
                if step.id not in d["started"]:
                    d["started"].append(step.id)
                    _write_json(jpath, d)
            return body()

        return inner(step, journalled)

    return wrap


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
    with _lock(jpath) as held:
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
    journal = _load_journal(jpath, inv.cluster)
    if journal is not None and not journal[1]:
        closed = _close(jpath, "closed")
        say(f"journal closed ({closed.name}): none of its destructive steps had begun; deciding afresh")
        journal = None
    decided: Decided | None = None
    diff = ""
    if journal is not None:
        plan, _started, counted = journal
        say(f"resuming the unfinished restore in {jpath}: {plan.reason}")
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
        _write_json(
            jpath,
            {
                "cluster": inv.cluster,
                "started_at": time.time(),
                "started": [],
                "counted": counted,
                "plan": plan.to_json(),
            },
        )
    c = Ctx(inv, audit, say)
    t1 = time.monotonic()
    try:
        outcome = execute(plan, handlers(c), audit=audit, say=say, run_step=_journalled(jpath, run_step))
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
    done = _close(jpath, "done")
    return result(
        KubernetesStatus.RESTORED,
        plan.reason,
        outcome=outcome,
        journal=str(done),
        ready_at=time.time(),
        **seen,
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
