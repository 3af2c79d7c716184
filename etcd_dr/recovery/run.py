"""`etcd-dr recover`: observe, gather fencing evidence, plan (etcd_dr.recovery.plan), ask, execute.

    res = recover(inv, yes=True, plan_only=False, say=print)
    res.status            # RecoverStatus.RECOVERED
    res.first_write_at    # wall clock of the recovered cluster's first accepted write

A recovery being executed is journalled beside the audit log (`recover-<cluster>.json`): a re-run
after a crash resumes that same plan (each step checks its postcondition first, so what is done is
skipped and the member is never forced twice) instead of planning afresh from a picture the half
done recovery has changed. The journal is renamed `recover-<cluster>-<ts>.done.json` once the plan
succeeded. A lock beside it lets one recovery per cluster run at a time.

`etcd-dr recover` exits (the mapping is etcd_dr/cli/result.py's): 0 recovered (or --plan), 1 a step
failed, another recovery runs, or the cluster is not in a state to recover (quorum held, a voter not
fenced), 2 not confirmed or bad input (nothing changed).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from etcd_dr import audit as audit_mod
from etcd_dr import journal as journals
from etcd_dr.audit import AuditLog
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import Executor, audit_log_for, executor_for
from etcd_dr.inventory import Inventory
from etcd_dr.plans import (
    Outcome,
    Plan,
    Step,
    StepResult,
    StepRunner,
    StepState,
    execute,
)
from etcd_dr.recovery.fencing import attest, gather, powered_off, probe
from etcd_dr.recovery.incident import Incident, changed_since, changed_under, healthy_without, plan_target
from etcd_dr.recovery.lease import ClusterLease, controller_id, owner_text
from etcd_dr.recovery.plan import (
    FenceEvidence,
    FenceKind,
    LogEnd,
    RecoveryPath,
    SnapshotLike,
    VoterMethod,
    plan_recovery,
    recovery_path,
)
from etcd_dr.recovery.steps import Ctx, RecoveryAction, VerifyParams, handlers, typed_plan
from etcd_dr.state import LOOK_DEADLINE_S, ClusterState, Reach, observe
from etcd_dr.stepctx import Say

Confirm = Callable[[Plan], bool]


@dataclass(frozen=True)
class Attestation:
    """An operator's explicit word that these voters are down (`--confirm-down HOST`, the approval
    form): recorded in the audit log with `by`, and named in the plan's risk sentence."""

    hosts: tuple[str, ...]
    by: str
    via: str  # "--confirm-down", "the approval form"

    def check(self, inv: Inventory) -> None:
        for h in self.hosts:
            if not inv.host(h).is_voter:  # InputError for an unknown host
                raise InputError(f"--confirm-down {h}: {h} is not an etcd voter; name a lost voter")
        if not self.by.strip():
            raise InputError("attestation: who attests is missing; give your name")


# an attended run's way to ask for an attestation when only silent voters stand in the way
Attest = Callable[[Plan], Attestation | None]


class RecoverStatus(enum.StrEnum):
    RECOVERED = "recovered"
    PLANNED = "planned"  # --plan: shown, nothing changed
    REFUSED = "refused"  # the planner refused (quorum held, a voter not fenced, ...)
    NOT_CONFIRMED = "not-confirmed"
    BUSY = "busy"  # another recovery of this cluster holds the lock or the lease: nothing done
    STALE = "stale"  # the cluster changed since the plan was made: nothing done, journal closed
    FAILED = "failed"


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
    return journals.journal_path(inv, journals.RECOVER)


@dataclass(frozen=True)
class Journal:
    """An unfinished recovery: its plan, the incident it was made for, and the destructive steps
    it had begun (each is recorded before it runs). A journal of an older format has no incident,
    and counts every step as begun: it is resumed as it always was."""

    plan: Plan
    incident: Incident | None
    started: tuple[str, ...]


