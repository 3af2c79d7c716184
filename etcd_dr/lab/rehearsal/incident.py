"""`etcd-dr rehearse --scenario incident`: the source incident's phases, each judged on its own, and
what a person had to approve. Pure: the run (etcd_dr.lab.rehearsal.run) gathers the facts.

    phases = incident_phases(facts, ...)        # one PhaseFacts per phase: ok, seconds, a sentence
    ok, verdict = judge_incident(phases, facts, base_ok, base_verdict)

The phases, in the incident's order: the lab (3.4 voters, a 3.5 learner in the second site), the
data set and its writer, the fault (kubelet on node2 into its sandbox loop, then power lost on
master1..3), the recovery from node1's learner (never `--force-new-cluster` on a learner: the
source incident's `panic: removed all voters`), the writer's log checked (RPO, RTO), Kubernetes back
through external etcd with ssl_old, kubelet's loop cleaned, the masters rejoined one by one, and a
member certificate dated ahead (as a machine whose clock is ahead issues it) found by `hosts clock`
and renewed by `cert renew`. The rehearsal is ok only when every phase is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from etcd_dr.inventory import Inventory
from etcd_dr.lab.rehearsal.measure import AllowedLoss, Measures, loss_sentence
from etcd_dr.lab.rehearsal.report import KubernetesFacts, RecoveryFacts, RejoinFacts
from etcd_dr.lab.rehearsal.scenarios import FaultPhase
from etcd_dr.plans import Plan, params_json

FORCE_FLAG = "--force-new-cluster"  # etcd_dr.recovery.steps.FORCE_FLAG, the flag itself


class Phase(enum.StrEnum):
    LAB = "lab"
    DATASET = "dataset"
    FAULT = "fault"
    RECOVER = "recover"
    VERIFY = "verify"
    KUBERNETES = "kubernetes"
    KUBELET = "kubelet"
    REJOIN = "rejoin"
    CERTIFICATE = "certificate"


# where each phase's seconds are in the run's timings (the clock's marks)
TIMING_OF: Mapping[Phase, str] = {
    Phase.LAB: "lab_up",
    Phase.DATASET: "dataset",
    Phase.FAULT: "fault",
    Phase.RECOVER: "recover",
    Phase.VERIFY: "verify",
    Phase.KUBERNETES: "kubernetes",
    Phase.KUBELET: "kubelet",
    Phase.REJOIN: "rejoin",
    Phase.CERTIFICATE: "certificate",
}


@dataclass(frozen=True)
class PhaseFacts:
    phase: Phase
    ok: bool
    duration_s: float | None  # None: not reached
    sentence: str

    def to_json(self) -> dict[str, object]:
        d = self.duration_s
        return {
            "phase": str(self.phase),
            "ok": self.ok,
            "duration_s": None if d is None else round(d, 3),
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class Approval:
    """One approval the rehearsal gave as `--yes`: the command, its plan's kind and decision, and the
    kinds of step it let run (in plan order), as the operator's approval form would have shown them."""

    phase: Phase
    command: str  # as an operator types it
    kind: str  # the plan's kind
    reason: str  # the plan's decision, one sentence
    actions: tuple[str, ...]  # distinct step kinds, in plan order
    steps: int
    destructive: int  # steps marked destructive

    def to_json(self) -> dict[str, object]:
        return {
            "phase": str(self.phase),
            "command": self.command,
            "plan": self.kind,
            "reason": self.reason,
            "step_kinds": list(self.actions),
            "steps": self.steps,
            "destructive_steps": self.destructive,
        }


def approval_for(phase: Phase, command: str, plan: Plan) -> Approval:
    actions = tuple(dict.fromkeys(str(s.action) for s in plan.steps))
    n_destructive = sum(1 for s in plan.steps if s.destructive)
    return Approval(phase, command, plan.kind, plan.reason, actions, len(plan.steps), n_destructive)


def forced_on_learner(plan: Plan, inv: Inventory) -> tuple[str, ...]:
    """The steps of a recovery plan that would start etcd with --force-new-cluster on a host the
    inventory names a learner (its flags, its argv or what it runs): on a learner's data dir that
    flag panics with `removed all voters`, so the rehearsal fails if there is one."""
    learners = {h.name for h in inv.hosts if h.is_learner}
    out = []
    for s in plan.steps:
        if s.host not in learners:
            continue
        p = params_json(s.params)
        flags = [*p.get("extra_flags", ()), *p.get("args", ())]  # type: ignore[misc]
        if FORCE_FLAG in flags or FORCE_FLAG in s.runs:
            out.append(s.id)
    return tuple(out)


