"""`etcd-dr rehearse`: a disaster and its recovery on the lab, measured.

    report = rehearse(RehearsalOptions(Scenario.MASTERS_LOST), lab_config_from_env(), say=print)
    report.ok, report.verdict       # "masters-lost recovered by voter-restore on master3: RTO 27.4 s ..."

It builds the lab (3 etcd 3.4 voters, a 3.5 learner on node1: the source incident), writes a data
set, starts a writer thread that keeps writing and records every acknowledged write (key, revision,
time) and every failed one, loses hosts through the fault core (etcd_dr.faults.steps, as `etcd-dr
fault kill-master`), recovers with `etcd_dr.recovery.run.recover(yes=True)` (no approval), checks every
acknowledged write on the recovered member (RPO: acknowledged writes missing; unacknowledged ones
that landed are reported too) and takes the RTO from the writer's first accepted write after the
fault. The lost hosts then come back, are watched for an old cluster coming alive on them, and are
rejoined (etcd_dr.rejoin.run, as `etcd-dr rejoin --all`); every member must end identical.
`--scenario incident` adds the source incident's other phases through their own entry points:
restore_kubernetes, kubelet_cleanup, the host faults, clock_report and renew (judged in incident.py).

`etcd-dr rehearse` exits (the mapping is etcd_dr/cli/result.py's): 0 recovered, nothing lost beyond
what the plan allowed, rejoined; 1 otherwise (the verdict says why); 2 bad input (not root, an
inventory that cannot play the scenario).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd.client import EndpointStatus, EtcdClient
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.lab import kube, lifecycle
from etcd_dr.lab.config import DEFAULT_SUBNET, EtcdSeries, LabConfig, env_lab_dir, env_prefix, validate_prefix
from etcd_dr.lab.faults import controls_for
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
from etcd_dr.lab.rehearsal.measure import AllowedLoss, LossRule, Measures, analyze
from etcd_dr.lab.rehearsal.report import (
    KubernetesFacts,
    MemberFacts,
    RecoveryFacts,
    RehearsalReport,
    RejoinFacts,
    SnapshotFacts,
    judge,
)
from etcd_dr.lab.rehearsal.scenarios import (
    FaultPhase,
    RehearsalError,
    Return,
    Scenario,
    ScenarioSpec,
    bring_back,
    inject_scenario,
    spec_for,
)
from etcd_dr.lab.rehearsal.writer import (
    DIAL_TIMEOUT_S,
    INTERVAL_S,
    WRITE_TIMEOUT_S,
    Writer,
    WriteRecord,
    read_back,
    write_dataset,
)
from etcd_dr.plans import Plan
from etcd_dr.recovery.plan import VoterMethod
from etcd_dr.recovery.run import recover
from etcd_dr.state import client_for
from etcd_dr.stepctx import Say

KEY_ROOT = "/rehearsal/"


@dataclass(frozen=True)
class RehearsalOptions:
    scenario: Scenario = Scenario.MASTERS_LOST
    keys: int = 500  # the data set written before the writer starts
    keep_lab: bool = False  # leave the lab up at the end (to look around)
    # how recover() turns a surviving voter into a cluster (the core's default)
    voter_method: VoterMethod = VoterMethod.FORCE_NEW_CLUSTER
    rejoin: bool = True
    interval_s: float = INTERVAL_S
    write_timeout_s: float = WRITE_TIMEOUT_S
    warmup_acks: int = 200  # the writer's acknowledged writes before the fault (and after a snapshot)
    first_write_timeout_s: float = 120.0  # after recover() returned: the writer's first accepted write
    settle_s: float = 2.0  # the writer keeps writing this long on the recovered cluster
    watch_returning_s: float = 20.0  # lost hosts back: watch for an old cluster electing a leader
    returns: Return | None = None  # how the lost hosts come back (None: the scenario's way)
    converge_timeout_s: float = 60.0  # after the rejoin: every member at the same revision
    deltalog: bool = False  # all-lost: `backup stream` runs from the snapshot on; recover rolls forward
    # after the recovery (before the rejoin, as in the source incident): restore-kubernetes, and
    # the RTO to a ready API beside the RTO to etcd writes
    through_kubernetes: bool = False

    def __post_init__(self) -> None:
        if self.keys < 1:
            raise InputError(f"--keys {self.keys}: give at least 1")
        for name in ("interval_s", "write_timeout_s", "first_write_timeout_s", "converge_timeout_s"):
            if getattr(self, name) <= 0:
                raise InputError(f"rehearsal option {name}: {getattr(self, name)} is not > 0")
        if self.watch_returning_s < 0 or self.settle_s < 0:
            raise InputError("rehearsal options watch_returning_s and settle_s: give seconds >= 0")


def lab_config_from_env(prefix: str | None = None, subnet: str | None = None) -> LabConfig:
    """The rehearsal's lab: ETCD_DR_LAB_PREFIX, ETCD_DR_LAB_SUBNET, ETCD_DR_LAB_DIR (as `lab up`),
    with the learner on node1 running etcd 3.5 (3.4 voters: the source incident)."""
    p = validate_prefix(prefix or env_prefix())
    return LabConfig(
        prefix=p,
        subnet=subnet or os.environ.get("ETCD_DR_LAB_SUBNET") or DEFAULT_SUBNET,
        dir=env_lab_dir(p),
        etcd=EtcdSeries.V3_4,
        learner_etcd=EtcdSeries.V3_5,
    )


class _Clock:
    def __init__(self, say: Say) -> None:
        self.t0 = time.monotonic()
        self.say = say
        self.marks: dict[str, float] = {}

    def __call__(self, msg: str) -> None:
        self.say(f"[{time.monotonic() - self.t0:6.1f}s] {msg}")

    def tagged(self, tag: str) -> Say:
        return lambda m: self(f"{tag}: {m}")

    def phase(self, name: str, since: float) -> float:
        self.marks[name] = time.monotonic() - since
        return self.marks[name]


def rehearse(opts: RehearsalOptions, lab: LabConfig, *, say: Say = print) -> RehearsalReport:
    """Build the lab, play the scenario, measure, rejoin, report; the lab goes down at the end unless
    opts.keep_lab. Raises InputError for what cannot be rehearsed at all (not root); any later
    failure is in the report (ok False, the verdict says what)."""
    lifecycle.require_root()
    clock = _Clock(say)
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    r = _Run(opts, lab, clock, run_id)
    try:
        r.play()
    except (EtcdDrError, OSError) as e:
        r.error = str(e)
        clock(f"rehearsal stopped: {e}")
    finally:
        r.close()
        if not opts.keep_lab:
            t = time.monotonic()
            try:
                lifecycle.down(lab, say=clock.tagged("lab"))
            except EtcdDrError as e:
                clock(f"lab down failed: {e}")
            clock.phase("lab_down", t)
    clock.marks["total"] = time.monotonic() - clock.t0
    report = r.report()
    r.save(report)
    clock(report.verdict)
    return report


class _Run:
    """One rehearsal's state while it plays; report() freezes it."""

    def __init__(self, opts: RehearsalOptions, lab: LabConfig, clock: _Clock, run_id: str) -> None:
        self.opts, self.lab, self.clock, self.run_id = opts, lab, clock, run_id
        self.prefix = f"{KEY_ROOT}{run_id}/"
        self.inv: Inventory | None = None
        self.spec: ScenarioSpec | None = None
        self.writer: Writer | None = None
        self.clients: list[EtcdClient] = []
        self.dataset: tuple[WriteRecord, ...] = ()
        self.log: tuple[WriteRecord, ...] = ()  # the data set's writes, then the writer's
        self.fault: FaultPhase | None = None
        self.recovery: RecoveryFacts | None = None
        self.measures: Measures | None = None
        self.allowed: AllowedLoss | None = None
        self.source_revision: int | None = None
        self.snapshot: SnapshotFacts | None = None
        self.stream: tuple[threading.Thread, threading.Event] | None = None  # the delta log's watcher
        self.deltalog_revision: int | None = None  # the last revision on record after the fault
        self.rejoin: RejoinFacts | None = None
        self.kubernetes: KubernetesFacts | None = None
        self.incident: IncidentFacts | None = None  # --scenario incident
        self.approvals: list[Approval] = []  # each plan the run approved as --yes
        self.error: str | None = None

    # --- the phases ------------------------------------------------------------------------------

    def play(self) -> None:
        o, c = self.opts, self.clock
        t = time.monotonic()
        c(f"rehearsal {o.scenario} on lab '{self.lab.prefix}' ({self.lab.subnet}): building the lab")
        lifecycle.up(self.lab, say=c.tagged("lab"))
        c(f"lab up in {c.phase('lab_up', t):.1f} s")
        inv = self.inv = load_inventory(self.lab.inventory_path)
        spec = self.spec = spec_for(o.scenario, inv)
        c(f"scenario {spec.scenario}: {spec.description}")
        if spec.orphan_on is not None and spec.cert_on is not None:
            self.incident = IncidentFacts(spec.orphan_on, spec.cert_on)

        t = time.monotonic()
        data = self._client(client_for(inv))
        self.dataset = tuple(write_dataset(data, self.prefix, o.keys, self.run_id))
        c(f"data set: {o.keys} keys under {self.prefix}data/ in {c.phase('dataset', t):.1f} s")
        self.writer = Writer(
            self._client(_writer_client(inv, o.write_timeout_s)),
            self.prefix,
            self.run_id,
            interval_s=o.interval_s,
            timeout_s=o.write_timeout_s,
        ).start()
        if not self.writer.wait_acks(o.warmup_acks, 60):
            raise RehearsalError(f"the writer got fewer than {o.warmup_acks} writes acknowledged in 60 s")
        if spec.needs_snapshot:
            self._take_snapshot(inv)
            if o.deltalog:
                self._start_stream(inv)
            target = self.writer.acked_count() + o.warmup_acks
            self.writer.wait_acks(target, 60)  # writes after the snapshot: the ones all-lost may lose
        c(f"writer running: {self.writer.acked_count()} writes acknowledged before the fault")

        t = time.monotonic()
        fault = self.fault = inject_scenario(inv, self.lab, spec, c.tagged("fault"))
        c(f"fault complete in {c.phase('fault', t):.1f} s: {', '.join(spec.lost)} lost")
        kept = [h.name for h in inv.etcd_hosts if h.name not in spec.lost]
        self.source_revision = _highest_revision(inv, kept)
        if self.stream is not None:
            self.deltalog_revision = self._log_after_fault(inv)
        self.allowed = self._allowed()
        c(f"may lose: {self.allowed.why}")

        t = time.monotonic()
        res = recover(inv, yes=True, plan_only=False, say=c.tagged("recover"), method=o.voter_method)
        c.phase("recover", t)
        self._approved(Phase.RECOVER, "etcd-dr recover --yes", res.plan)
        if self.incident is not None:  # the source incident's panic: never on a learner's data dir
            self.incident = replace(self.incident, forced_on_learner=forced_on_learner(res.plan, inv))
        self._stop_stream()  # the restored cluster is another cluster id: a gap for the watcher
        self.recovery = RecoveryFacts(
            str(res.status),
            str(res.path),
            res.reason,
            timings=dict(res.timings),
            first_write_at=res.first_write_at,
            keys=res.keys,
            revision=res.revision,
        )
        c(f"recover: {res.status} ({res.path}) in {c.marks['recover']:.1f} s: {res.reason}")
        if str(res.status) != "recovered":
            self._stop_writer()
            return

        leader = _leader(inv)
        if leader is not None:
            self.recovery = replace(self.recovery, recovered_on=leader.host, cluster_id=leader.cluster_id)
        first = self.writer.wait_ack_after(fault.done_at, o.first_write_timeout_s)
        if first is not None:
            c(f"first write accepted {first.done_at - fault.at:.1f} s after the fault ({first.endpoint})")
            time.sleep(o.settle_s)
        self._stop_writer()
        self._verify(inv, leader)
        if o.through_kubernetes or spec.kubernetes:
            self._kubernetes(fault)
        if spec.orphan_on is not None:
            self._kubelet(inv, spec.orphan_on)
        if o.rejoin and leader is not None:
            self._rejoin(inv, spec, leader)
        if spec.cert_on is not None and self.rejoin is not None and self.rejoin.ok:
            self._certificate(inv, spec.cert_on)

    def _approved(self, phase: Phase, command: str, plan: Plan) -> None:
        if plan.steps and not plan.refused:
            self.approvals.append(approval_for(phase, command, plan))

    def _kubernetes(self, fault: FaultPhase) -> None:
        """restore-kubernetes as an operator runs it after `recover` (--yes), on the lab's inventory
        with an RSA etcd client (RKE's external etcd takes no other key; kube.rsa_client_inventory)."""
        from etcd_dr.kubernetes.run import restore_kubernetes

        c = self.clock
        t = time.monotonic()
        inv = load_inventory(kube.rsa_client_inventory(self.lab))
        res = restore_kubernetes(inv, yes=True, plan_only=False, say=c.tagged("kubernetes"))
        c.phase("kubernetes", t)
        self._approved(Phase.KUBERNETES, "etcd-dr restore-kubernetes --yes", res.plan)
        rto = res.ready_at - fault.at if str(res.status) == "restored" and res.ready_at else None
        self.kubernetes = KubernetesFacts(
            str(res.status),
            str(res.decision.decision) if res.decision else None,
            res.reason,
            dict(res.ready),
            dict(res.counts_before),
            dict(res.counts_after),
            res.counted,
            rto,
            dict(res.timings),
        )
        api = f"RTO to a ready API {rto:.1f} s" if rto is not None else "the API is not ready"
        c(f"kubernetes: {res.status} in {c.marks['kubernetes']:.1f} s: {api}")

    def _kubelet(self, inv: Inventory, host: str) -> None:
        """`hosts kubelet-cleanup --host H --yes` on the worker whose kubelet the fault put into its
        sandbox loop, then `fault heal` closes the fault's record (nothing left to undo)."""
        from etcd_dr.faults.steps import heal
        from etcd_dr.hostrepair.plan import RemoveParams
        from etcd_dr.hostrepair.run import kubelet_cleanup

        assert self.incident is not None
        c = self.clock
        t = time.monotonic()
        try:
            res = kubelet_cleanup(inv, host, yes=True, say=c.tagged("kubelet"))
            self._approved(Phase.KUBELET, f"etcd-dr hosts kubelet-cleanup --host {host} --yes", res.plan)
            done = res.outcome is not None and res.outcome.ok
            removed = tuple(
                k.name
                for st in res.plan.steps
                if done and isinstance(st.params, RemoveParams)
                for k in st.params.containers
            )
            failed = res.outcome.failed if res.outcome else None
            why = f"{failed.step.description}: {failed.error}" if failed else res.plan.reason
            looped = res.look is not None and res.look.looping
            facts = KubeletFacts(host, res.ok and done, why, removed, looped)
            healed = heal(inv, host, say=c.tagged("kubelet"), lab=controls_for(inv))
            if not healed.ok:
                facts = replace(facts, ok=False, reason=f"{why}; fault heal: {healed.plan.reason}")
        except EtcdDrError as e:
            facts = KubeletFacts(host, False, str(e))
        self.incident = replace(self.incident, kubelet=facts)
        took = c.phase("kubelet", t)
        c(f"kubelet on {host}: {'ok' if facts.ok else 'FAILED'} in {took:.1f} s: {facts.reason}")

    def _certificate(self, inv: Inventory, host: str) -> None:
        """A rejoined master's certificate dated ahead, as a machine whose clock is ahead issues it
        (`fault cert-not-yet-valid`); `hosts clock` must find it by the host's own clock and blame the
        certificate, not the clock; `cert renew --host H --yes` reissues it; `hosts clock` finds
        nothing after; `fault heal` closes the record (the certificate is valid: nothing put back);
        every member identical."""
        from etcd_dr.certrenew.run import renew
        from etcd_dr.faults.plan import FaultMode
        from etcd_dr.faults.steps import heal, inject_host_fault
        from etcd_dr.hostrepair.clock import CertVerdict, clock_report

        assert self.incident is not None
        c = self.clock
        say = c.tagged("certificate")
        t = time.monotonic()
        facts = CertFacts(host)
        try:
            run = inject_host_fault(inv, host, FaultMode.CERT_NOT_YET_VALID, say=say, lab=controls_for(inv))
            if not run.ok:
                raise RehearsalError(f"fault cert-not-yet-valid on {host} failed: {run.plan.reason}")
            facts = replace(facts, injected=True)
            rep = clock_report(inv)
            member = inv.etcd.cert_path(inv.host(host))
            bad = next(
                (
                    f
                    for f in rep.bad_certs
                    if f.host == host and f.path == member and f.verdict is CertVerdict.NOT_YET_VALID
                ),
                None,
            )
            say(f"hosts clock: {rep.verdict}")
            if bad is not None:
                facts = replace(facts, path=bad.path, problem=bad.problem, fix=bad.fix, skewed=rep.skewed)
                res = renew(inv, [host], yes=True, say=say)
                self._approved(Phase.CERTIFICATE, f"etcd-dr cert renew --host {host} --yes", res.plan)
                failed = res.outcome.failed if res.outcome else None
                why = f"{failed.step.description}: {failed.error}" if failed else res.plan.reason
                facts = replace(facts, renewed=res.ok and res.outcome is not None, renew_reason=why)
                after = clock_report(inv)
                facts = replace(facts, clean_after=after.ok, after_verdict=after.verdict)
                say(f"hosts clock after the renew: {after.verdict}")
        except EtcdDrError as e:
            facts = replace(facts, error=str(e))
        try:
            # renewed: heal finds the certificate valid and only closes the record; not renewed (a
            # failed phase): heal puts the kept pair back, so the lab is not left with it
            healed = heal(inv, host, say=say, lab=controls_for(inv))
            if not healed.ok:
                raise RehearsalError(f"fault heal on {host}: {healed.plan.reason}")
            _, members, identical = _converge(inv, self.opts.converge_timeout_s)
            facts = replace(facts, members_identical=identical)
            shown = ", ".join(f"{m.host} rev {m.revision} keys {m.keys}" for m in members)
            say(f"members after the renew: {shown}")
        except EtcdDrError as e:
            facts = replace(facts, error=facts.error or str(e))
        self.incident = replace(self.incident, cert=facts)
        c(f"certificate on {host}: {'ok' if facts.ok else 'FAILED'} in {c.phase('certificate', t):.1f} s")

    def _take_snapshot(self, inv: Inventory) -> None:
        from etcd_dr.snapshots.service import snapshot_cluster
        from etcd_dr.state import observe

        t = time.monotonic()
        rec, _ = snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
        self.snapshot = SnapshotFacts(rec.id, rec.revision, rec.verified, rec.reason)
        took = self.clock.phase("snapshot", t)
        self.clock(f"snapshot {rec.id}: {rec.verdict}, revision {rec.revision}, {took:.1f} s")
        if not rec.verified:
            raise RehearsalError(
                f"the snapshot was not verified ({rec.reason}): all-lost has nothing to restore"
            )

    def _start_stream(self, inv: Inventory) -> None:
        """`etcd-dr backup stream` from the snapshot on, in a thread of this process."""
        from etcd_dr.deltalog.service import log_dir_for, stream_cluster
        from etcd_dr.deltalog.stream import read_status
        from etcd_dr.etcd.localcluster import wait_for

        d = log_dir_for(inv)
        if d.exists():  # an earlier lab's log follows another cluster: set aside, kept
            d.rename(d.with_name(f"deltalog.old-{time.time_ns()}"))
        stop = threading.Event()
        t = threading.Thread(target=lambda: stream_cluster(inv, stop=stop), name="deltalog", daemon=True)
        t.start()
        self.stream = (t, stop)
        wait_for(
            "the delta log streaming",
            lambda: (s := read_status(d)) is not None and s.state == "streaming",
            60,
        )
        self.clock("delta log: etcd-dr backup stream follows the cluster from the snapshot on")

    def _log_after_fault(self, inv: Inventory) -> int | None:
        """The last revision on record once the watcher has lost the cluster (up to 15 s)."""
        from etcd_dr.deltalog import DeltaLog
        from etcd_dr.deltalog.service import log_dir_for
        from etcd_dr.deltalog.stream import read_status

        d = log_dir_for(inv)
        end = time.monotonic() + 15
        while time.monotonic() < end and (s := read_status(d)) is not None and s.state == "streaming":
            time.sleep(0.2)
        last = DeltaLog(d).last_revision()
        self.clock(f"delta log: revision {last} is the last on record")
        return last

    def _stop_stream(self) -> None:
        if self.stream is not None:
            t, stop = self.stream
            stop.set()
            t.join(30)
            self.stream = None

    def _allowed(self) -> AllowedLoss:
        assert self.spec is not None
        rule = self.spec.loss_rule
        if rule is LossRule.NONE:
            return AllowedLoss.none()
        if rule is LossRule.BEYOND_SNAPSHOT and self.deltalog_revision is not None:
            n = self.deltalog_revision
            return AllowedLoss(rule, n, f"the delta log holds up to revision {n}: writes after it")
        if rule is LossRule.BEYOND_SNAPSHOT:
            assert self.snapshot is not None
            s = self.snapshot
            return AllowedLoss(
                rule, s.revision, f"snapshot {s.id} holds revision {s.revision}: writes after it"
            )
        rev = self.source_revision
        if rev is None:
            return AllowedLoss(rule, None, "the surviving learner did not answer: nothing can be allowed")
        return AllowedLoss(rule, rev, f"the learner had applied up to revision {rev}: writes after it")

    def _verify(self, inv: Inventory, leader: Leader | None) -> None:
        assert self.fault is not None and self.allowed is not None
        t = time.monotonic()
        if leader is None:
            raise RehearsalError("recover() said recovered, but no member leads: nothing to verify against")
        host = leader.host
        with _one(inv, leader.endpoint) as m:
            present = read_back(m, self.prefix)
        self.measures = analyze(
            self.log,
            present,
            fault_at=self.fault.at,
            fault_done_at=self.fault.done_at,
            allowed=self.allowed,
        )
        mm = self.measures
        self.clock(
            f"verified on {host} in {self.clock.phase('verify', t):.1f} s: {mm.acknowledged} acknowledged, "
            f"{mm.rpo_writes} missing ({mm.lost_beyond_plan} beyond the plan), "
            f"{mm.unacknowledged_landed} of {mm.unacknowledged} unacknowledged landed"
        )

    def _rejoin(self, inv: Inventory, spec: ScenarioSpec, leader: Leader) -> None:
        """The lost hosts come back, together or one by one (RehearsalOptions.returns, else the
        scenario's); each returning voter is watched for an old cluster electing a leader on it,
        then rejoined; at the end every member must hold the same revision and keys."""
        from etcd_dr.learner import LearnerOptions
        from etcd_dr.rejoin.run import RejoinResult, rejoin

        c = self.clock
        # the members join running the recovered member's etcd: after a recovery onto the 3.5
        # learner a 3.4 master cannot join (an older etcd never joins a newer cluster)
        rec = inv.host(leader.host)
        opts = LearnerOptions(
            promote=True, rejoin=True, image=inv.etcd_image_for(rec), binary=inv.etcd_binary_for(rec)
        )
        t = time.monotonic()
        mode = self.opts.returns or spec.returns
        recovered = leader.host
        voters = {h.name for h in inv.voters}
        returning = [h for h in spec.lost if h != recovered]
        actions: list[str] = []
        if recovered in spec.lost:  # all-lost: close the recovered host's own fault record
            actions.append(bring_back(inv, self.lab, spec, recovered, c.tagged("back")))
        results: list[RejoinResult] = []
        revived: list[str] = []
        forks: list[str] = []
        watch = self.opts.watch_returning_s
        if mode is Return.TOGETHER:
            actions += [bring_back(inv, self.lab, spec, h, c.tagged("back")) for h in returning]
            back = [h for h in returning if h in voters]
            revived += _watch_returning(inv, back, leader.member_id, watch, c)
            forks += _fork_seen(inv, c)
            results.append(rejoin(inv, None, opts, say=c.tagged("rejoin")))
        else:
            each = max(3.0, watch / max(len(returning), 1)) if watch > 0 else 0.0
            for h in returning:
                actions.append(bring_back(inv, self.lab, spec, h, c.tagged("back")))
                if h not in voters:
                    continue  # a learner host: its old member is no voter, rejoin takes voters
                revived += _watch_returning(inv, [h], leader.member_id, each, c)
                forks += _fork_seen(inv, c)
                results.append(rejoin(inv, [h], opts, say=c.tagged("rejoin")))
                if not results[-1].ok:
                    break
        if not forks:  # an old cluster may elect after the watch (6-12 s after power on): look again
            forks += _fork_seen(inv, c)
        ok = all(r.ok for r in results)
        verdict = "; ".join(r.verdict for r in results) or "nothing to rejoin"
        c(f"rejoin ({mode}) {'ok' if ok else 'FAILED'}: {verdict}")
        # members catch up within seconds of a good rejoin; after a failed one (or beside a revived
        # old cluster, which no rejoin ends), one look is enough
        wait = self.opts.converge_timeout_s if ok and not revived and not forks else 0.1
        n_voters, members, identical = _converge(inv, wait)
        voter_hosts = {m.host for m in members if not m.is_learner}
        every = all(h in voter_hosts for h in voters)
        good = ok and every and identical
        self.rejoin = RejoinFacts(
            ok=good,
            verdict=verdict if good else _rejoin_problem(verdict, ok, every, identical),
            duration_s=time.monotonic() - t,
            voters=n_voters,
            expected_voters=len(voters),
            members=members,
            identical=identical,
            revived=tuple(revived),
            fork=forks[0] if forks else None,
            actions=tuple(actions),
            returns=str(mode),
            not_members=tuple(h.name for h in inv.etcd_hosts if h.name not in {m.host for m in members}),
        )
        c.phase("rejoin", t)
        shown = ", ".join(f"{m.host} rev {m.revision} keys {m.keys}" for m in members)
        c(f"members after the rejoin: {shown}")

    # --- the end ---------------------------------------------------------------------------------

    def _client(self, client: EtcdClient) -> EtcdClient:
        self.clients.append(client)
        return client

    def _stop_writer(self) -> None:
        if self.writer is not None and not self.log:
            self.log = (*self.dataset, *self.writer.stop())

    def close(self) -> None:
        self._stop_stream()
        self._stop_writer()
        for cl in self.clients:
            cl.close()

    def report(self) -> RehearsalReport:
        expected = tuple(str(p) for p in self.spec.expected_paths) if self.spec else ()
        ok, verdict = judge(
            self.opts.scenario,
            expected,
            self.recovery,
            self.measures,
            self.allowed,
            self.rejoin,
            self.error,
            self.kubernetes,
        )
        incident, phases = self.incident, ()
        if incident is not None:
            incident = replace(incident, approvals=tuple(self.approvals))
            phases = incident_phases(
                incident,
                self.clock.marks,
                keys=self.opts.keys,
                fault=self.fault,
                expected_paths=expected,
                recovery=self.recovery,
                measures=self.measures,
                allowed=self.allowed,
                kubernetes=self.kubernetes,
                rejoin=self.rejoin,
            )
            ok, verdict = judge_incident(phases, incident, ok, verdict)
        return RehearsalReport(
            scenario=self.opts.scenario,
            ok=ok,
            verdict=verdict,
            run_id=self.run_id,
            lab={"prefix": self.lab.prefix, "subnet": self.lab.subnet, "dir": str(self.lab.dir)},
            voter_method=str(self.opts.voter_method),
            fault=self.fault,
            recovery=self.recovery,
            measures=self.measures,
            allowed=self.allowed,
            source_revision=self.source_revision,
            snapshot=self.snapshot,
            deltalog_revision=self.deltalog_revision,
            rejoin=self.rejoin,
            kubernetes=self.kubernetes,
            incident=incident,
            phases=phases,
            timings=dict(self.clock.marks),
            log=str(self._log_path()),
            error=self.error,
        )

    def _log_path(self) -> Path:
        return self.lab.dir / "rehearsals" / f"{self.run_id}-{self.opts.scenario}.writes.jsonl"

    def save(self, report: RehearsalReport) -> None:
        """The writer's log (JSONL) and the report beside it, in the lab dir (kept by `lab down`)."""
        path = self._log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in self.log))
            path.with_name(path.name.replace(".writes.jsonl", ".report.json")).write_text(
                json.dumps(report.to_json(), indent=2) + "\n"
            )
        except OSError as e:
            self.clock(f"could not save the writer's log to {path}: {e}")