def load_journal(path: Path, cluster: str) -> Journal | None:
    j = journals.load(path, cluster, journals.RECOVER, typed_plan)
    if j is None:
        return None
    try:
        incident = Incident.from_json(j.body["incident"]) if j.body.get("incident") else None
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: recovery journal unreadable ({e}); move it aside to plan afresh") from e
    begun = tuple(s.id for s in j.plan.steps) if j.started is None else j.started
    return Journal(j.plan, incident, begun)


def _write_journal(
    path: Path, plan: Plan, incident: Incident | None = None, started: Sequence[str] = ()
) -> None:
    journals.write(path, plan, started=started, incident=incident.to_json() if incident else None)


_mark_started = journals.mark_started
_close_journal = journals.close


def _record_attestation(audit: AuditLog | None, a: Attestation | None) -> None:
    if audit is not None and a is not None:
        audit.event(
            host="-",
            action="recover-attestation",
            outcome="ok",
            reason=f"{a.by} attests {', '.join(a.hosts)} down ({a.via})",
            hosts=list(a.hosts),
            attester=a.by,
            via=a.via,
        )


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


def _log_end(inv: Inventory, error: str = "") -> LogEnd | None:
    """Where the delta log ends for the newest verified snapshot (the one a restore takes), or
    None: no log, or it does not continue that snapshot."""
    from datetime import UTC, datetime

    from etcd_dr.deltalog.service import summary  # the delta log is only needed here

    snaps = [s for s in _catalog(inv) if s.verified]
    try:
        sm = summary(inv)
        if not snaps or sm is None:
            return None
        snap = max(snaps, key=lambda s: (s.created, s.id))
        n = sm.rolls_forward_to(snap.revision)
        if n is None:
            return None
        rec = next(iter(sm.log.records(n, n)), None) if n in range(*_span_of(sm.spans, n)) else None
    except (EtcdDrError, OSError):
        return None

    def when(t: float | None) -> datetime | None:
        return datetime.fromtimestamp(t, UTC) if t is not None else None

    heard = sm.status.heard_at if sm.status is not None else None
    return LogEnd(n, when(rec.at if rec is not None else None), when(heard), error, snap.revision)


def _span_of(spans: Sequence[tuple[int, int]], n: int) -> tuple[int, int]:
    """range() bounds of the span holding revision n (empty when none does)."""
    return next(((a, b + 1) for a, b in spans if a <= n <= b), (0, 0))