@dataclass(frozen=True)
class KubeletFacts:
    """`hosts kubelet-cleanup --host H --yes` on the worker the fault put into the sandbox loop."""

    host: str
    ok: bool
    reason: str  # the plan's sentence (or why it failed)
    removed: tuple[str, ...] = ()  # the containers removed (name), as the audit log has them
    looped: bool = False  # kubelet was in its loop when the cleanup looked

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "ok": self.ok,
            "reason": self.reason,
            "removed": list(self.removed),
            "looped": self.looped,
        }


@dataclass(frozen=True)
class CertFacts:
    """The certificate dated ahead: injected on a rejoined master, found by `hosts clock` (by that
    host's clock, the clocks themselves right), renewed by `cert renew`, nothing flagged after."""

    host: str
    injected: bool = False
    path: str | None = None  # the file `hosts clock` flagged
    problem: str | None = None  # Go's x509 words
    fix: str | None = None  # the fix hosts clock named
    skewed: tuple[str, ...] = ()  # hosts whose clock was flagged (none: the certificate is to blame)
    renewed: bool = False
    renew_reason: str = ""
    clean_after: bool = False  # hosts clock flagged nothing after the renew
    after_verdict: str = ""
    members_identical: bool = False  # after the member's restart: same revision and keys everywhere
    error: str | None = None

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def ok(self) -> bool:
        return (
            self.injected
            and self.found
            and not self.skewed
            and self.renewed
            and self.clean_after
            and self.members_identical
            and self.error is None
        )

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "ok": self.ok,
            "injected": self.injected,
            "found": {"path": self.path, "problem": self.problem, "fix": self.fix} if self.found else None,
            "clock_skewed": list(self.skewed),
            "renewed": self.renewed,
            "renew_reason": self.renew_reason,
            "clean_after": self.clean_after,
            "after_verdict": self.after_verdict,
            "members_identical": self.members_identical,
            "error": self.error,
        }


@dataclass(frozen=True)
class IncidentFacts:
    """What the incident adds to a rehearsal's facts."""

    orphan_on: str
    cert_on: str
    forced_on_learner: tuple[str, ...] = ()  # step ids (must stay empty)
    kubelet: KubeletFacts | None = None
    cert: CertFacts | None = None
    approvals: tuple[Approval, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "orphan_on": self.orphan_on,
            "cert_on": self.cert_on,
            "force_new_cluster_on_learner": list(self.forced_on_learner),
            "kubelet": self.kubelet.to_json() if self.kubelet else None,
            "certificate": self.cert.to_json() if self.cert else None,
        }