def _rejoin_problem(verdict: str, ok: bool, every: bool, identical: bool) -> str:
    if not ok:
        return verdict
    if not every:
        return f"{verdict}; but not every inventory voter is a voter member"
    if not identical:
        return f"{verdict}; but the members differ in revision or key count"
    return verdict


# --- cluster probes ------------------------------------------------------------------------------


def _writer_client(inv: Inventory, timeout: float) -> EtcdClient:
    """Every inventory endpoint (voters, the learner: whichever is recovered is among them), short
    dial and request timeouts so an attempt against a lost member fails fast."""
    return client_for(inv, dial_timeout=DIAL_TIMEOUT_S, request_timeout=timeout)


def _one(inv: Inventory, endpoint: str, timeout: float = 5.0) -> EtcdClient:
    return client_for(inv, [endpoint], dial_timeout=1.0, request_timeout=timeout)


def _statuses(
    inv: Inventory, hosts: Iterable[str] | None = None, timeout: float = 1.0
) -> dict[str, EndpointStatus | str]:
    """host -> EndpointStatus, or the error text; asked in parallel."""
    names = list(hosts) if hosts is not None else [h.name for h in inv.etcd_hosts]
    if not names:
        return {}

    def one(cl: EtcdClient, name: str) -> EndpointStatus | str:
        try:
            return cl.status(inv.client_url(inv.host(name)), timeout=timeout)
        except EtcdDrError as e:
            return str(e)

    with _writer_client(inv, timeout) as cl, cf.ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(lambda n: one(cl, n), names), strict=True))