def _roll_forward(inv: Inventory, say: Say, audit: AuditLog | None) -> LogEnd | None:
    """The all-lost path with a delta log: the newest verified snapshot rolled forward to the last
    revision on record first (a local file and a catalog record; no host is touched). A failure is
    said and kept in the plan's sentence; the restore then goes on from the snapshot itself."""
    from etcd_dr.deltalog.service import roll_forward

    try:
        res = roll_forward(inv)
    except EtcdDrError as e:
        say(f"the delta log could not roll the snapshot forward: {e}")
        if audit is not None:
            audit.event(host="localhost", action="deltalog-roll-forward", outcome="failed", reason=str(e))
        return _log_end(inv, error=str(e))
    r = res.replayed
    say(
        f"rolled snapshot {res.source} forward to revision {res.target.revision} with the delta log: "
        f"{r.records} transactions in {r.duration_s:.2f} s; {res.check}"
    )
    if audit is not None:
        audit.event(
            host="localhost",
            action="deltalog-roll-forward",
            outcome="ok",
            reason=res.record.reason,
            snapshot=res.record.id,
            revision=res.target.revision,
        )
    return _log_end(inv)


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
    attestation: Attestation | None = None,
    attest: Attest | None = None,
) -> RecoverResult:
    """Observe, plan and (with yes, or confirm() saying so) execute the recovery. Without yes and
    without confirm, nothing is changed (NOT_CONFIRMED). `run_step` wraps each step (the Prefect
    flow makes each one a task run). One recovery per cluster at a time: a second one started while
    the first holds the lock is refused (BUSY), nothing changed. `attestation`: voters an operator
    explicitly attests are down; `attest(refused plan)`: asked (the flow's form) when only voters
    without evidence stand in the way. A run with yes and neither is unattended: it goes on only on
    power-off or stopped-etcd evidence. Bad input raises InputError before any host is contacted."""
    if target is not None and not inv.host(target).is_voter:
        raise InputError(
            f"target: {target} is not an etcd voter in the inventory; pick one of "
            f"{', '.join(h.name for h in inv.voters)}"
        )
    if attestation is not None:
        attestation.check(inv)
    jpath = journal_path(inv)
    with journals.lock(jpath) as held:
        if not held:
            return _busy(inv, jpath)
        return _recover(
            inv, jpath, yes, plan_only, say, confirm, run_step, method, target, attestation, attest
        )


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
    attestation: Attestation | None,
    attest_fn: Attest | None,
) -> RecoverResult:
    audit = audit_log_for(inv)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    journal = load_journal(jpath, inv.cluster)
    evidence: dict[str, FenceEvidence] = {}
    evidence_at: float | None = None
    state: ClusterState | None = None
    if journal is not None and not journal.started:
        # nothing of it changed a host: a plan made from an old picture is not worth resuming
        why = "none of its destructive steps had begun; planning afresh from a new observation"
        _closed(audit, _close_journal(jpath, "closed"), journal.plan, why, say)
        journal = None
    if journal is not None:
        plan, incident = journal.plan, journal.incident
        say(f"resuming the unfinished recovery in {jpath}: {plan.reason}")
        state = observe(_quick_ssh(inv))
        timings["observe"] = time.monotonic() - t0
        stop = _resume_check(incident, state, plan)
        if stop:
            return _stale_journal(inv, jpath, journal, *stop, audit, say, timings, t0)
    else:
        # The power drivers first (they ask no host): a voter powered off is neither dialed by the
        # look nor asked to probe, so it costs no timeout at all. Then fencing evidence and the
        # partition probe for every inventory voter while observing; the probe's dials are bounded
        # by the look's deadline (a LAN connect takes milliseconds; 1.2 s leaves a SYN retry), and
        # a voter it misses is still fenced only on evidence of its own.
        quick = _quick_ssh(inv)
        voters = [h.name for h in inv.voters]
        off = powered_off(inv, voters)
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            early = pool.submit(gather, quick, voters, off=off)
            seen = pool.submit(probe, quick, voters, timeout=LOOK_DEADLINE_S, off=off)
            state = observe(quick, known_down=off)
            timings["observe"] = time.monotonic() - t0
            say(f"observed in {timings['observe']:.2f} s: {state.verdict}")
            evidence = dict(early.result())
            sightings = seen.result()
        timings["fence"] = time.monotonic() - t0
        evidence_at = time.monotonic()
        hosts = [m.host for m in state.members if m.host and m.in_member_list and not m.is_learner]
        missing = [h for h in hosts if h not in evidence]  # a voter member the inventory lists otherwise
        if missing and not state.quorum:
            evidence.update(gather(quick, missing))
        t2 = time.monotonic()

        log_end: list[LogEnd | None] = [None]  # the delta log's end, asked on the snapshot path only

        def plan_with(a: Attestation | None) -> Plan:
            ev = dict(evidence)
            for h in a.hosts if a else ():
                ev[h] = attest(ev[h], a.by) if h in ev else ev.get(h)  # type: ignore[assignment]
            return plan_recovery(
                state,
                inv,
                fenced={h: e for h, e in ev.items() if e is not None},
                method=method,
                snapshots=_catalog(inv),
                target=target,
                probe=sightings,
                unattended=yes and a is None,
                deltalog=log_end[0],
            )

        _record_attestation(audit, attestation)
        plan = plan_with(attestation)
        if plan.refused and plan.params.get("unfenced") and attestation is None and attest_fn is not None:
            attestation = attest_fn(plan)  # the approver may attest the silent voters down
            if attestation is not None:
                attestation.check(inv)
                _record_attestation(audit, attestation)
                plan = plan_with(attestation)
        if recovery_path(plan) is RecoveryPath.SNAPSHOT_RESTORE:
            le = log_end[0] = _log_end(inv)
            if le is not None and le.revision > le.snapshot_revision and not plan_only:
                log_end[0] = _roll_forward(inv, say, audit)  # the restore then takes the new snapshot
            if log_end[0] is not None:
                plan = plan_with(attestation)
        timings["plan"] = time.monotonic() - t2
        incident = Incident.of(plan, state)
    resumed = journal is not None
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

    executors: dict[str, Executor] = {}

    def ex(host: str) -> Executor:
        if host not in executors:
            executors[host] = executor_for(inv, host, audit=audit)
        return executors[host]

    lease = _cluster_lease(inv, jpath, plan, incident, state, ex)
    c: Ctx | None = None
    t_lease = time.monotonic()
    try:
        holder = lease.acquire()
        timings["lease"] = time.monotonic() - t_lease
    except EtcdDrError as e:
        _close_executors(executors)
        return result(RecoverStatus.FAILED, f"the recovery lease could not be taken: {e}; nothing was done")
    if holder is not None:
        _close_executors(executors)
        why = (
            f"another recovery of cluster {inv.cluster} holds it: {holder.sentence}; nothing was done: "
            "wait for it, then check `etcd-dr status`"
        )
        return result(RecoverStatus.BUSY, why)
    try:
        # the lease keeps every other recovery out from here on; what happened before it shows now
        t1 = time.monotonic()
        # hosts the plan counts as powered off are asked again (their power driver, not a dial
        # timeout): a powered-off host cannot answer, and one powered on again is dialed as usual
        off = [h for h, e in evidence.items() if e.kind is FenceKind.POWER_OFF]
        fresh = observe(_quick_ssh(inv), known_down=powered_off(inv, off))
        timings["recheck"] = time.monotonic() - t1
        if resumed:
            stop = _resume_check(incident, fresh, plan)
            if stop:
                assert journal is not None
                return _stale_journal(inv, jpath, journal, *stop, audit, say, timings, t0)
        else:
            why = changed_since(incident, fresh) if incident else None
            if why:
                return result(
                    RecoverStatus.STALE,
                    f"the cluster changed since this plan was made: {why}; nothing was done: "
                    "run `etcd-dr recover` again to plan from what the cluster is now",
                )
            _write_journal(jpath, plan, incident)  # first: a crash from here on resumes this plan
        say(f"checked again in {timings['recheck']:.2f} s, the plan still fits: {fresh.verdict}")
        # the evidence is reused while fresh; the steps run over the lease's SSH connections (a
        # connect is ~0.1 s), closed once the lease is given back
        c = Ctx(inv, audit, say, plan=plan, evidence=evidence, evidence_at=evidence_at, _executors=executors)
        t3 = time.monotonic()
        outcome = execute(
            plan, handlers(c), audit=audit, say=say, run_step=_journalled(jpath, lease, run_step)
        )
        if outcome.ok and c.keys is None:  # its verify step held already (a resumed plan)
            _tally(c, plan)
    finally:
        lease.release()
        if c is not None:
            c.close()
        _close_executors(executors)
    assert c is not None  # made before execute, which returned
    timings["execute"] = time.monotonic() - t3
    for r in outcome.results:
        timings[f"step:{r.step.id}"] = r.duration_s
    extra = {"first_write_at": c.first_write_at, "keys": c.keys, "revision": c.revision}
    if not outcome.ok:
        failed = outcome.failed
        why = f"{failed.step.description}: {failed.error}" if failed else "a step did not finish"
        j = load_journal(jpath, inv.cluster)
        if j is not None and not j.started:
            closed = _close_journal(jpath, "closed")
            return result(
                RecoverStatus.FAILED,
                f"recovery failed at: {why}; nothing was changed (no destructive step had begun), so "
                "its journal is closed: the next `etcd-dr recover` plans afresh",
                outcome=outcome,
                journal=str(closed),
                **extra,
            )
        return result(
            RecoverStatus.FAILED,
            f"recovery failed at: {why}; run `etcd-dr recover` again to resume this plan",
            outcome=outcome,
            journal=str(jpath),
            **extra,
        )
    done = _close_journal(jpath)
    return result(RecoverStatus.RECOVERED, plan.reason, outcome=outcome, journal=str(done), **extra)