def incident_phases(
    facts: IncidentFacts,
    timings: Mapping[str, float],
    *,
    keys: int,
    fault: FaultPhase | None,
    expected_paths: Sequence[str],
    recovery: RecoveryFacts | None,
    measures: Measures | None,
    allowed: AllowedLoss | None,
    kubernetes: KubernetesFacts | None,
    rejoin: RejoinFacts | None,
) -> tuple[PhaseFacts, ...]:
    """Each phase: ok, its seconds, one sentence; a phase never reached is not ok ("not reached")."""

    def ph(p: Phase, ok: bool, sentence: str) -> PhaseFacts:
        return PhaseFacts(p, ok, timings.get(TIMING_OF[p]), sentence)

    def missing(p: Phase) -> PhaseFacts:
        return PhaseFacts(p, False, timings.get(TIMING_OF[p]), "not reached")

    out: list[PhaseFacts] = []
    out.append(
        ph(Phase.LAB, True, "3.4 voters, a 3.5 learner in the second site")
        if "lab_up" in timings
        else missing(Phase.LAB)
    )
    out.append(
        ph(Phase.DATASET, True, f"{keys} keys written, a writer writing")
        if "dataset" in timings
        else missing(Phase.DATASET)
    )
    if fault is None:
        out.append(missing(Phase.FAULT))
    else:  # each action's head ("power loss of master1"): the whole sentences are in the fault's JSON
        heads = ", ".join(a.split(":")[0] for a in fault.actions)
        out.append(ph(Phase.FAULT, True, heads))
    if recovery is None:
        out.append(missing(Phase.RECOVER))
    else:
        good = recovery.recovered and recovery.path in expected_paths and not facts.forced_on_learner
        forced = (
            f"--force-new-cluster planned on a learner ({', '.join(facts.forced_on_learner)}): "
            "`panic: removed all voters`"
            if facts.forced_on_learner
            else "no --force-new-cluster on the learner"
        )
        on = f" on {recovery.recovered_on}" if recovery.recovered_on else ""
        out.append(ph(Phase.RECOVER, good, f"{recovery.status} by {recovery.path}{on}; {forced}"))
    if measures is None or allowed is None:
        out.append(missing(Phase.VERIFY))
    else:
        rto = "writes not accepted again" if measures.rto_s is None else f"RTO {measures.rto_s:.1f} s"
        good = measures.rto_s is not None and measures.lost_beyond_plan == 0
        out.append(ph(Phase.VERIFY, good, f"{rto}; {loss_sentence(measures, allowed)}"))
    if kubernetes is None:
        out.append(missing(Phase.KUBERNETES))
    elif kubernetes.ready_ok:
        n_after = sum(kubernetes.counts_after.values())
        n_before = sum(kubernetes.counts_before.values())
        out.append(
            ph(
                Phase.KUBERNETES,
                n_after >= n_before,
                f"{kubernetes.decision}: /readyz ok on {', '.join(kubernetes.ready)}, {n_after} of "
                f"{n_before} /registry objects back, RTO to a ready API {kubernetes.rto_api_s:.1f} s",
            )
        )
    else:
        out.append(ph(Phase.KUBERNETES, False, f"{kubernetes.status}: {kubernetes.reason}"))
    k = facts.kubelet
    if k is None:
        out.append(missing(Phase.KUBELET))
    else:
        good = k.ok and k.looped and bool(k.removed)
        said = f"removed {', '.join(k.removed)}" if k.removed else "nothing removed"
        out.append(ph(Phase.KUBELET, good, f"{k.host}: {said}: {k.reason}"))
    if rejoin is None:
        out.append(missing(Phase.REJOIN))
    else:
        good = rejoin.ok and not rejoin.revived and not rejoin.fork
        n, inv_n = rejoin.voters, rejoin.expected_voters
        said = f"{n} voters, the {inv_n} inventory voters among them: {rejoin.verdict}"
        out.append(ph(Phase.REJOIN, good, said))
    c = facts.cert
    if c is None:
        out.append(missing(Phase.CERTIFICATE))
    else:
        out.append(ph(Phase.CERTIFICATE, c.ok, _cert_sentence(c)))
    return tuple(out)


def _cert_sentence(c: CertFacts) -> str:
    if c.error is not None:
        return f"{c.host}: {c.error}"
    if not c.injected:
        return f"{c.host}: the certificate dated ahead was not injected"
    if not c.found:
        return f"{c.host}: `hosts clock` did not flag the certificate dated ahead"
    parts = [f"hosts clock found {c.host}:{c.path}: {c.problem}"]
    if c.skewed:
        parts.append(f"but blamed the clock of {', '.join(c.skewed)}")
    parts.append("renewed" if c.renewed else f"NOT renewed: {c.renew_reason}")
    parts.append("nothing flagged after" if c.clean_after else f"still flagged after: {c.after_verdict}")
    parts.append("members identical" if c.members_identical else "members differ")
    return "; ".join(parts)


def judge_incident(
    phases: Sequence[PhaseFacts], facts: IncidentFacts, base_ok: bool, base_verdict: str
) -> tuple[bool, str]:
    """ok only when every phase is (and the rehearsal's own judgement); the verdict: the failed
    phases first, then the rehearsal's sentence, the repairs and what was approved."""
    failed = [p for p in phases if not p.ok]
    ok = base_ok and not failed
    head = (
        "incident: every phase ok"
        if not failed
        else "incident FAILED at " + "; ".join(f"{p.phase}: {p.sentence}" for p in failed[:3])
    )
    extra = []
    k = facts.kubelet
    if k is not None and k.ok and k.removed:
        extra.append(f"kubelet on {k.host} out of its sandbox loop ({len(k.removed)} container removed)")
    c = facts.cert
    if c is not None and c.ok:
        extra.append(f"{c.host}'s certificate dated ahead found by hosts clock and renewed")
    if facts.approvals:
        extra.append(
            f"{len(facts.approvals)} approvals given as --yes: "
            + ", ".join(f"{a.kind} ({a.steps} steps)" for a in facts.approvals)
        )
    return ok, "; ".join([head, base_verdict, *extra])