def _highest_revision(inv: Inventory, hosts: list[str]) -> int | None:
    """The most advanced answering member's revision once the fault is complete (the hosts not
    lost): what the recovery can keep."""
    revs = [s.revision for s in _statuses(inv, hosts).values() if isinstance(s, EndpointStatus)]
    return max(revs, default=None)


@dataclass(frozen=True)
class Leader:
    """The member that leads (after the recovery: the recovered one)."""

    host: str
    endpoint: str
    cluster_id: int
    member_id: int


def _leader(inv: Inventory) -> Leader | None:
    for host, st in _statuses(inv).items():
        if isinstance(st, EndpointStatus) and st.is_leader:
            return Leader(host, inv.client_url(inv.host(host)), st.cluster_id, st.member_id)
    return None


def _watch_returning(
    inv: Inventory, hosts: list[str], leader_id: int, seconds: float, say: Say
) -> tuple[str, ...]:
    """For `seconds`, whether a returning host serves a cluster led by another member than the
    recovered one: its old cluster alive again (two lost voters of three are a majority of the old
    membership). One sentence per host that did."""
    if not hosts or seconds <= 0:
        return ()
    say(f"watching {', '.join(hosts)} for {seconds:.0f} s: does an old cluster elect a leader on them?")
    seen: dict[str, str] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for host, st in _statuses(inv, hosts, timeout=0.5).items():
            if not isinstance(st, EndpointStatus) or not st.leader or st.leader == leader_id or host in seen:
                continue
            seen[host] = (
                f"{host} follows leader {st.leader:x} (not the recovered member {leader_id:x}) at "
                f"revision {st.revision}"
            )
            say(f"OLD CLUSTER ALIVE: {seen[host]}")
        time.sleep(0.5)
    if not seen:
        say(f"no returning host served another cluster in {seconds:.0f} s")
    return tuple(seen.values())