def _tally(c: Ctx, plan: Plan) -> None:
    """The recovered cluster's keys and revision, from its verify step's endpoint."""
    verify = next((s for s in plan.steps if s.action == RecoveryAction.VERIFY), None)
    if verify is not None:
        with contextlib.suppress(EtcdDrError):  # figures for the report: the recovery stands without
            c.tally(verify.typed(VerifyParams).endpoint)


def _cluster_lease(
    inv: Inventory,
    jpath: Path,
    plan: Plan,
    incident: Incident | None,
    state: ClusterState | None,
    ex: Callable[[str], Executor],
) -> ClusterLease:
    """The lease on the plan's target and on every other etcd host that answered SSH, in the
    inventory's order, held by this machine's state directory (etcd_dr.recovery.lease)."""
    target = plan_target(plan)

    def answered(h: str) -> bool:
        try:
            return state is not None and state.member(h).ssh is Reach.OK
        except KeyError:
            return False

    hosts = [h.name for h in inv.etcd_hosts if h.name == target or answered(h.name)]
    return ClusterLease(
        inv.cluster,
        controller_id(jpath.parent),
        hosts,
        ex,
        required=[target] if target else [],
        owner=owner_text(
            incident.id if incident else "of an older journal", audit_mod.current_flow_run_id.get()
        ),
    )


