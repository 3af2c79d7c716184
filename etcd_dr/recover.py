"""`etcd-dr recover`: observe, gather fencing evidence, plan (etcd_dr.recovery), ask, execute.

    res = recover(inv, yes=True, plan_only=False, say=print)
    res.status            # RecoverStatus.RECOVERED
    res.first_write_at    # wall clock of the recovered cluster's first accepted write

A recovery being executed is journalled beside the audit log (`recover-<cluster>.json`): a re-run
after a crash resumes that same plan (each step checks its postcondition first, so what is done is
skipped and the member is never forced twice) instead of planning afresh from a picture the half
done recovery has changed. The journal is renamed `recover-<cluster>-<ts>.done.json` once the plan
succeeded. A lock beside it lets one recovery per cluster run at a time.

Exit codes: 0 recovered (or --plan), 1 a step failed, another recovery runs, or the cluster is
not in a state to recover (quorum held, a voter not fenced), 2 not confirmed or bad input (nothing
changed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import enum
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.cliutil import add_inventory_arg, inventory_from_args
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import audit_log_for
from etcd_dr.fencing import gather
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Outcome, Plan, Step, StepRunner, execute
from etcd_dr.recovery import (
    FenceEvidence,
    RecoveryPath,
    SnapshotLike,
    VoterMethod,
    plan_recovery,
    recovery_path,
)
from etcd_dr.recovery_steps import Ctx, handlers
from etcd_dr.state import observe

Say = Callable[[str], None]
Confirm = Callable[[Plan], bool]


class RecoverStatus(enum.StrEnum):
    RECOVERED = "recovered"
    PLANNED = "planned"  # --plan: shown, nothing changed
    REFUSED = "refused"  # the planner refused (quorum held, a voter not fenced, ...)
    NOT_CONFIRMED = "not-confirmed"
    BUSY = "busy"  # another recovery of this cluster holds the lock: nothing done
    FAILED = "failed"


EXIT = {
    RecoverStatus.RECOVERED: 0,
    RecoverStatus.PLANNED: 0,
    RecoverStatus.REFUSED: 2,
    RecoverStatus.NOT_CONFIRMED: 2,
    RecoverStatus.BUSY: 1,
    RecoverStatus.FAILED: 1,
}


@dataclass(frozen=True)
class RecoverResult:
    status: RecoverStatus
    reason: str  # one sentence: the plan's decision, or why nothing was done
    plan: Plan
    path: RecoveryPath
    outcome: Outcome | None = None
    resumed: bool = False  # the plan came from the journal of an unfinished recovery
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # observe, fence, plan, execute
    first_write_at: float | None = None  # epoch seconds
    keys: int | None = None
    revision: int | None = None
    journal: str | None = None

    @property
    def exit_code(self) -> int:
        if self.status is RecoverStatus.REFUSED and self.plan.refusal is not None:
            return self.plan.refusal.exit_code  # quorum held, a voter not fenced: 1; bad input: 2
        return EXIT[self.status]

    def to_json(self) -> dict:
        return {
            "status": str(self.status),
            "ok": self.status in (RecoverStatus.RECOVERED, RecoverStatus.PLANNED),
            "reason": self.reason,
            "path": str(self.path),
            "resumed": self.resumed,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "first_write_at": self.first_write_at,
            "keys": self.keys,
            "revision": self.revision,
            "journal": self.journal,
            "plan": self.plan.to_json(),
            "steps": self.outcome.to_json()["steps"] if self.outcome else [],
        }


# --- the journal ---------------------------------------------------------------------------------


def journal_path(inv: Inventory) -> Path:
    if inv.audit_log is None:
        raise InputError(
            "audit_log: recovery needs an audit log (every step is recorded, and the recovery journal "
            "lives beside it); set audit_log in the inventory"
        )
    return inv.state_path(f"recover-{inv.cluster}.json")


def plan_from_json(d: dict) -> Plan:
    """The Plan that Plan.to_json() wrote (unknown keys ignored)."""
    step_fields = {f.name for f in dataclasses.fields(Step)}
    plan_fields = {f.name for f in dataclasses.fields(Plan)}
    steps = tuple(Step(**{k: v for k, v in s.items() if k in step_fields}) for s in d["steps"])
    return Plan(**{k: v for k, v in d.items() if k in plan_fields and k != "steps"}, steps=steps)


def load_journal(path: Path, cluster: str) -> Plan | None:
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: recovery journal unreadable ({e}); move it aside to plan afresh") from e
    if d.get("cluster") != cluster:
        raise InputError(f"{path}: journal of cluster {d.get('cluster')!r}, not {cluster!r}; move it aside")
    try:
        return plan_from_json(d["plan"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: recovery journal unreadable ({e}); move it aside to plan afresh") from e


def _write_journal(path: Path, plan: Plan) -> None:
    tmp = path.with_suffix(".part")
    body = {"cluster": plan.cluster, "started_at": time.time(), "plan": plan.to_json()}
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)


def _close_journal(path: Path) -> Path:
    done = path.with_name(f"{path.stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.done.json")
    os.replace(path, done)
    return done


@contextlib.contextmanager
def _recovery_lock(jpath: Path) -> Iterator[bool]:
    """An exclusive, non-blocking flock beside the journal: held for the whole recovery (planning
    included, so a second one cannot plan from a picture the first is changing). The kernel drops
    it when the holder dies, so a SIGKILLed recovery never leaves a stale lock behind."""
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


def _busy(inv: Inventory, jpath: Path) -> RecoverResult:
    why = (
        f"another recovery of cluster {inv.cluster} is running (it holds {jpath.with_suffix('.lock')}); "
        "nothing was done: wait for it, then check `etcd-dr status`"
    )
    audit = audit_log_for(inv)
    if audit is not None:
        audit.event(host="-", action="recover", outcome="busy", reason=why)
    empty = Plan(kind="recover", cluster=inv.cluster, reason=why)
    return RecoverResult(RecoverStatus.BUSY, why, empty, RecoveryPath.NONE)


def _quick_ssh(inv: Inventory) -> Inventory:
    """For observing only: SSH connects bounded by the etcd dial timeout, so that hosts that are
    gone cost what their etcd ports cost, not the longer SSH connect timeout (measured: 3.1 s ->
    2 s). A live host's SSH answers in 0.1-0.2 s; the steps themselves use the inventory's timeout."""
    t = min(inv.ssh.connect_timeout, inv.etcd.dial_timeout)
    return dataclasses.replace(inv, ssh=dataclasses.replace(inv.ssh, connect_timeout=t))


def _catalog(inv: Inventory) -> list[SnapshotLike]:
    """The cluster's cataloged snapshots (the planner picks the newest verified one), or none when
    the inventory has no snapshot directory."""
    from etcd_dr.snapshots.service import catalog_for  # the snapshot package is only needed here

    try:
        return list(catalog_for(inv).records(inv.cluster))
    except (EtcdDrError, OSError):
        return []  # an unreadable catalog: the snapshot path is refused, naming what is missing


# --- recover -------------------------------------------------------------------------------------


def recover(
    inv: Inventory,
    *,
    yes: bool,
    plan_only: bool,
    say: Say = print,
    confirm: Confirm | None = None,
    run_step: StepRunner | None = None,
    method: VoterMethod = VoterMethod.FORCE_NEW_CLUSTER,
    target: str | None = None,
) -> RecoverResult:
    """Observe, plan and (with yes, or confirm() saying so) execute the recovery. Without yes and
    without confirm, nothing is changed (NOT_CONFIRMED). `run_step` wraps each step (the Prefect
    flow makes each one a task run). One recovery per cluster at a time: a second one started while
    the first holds the lock is refused (BUSY), nothing changed."""
    jpath = journal_path(inv)
    with _recovery_lock(jpath) as held:
        if not held:
            return _busy(inv, jpath)
        return _recover(inv, jpath, yes, plan_only, say, confirm, run_step, method, target)


def _recover(
    inv: Inventory,
    jpath: Path,
    yes: bool,
    plan_only: bool,
    say: Say,
    confirm: Confirm | None,
    run_step: StepRunner | None,
    method: VoterMethod,
    target: str | None,
) -> RecoverResult:
    audit = audit_log_for(inv)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    plan = load_journal(jpath, inv.cluster)
    resumed = plan is not None
    evidence: dict[str, FenceEvidence] = {}
    evidence_at: float | None = None
    if plan is not None:
        say(f"resuming the unfinished recovery in {jpath}: {plan.reason}")
    else:
        # fencing evidence for every inventory voter while observing: dead hosts cost one timeout
        with cf.ThreadPoolExecutor(max_workers=1) as pool:
            early = pool.submit(gather, inv, [h.name for h in inv.voters])
            state = observe(_quick_ssh(inv))
            timings["observe"] = time.monotonic() - t0
            say(f"observed in {timings['observe']:.2f} s: {state.verdict}")
            evidence = dict(early.result())
        timings["fence"] = time.monotonic() - t0
        evidence_at = time.monotonic()
        hosts = [m.host for m in state.members if m.host and m.in_member_list and not m.is_learner]
        missing = [h for h in hosts if h not in evidence]  # a voter member the inventory lists otherwise
        if missing and not state.quorum:
            evidence.update(gather(inv, missing))
        t2 = time.monotonic()
        plan = plan_recovery(
            state, inv, fenced=evidence, method=method, snapshots=_catalog(inv), target=target
        )
        timings["plan"] = time.monotonic() - t2
    path = recovery_path(plan)

    def result(status: RecoverStatus, reason: str, **kw: object) -> RecoverResult:
        timings["total"] = time.monotonic() - t0
        if audit is not None:
            audit.event(host="-", action="recover", outcome=str(status), reason=reason, path=str(path))
        return RecoverResult(status, reason, plan, path, resumed=resumed, timings=timings, **kw)  # type: ignore[arg-type]

    if plan.refused:
        return result(RecoverStatus.REFUSED, plan.reason)
    if plan_only:
        return result(RecoverStatus.PLANNED, plan.reason)
    if not yes and not (confirm is not None and confirm(plan)):
        why = "not confirmed: nothing was changed; pass --yes to recover"
        return result(RecoverStatus.NOT_CONFIRMED, why)
    if not resumed:
        _write_journal(jpath, plan)  # first: a crash from here on resumes this plan
    c = Ctx(inv, plan, audit, say, evidence=evidence, evidence_at=evidence_at)  # reused while fresh
    t3 = time.monotonic()
    try:
        outcome = execute(plan, handlers(c), audit=audit, say=say, run_step=run_step)
    finally:
        c.close()
    timings["execute"] = time.monotonic() - t3
    for r in outcome.results:
        timings[f"step:{r.step.id}"] = r.duration_s
    extra = {"first_write_at": c.first_write_at, "keys": c.keys, "revision": c.revision}
    if not outcome.ok:
        failed = outcome.failed
        why = f"{failed.step.description}: {failed.error}" if failed else "a step did not finish"
        return result(
            RecoverStatus.FAILED,
            f"recovery failed at: {why}; run `etcd-dr recover` again to resume this plan",
            outcome=outcome,
            journal=str(jpath),
            **extra,
        )
    done = _close_journal(jpath)
    return result(RecoverStatus.RECOVERED, plan.reason, outcome=outcome, journal=str(done), **extra)


# --- CLI -----------------------------------------------------------------------------------------


def _ask(plan: Plan) -> bool:
    print(plan.render())
    answer = input(f"type {plan.cluster} to execute this recovery: ").strip()
    return answer == plan.cluster


def cmd_recover(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    say = (lambda _m: None) if args.json else print
    confirm = _ask if (not args.yes and not args.json and sys.stdin.isatty()) else None
    res = recover(
        inv,
        yes=args.yes,
        plan_only=args.plan,
        say=say,
        confirm=confirm,
        method=VoterMethod(args.method),
        target=args.target,
    )
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        if res.status in (RecoverStatus.PLANNED, RecoverStatus.NOT_CONFIRMED):
            if confirm is None:
                print(res.plan.render())
        elif res.status is RecoverStatus.RECOVERED:
            keys = f", {res.keys} keys, revision {res.revision}" if res.keys is not None else ""
            print(f"recovered in {res.timings['total']:.2f} s{keys}: {res.reason}")
        elif res.status is RecoverStatus.FAILED:
            print(f"FAILED after {res.timings['total']:.2f} s")
    if res.status not in (RecoverStatus.RECOVERED, RecoverStatus.PLANNED):
        print(f"etcd-dr: {res.reason}", file=sys.stderr)
    return res.exit_code


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recover",
        help="recover etcd after quorum loss (from the most advanced survivor, a learner or a snapshot)",
        description="Observe the cluster, gather fencing evidence, plan the recovery and, once "
        "confirmed, execute it. Refused while quorum holds or while another voter may still take part. "
        "An unfinished recovery (journal beside the audit log) is resumed, not planned again.",
    )
    add_inventory_arg(p)
    p.add_argument("--plan", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="execute without asking")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--method",
        choices=[str(m) for m in VoterMethod],
        default=str(VoterMethod.FORCE_NEW_CLUSTER),
        help="how a surviving voter becomes a one-member cluster: --force-new-cluster once (default; "
        "lost members that come back are told they were removed) or restore its own db (a new cluster "
        "id: only when the lost members will not come back, or are rejoined one at a time)",
    )
    p.add_argument(
        "--target",
        metavar="HOST",
        help="snapshot restore only: the voter to restore onto (default: the first voter that answers SSH)",
    )
    p.set_defaults(func=cmd_recover)