def _fork_seen(inv: Inventory, say: Say) -> list[str]:
    """The lost hosts back: one observation, as `etcd-dr status` makes it. A fork (two clusters that
    each lead, both accepting writes) fails the rehearsal with the status verdict that names it."""
    from etcd_dr.state import observe

    state = observe(inv, check_ssh=False)
    if not state.forked:
        return []
    say(f"FORK: {state.verdict}")
    return [state.verdict]


def _converge(inv: Inventory, timeout: float) -> tuple[int | None, tuple[MemberFacts, ...], bool]:
    """After the rejoin: the voter count (linearizable member list) and each member's revision and
    key count (serializable, on the member itself), polled until they agree or timeout."""
    end = time.monotonic() + timeout
    by_addr = {h.address: h.name for h in inv.hosts}
    while True:
        members: list[MemberFacts] = []
        voters: int | None = None
        try:
            # asked of the leader itself: lost or returning members in the inventory's endpoint list
            # would each eat a dial timeout of the request deadline before the leader is reached
            leader = _leader(inv)
            if leader is None:
                raise RehearsalError("no member leads")
            with _one(inv, leader.endpoint) as cl:
                ml = cl.member_list(linearizable=True)
            voters = sum(1 for m in ml if not m.is_learner)
            for m in ml:
                ep = m.client_urls[0] if m.client_urls else None
                host = next((by_addr[a] for a in by_addr if ep and f"//{a}:" in ep), m.name)
                if ep is None:
                    members.append(MemberFacts(host, m.is_learner, None, None, "not started"))
                    continue
                try:
                    with _one(inv, ep) as one:
                        r = one.range(b"\0", b"\0", serializable=True, count_only=True)
                    members.append(MemberFacts(host, m.is_learner, r.header.revision, r.count))
                except EtcdDrError as e:
                    members.append(MemberFacts(host, m.is_learner, None, None, str(e)[:200]))
        except EtcdDrError as e:
            members = [MemberFacts("-", False, None, None, str(e)[:200])]
        same = {(m.revision, m.keys) for m in members}
        identical = len(same) == 1 and None not in next(iter(same))
        if identical or time.monotonic() > end:
            return voters, tuple(sorted(members, key=lambda m: m.host)), identical
        time.sleep(0.5)