def _journalled(jpath: Path, lease: ClusterLease, run_step: StepRunner | None) -> StepRunner:
    """Each step: the lease renewed when due, and a destructive step recorded in the journal as
    begun before it runs (then the caller's wrapper, e.g. a Prefect task run)."""

    def renew(step: Step) -> StepResult | None:
        try:
            lease.renew_if_due()
        except EtcdDrError as e:
            return StepResult(step, StepState.FAILED, 0.0, str(e), str(e))
        return None

    return journals.journalled(jpath, run_step, before=renew)


_REJOIN = "check `etcd-dr status`, and rejoin a member the recovery had stopped with `etcd-dr rejoin`"
_PLAN_AGAIN = (
    "check `etcd-dr status`, then run `etcd-dr recover` again to plan from what the cluster is now "
    "(a member this recovery had stopped stays stopped: start it, or let the new plan decide)"
)


def _resume_check(incident: Incident | None, fresh: ClusterState, plan: Plan) -> tuple[str, str] | None:
    """Whether a journalled plan may be resumed on the cluster `fresh` shows: None, or why not and
    what to do. A journal older than incidents is resumed as it always was."""
    if incident is None:
        return None
    why = healthy_without(incident, fresh)
    if why:
        return why, _REJOIN
    keeps = recovery_path(plan) is RecoveryPath.FORCE_NEW_CLUSTER
    why = changed_under(incident, fresh, keeps_identity=keeps)
    if why:
        return f"the cluster changed since this plan was made: {why}", _PLAN_AGAIN
    return None


def _stale_journal(
    inv: Inventory,
    jpath: Path,
    journal: Journal,
    why: str,
    advice: str,
    audit,
    say: Say,
    timings: dict[str, float],
    t0: float,
) -> RecoverResult:
    """A journal whose cluster is healthy by other means, or changed under it: closed, not resumed."""
    closed = _close_journal(jpath, "closed")
    begun = ", ".join(journal.started) or "none"
    reason = (
        f"{why}: this recovery's journal is closed, not resumed (steps it had begun: {begun}); nothing "
        f"was done now: {advice}"
    )
    _closed(audit, closed, journal.plan, reason, say)
    timings["total"] = time.monotonic() - t0
    path = recovery_path(journal.plan)
    return RecoverResult(
        RecoverStatus.STALE, reason, journal.plan, path, resumed=True, timings=timings, journal=str(closed)
    )


def _closed(audit, closed: Path, plan: Plan, why: str, say: Say) -> None:
    say(f"recovery journal closed ({closed.name}): {why}")
    if audit is not None:
        audit.event(
            host="-",
            action="recover-journal",
            outcome="closed",
            reason=why,
            journal=str(closed),
            plan=plan.reason,
        )


def _close_executors(executors: dict[str, Executor]) -> None:
    for e in executors.values():
        e.close()
    executors.clear()
