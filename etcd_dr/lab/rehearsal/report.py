"""The rehearsal's report: frozen facts per phase, the verdict (one sentence, and ok), JSON and
markdown. judge() is pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from etcd_dr.lab.rehearsal.measure import AllowedLoss, Measures, loss_sentence
from etcd_dr.lab.rehearsal.scenarios import FaultPhase, Scenario

if TYPE_CHECKING:  # incident.py builds on this module's facts
    from etcd_dr.lab.rehearsal.incident import IncidentFacts, PhaseFacts


@dataclass(frozen=True)
class RecoveryFacts:
    """What `etcd_dr.recovery.run.recover()` returned, and where the cluster came back."""

    status: str  # RecoverStatus value
    path: str  # RecoveryPath value
    reason: str
    recovered_on: str | None = None
    cluster_id: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    first_write_at: float | None = None  # recover's own probe write (epoch)
    keys: int | None = None
    revision: int | None = None

    @property
    def recovered(self) -> bool:
        return self.status == "recovered"

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "path": self.path,
            "reason": self.reason,
            "recovered_on": self.recovered_on,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "first_write_at": self.first_write_at,
            "keys": self.keys,
            "revision": self.revision,
        }


@dataclass(frozen=True)
class MemberFacts:
    host: str
    is_learner: bool
    revision: int | None
    keys: int | None
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "is_learner": self.is_learner,
            "revision": self.revision,
            "keys": self.keys,
            "error": self.error,
        }


@dataclass(frozen=True)
class RejoinFacts:
    """The lost hosts back: what returned, whether an old cluster came alive on them before the
    rejoin set them aside, the rejoin itself, and the members at the end."""

    ok: bool  # the rejoin succeeded, every inventory voter is a voter, every member identical
    verdict: str  # the rejoin's own sentence
    duration_s: float
    voters: int | None
    expected_voters: int
    members: tuple[MemberFacts, ...] = ()
    identical: bool = False  # same revision and key count on every member
    revived: tuple[str, ...] = ()  # returning hosts that served an old cluster with a leader
    fork: str | None = None  # the lost hosts back, the members formed two clusters: status's verdict
    actions: tuple[str, ...] = ()
    returns: str = "together"  # Return: how the lost hosts came back
    not_members: tuple[str, ...] = ()  # inventory etcd hosts that are no member at the end

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "duration_s": round(self.duration_s, 3),
            "voters": self.voters,
            "expected_voters": self.expected_voters,
            "identical": self.identical,
            "members": [m.to_json() for m in self.members],
            "old_cluster_revived": list(self.revived),
            "fork": self.fork,
            "returns": self.returns,
            "not_members": list(self.not_members),
            "actions": list(self.actions),
        }


@dataclass(frozen=True)
class SnapshotFacts:
    id: str
    revision: int
    verified: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "revision": self.revision, "verified": self.verified, "reason": self.reason}


@dataclass(frozen=True)
class KubernetesFacts:
    """`--through-kubernetes`: restore-kubernetes after the recovery, and the RTO to a ready API
    (the fault's first host lost -> /readyz ok on every controlplane host with every object back)."""

    status: str
    decision: str | None
    reason: str
    ready: dict[str, str | None]  # controlplane host -> None (ready) or what it said
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    counted: str
    rto_api_s: float | None  # None: the API was not ready
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ready_ok(self) -> bool:
        return self.status == "restored" and self.rto_api_s is not None

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "decision": self.decision,
            "reason": self.reason,
            "ready": {h: {"ready": s is None, "said": s} for h, s in self.ready.items()},
            "objects_before": sum(self.counts_before.values()),
            "objects_after": sum(self.counts_after.values()) if self.counts_after else None,
            "per_resource": {
                p: {"before": self.counts_before.get(p), "after": self.counts_after.get(p)}
                for p in sorted({*self.counts_before, *self.counts_after})
            },
            "counted": self.counted,
            "rto_api_s": round(self.rto_api_s, 3) if self.rto_api_s is not None else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def judge(
    scenario: Scenario,
    expected_paths: tuple[str, ...],
    recovery: RecoveryFacts | None,
    measures: Measures | None,
    allowed: AllowedLoss | None,
    rejoin: RejoinFacts | None,
    error: str | None = None,
    kubernetes: KubernetesFacts | None = None,
) -> tuple[bool, str]:
    """ok, and the verdict in one sentence. ok: recovered on an expected path, a write accepted
    after it, no acknowledged write lost beyond what the plan allowed, and (when it ran) the rejoin
    ended with every member identical, no old cluster revived and no fork."""
    if error is not None:
        return False, f"{scenario}: rehearsal did not complete: {error}"
    if recovery is None:
        return False, f"{scenario}: no recovery was attempted"
    if not recovery.recovered:
        why = f"the {recovery.path} path returned {recovery.status} ({recovery.reason})"
        return False, f"{scenario}: not recovered: {why}"
    head = f"{scenario} recovered by {recovery.path} on {recovery.recovered_on or '?'}"
    ok = True
    notes: list[str] = []
    if recovery.path not in expected_paths:
        ok = False
        notes.append(f"expected {' or '.join(expected_paths)}")
    if measures is None or allowed is None:
        return False, f"{head}, but nothing was measured"
    if measures.rto_s is None:
        ok = False
        rto = "writes not accepted again after the fault"
    else:
        rto = f"RTO {measures.rto_s:.1f} s (fault to writes accepted for good)"
        if measures.outages > 1 and measures.first_write_s is not None:
            rto += f", first write {measures.first_write_s:.1f} s, {measures.outages} outages"
    if measures.lost_beyond_plan:
        ok = False
    landed = measures.unacknowledged_landed
    parts = [
        f"{head}: {rto}",
        loss_sentence(measures, allowed),
        f"{landed} unacknowledged write{'' if landed == 1 else 's'} landed",
    ]
    if kubernetes is not None:
        if kubernetes.ready_ok:
            n = sum(kubernetes.counts_after.values())
            parts.append(
                f"Kubernetes back ({kubernetes.decision}): RTO to a ready API {kubernetes.rto_api_s:.1f} s, "
                f"/readyz ok on {', '.join(kubernetes.ready)}, {n} objects under /registry"
            )
        else:
            ok = False
            parts.append(f"Kubernetes NOT back: restore-kubernetes {kubernetes.status}: {kubernetes.reason}")
    if rejoin is not None:
        if rejoin.revived:
            ok = False
            parts.append(f"OLD CLUSTER REVIVED before the rejoin: {'; '.join(rejoin.revived)}")
        if rejoin.fork:
            ok = False
            parts.append(f"FORK after the lost hosts came back: {rejoin.fork}")
        if rejoin.ok:
            m = rejoin.members[0] if rejoin.members else None
            same = f", revision {m.revision} and {m.keys} keys on every member" if m else ""
            parts.append(f"rejoined: {rejoin.voters} voters{same}")
        elif rejoin.fork and rejoin.verdict.startswith(rejoin.fork):
            ok = False
            parts.append("rejoin refused on the fork")  # its sentence is the fork's, said just above
        else:
            ok = False
            parts.append(f"rejoin FAILED: {rejoin.verdict}")
        if rejoin.not_members:
            parts.append(f"no member at the end: {', '.join(rejoin.not_members)} (to add again by hand)")
    sentence = "; ".join(parts) + (f" ({'; '.join(notes)})" if notes else "")
    return ok, sentence


@dataclass(frozen=True)
class RehearsalReport:
    scenario: Scenario
    ok: bool
    verdict: str
    run_id: str
    lab: dict[str, str]
    voter_method: str
    fault: FaultPhase | None = None
    recovery: RecoveryFacts | None = None
    measures: Measures | None = None
    allowed: AllowedLoss | None = None
    source_revision: int | None = None  # the most advanced member's revision once the fault was complete
    snapshot: SnapshotFacts | None = None
    rejoin: RejoinFacts | None = None
    timings: dict[str, float] = field(default_factory=dict)
    log: str | None = None  # the writer's log (JSONL)
    error: str | None = None
    deltalog_revision: int | None = None  # with the delta log: the last revision on record after the fault
    kubernetes: KubernetesFacts | None = None  # --through-kubernetes
    incident: IncidentFacts | None = None  # --scenario incident: the host repairs, the approvals
    phases: tuple[PhaseFacts, ...] = ()  # --scenario incident: each phase judged on its own

    def to_json(self) -> dict[str, object]:
        m = self.measures
        figures = m.to_json(self.fault.at) if m is not None and self.fault is not None else {}
        return {
            "scenario": str(self.scenario),
            "ok": self.ok,
            "verdict": self.verdict,
            "rto_s": figures.get("rto_s"),
            "rto_api_s": self.kubernetes.to_json()["rto_api_s"] if self.kubernetes else None,
            "rpo_writes": figures.get("rpo_writes"),
            "first_write_s": figures.get("first_write_s"),
            "outages": figures.get("outages"),
            "acknowledged": figures.get("acknowledged"),
            "unacknowledged": figures.get("unacknowledged"),
            "unacknowledged_landed": figures.get("unacknowledged_landed"),
            "outage_s": figures.get("outage_s"),
            "lost_within_plan": figures.get("lost_within_plan"),
            "lost_beyond_plan": figures.get("lost_beyond_plan"),
            "dataset": figures.get("dataset"),
            "lost": figures.get("lost", []),
            "allowed_loss": self.allowed.to_json() if self.allowed else None,
            "recovery_path": self.recovery.path if self.recovery else None,
            "recovery": self.recovery.to_json() if self.recovery else None,
            "recover_timings": self.recovery.to_json()["timings"] if self.recovery else {},
            "rejoin": self.rejoin.to_json() if self.rejoin else None,
            "kubernetes": self.kubernetes.to_json() if self.kubernetes else None,
            "phases": [p.to_json() for p in self.phases],
            "approvals": [a.to_json() for a in self.incident.approvals] if self.incident else [],
            "incident": self.incident.to_json() if self.incident else None,
            "fault": self.fault.to_json() if self.fault else None,
            "source_revision": self.source_revision,
            "snapshot": self.snapshot.to_json() if self.snapshot else None,
            "deltalog_revision": self.deltalog_revision,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "voter_method": self.voter_method,
            "run_id": self.run_id,
            "lab": self.lab,
            "log": self.log,
            "error": self.error,
        }

    def markdown(self) -> str:
        """The report as the Prefect artifact shows it: the verdict, the figures, the members."""
        j = self.to_json()
        rows: list[tuple[str, object]] = [
            ("scenario", j["scenario"]),
            ("result", "**OK**" if self.ok else "**FAILED**"),
            ("RTO (fault to writes accepted for good)", _s(j["rto_s"])),
            ("RTO to a ready Kubernetes API (--through-kubernetes)", _s(j["rto_api_s"])),
            ("first write accepted after the fault", _s(j["first_write_s"])),
            ("write outages after the fault", j["outages"]),
            ("writer without writes (last before to first for good)", _s(j["outage_s"])),
            ("RPO (acknowledged writes lost)", j["rpo_writes"]),
            ("acknowledged / unacknowledged writes", f"{j['acknowledged']} / {j['unacknowledged']}"),
            ("unacknowledged writes that landed", j["unacknowledged_landed"]),
            ("may lose", self.allowed.why if self.allowed else "-"),
            ("recovery path", j["recovery_path"]),
            ("recovery plan", self.recovery.reason if self.recovery else "-"),
        ]
        if self.snapshot:
            rows.append(("snapshot", f"{self.snapshot.id} (revision {self.snapshot.revision})"))
        if self.deltalog_revision is not None:
            rows.append(("delta log: last revision on record", self.deltalog_revision))
        rows += [(f"time: {k}", _s(v)) for k, v in j["timings"].items()]  # type: ignore[union-attr]
        out = [f"**{_md(self.verdict)}**", "", "| | |", "|---|---|"]
        out += [f"| {k} | {_md(str(v))} |" for k, v in rows]
        if self.phases:
            out += ["", "| phase | ok | time | what happened |", "|---|---|---|---|"]
            out += [
                f"| {p.phase} | {'yes' if p.ok else '**NO**'} | {_s(p.duration_s)} | {_md(p.sentence)} |"
                for p in self.phases
            ]
        if self.incident and self.incident.approvals:
            out += ["", "| approved (--yes) | plan | step kinds |", "|---|---|---|"]
            out += [
                f"| {_md(a.command)} | {a.kind}: {_md(a.reason)} | {', '.join(a.actions)} |"
                for a in self.incident.approvals
            ]
        if self.rejoin and self.rejoin.members:
            out += ["", "| member | learner | revision | keys |", "|---|---|---|---|"]
            out += [
                f"| {m.host} | {'yes' if m.is_learner else 'no'} | {m.revision} | {m.keys} |"
                for m in self.rejoin.members
            ]
        return "\n".join(out)


def _s(x: object) -> str:
    return f"{x:.2f} s" if isinstance(x, float) else "-" if x is None else str(x)


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")
