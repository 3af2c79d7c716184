"""What a rehearsal measured, from the writer's log and what the recovered member holds. Pure.

    m = analyze(log, present, fault_at=t0, fault_done_at=t1, allowed=AllowedLoss.none())
    m.rto_s          # fault -> writes accepted for good (the first acknowledged after the last failed)
    m.first_write_s  # fault -> the first write accepted at all (a forced member accepts writes
                     #   before it is restarted without the flag: a second outage may follow)
    m.rpo_writes     # acknowledged writes missing (or changed) on the recovered member

An acknowledged write whose revision is above `allowed.after_revision` is a loss the recovery plan
announced (the learner was behind, the snapshot is older); one at or below it is a loss the plan
did not allow for, and fails the rehearsal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from etcd_dr.lab.rehearsal.writer import Phase, WriteRecord


class LossRule(enum.StrEnum):
    NONE = "none"  # no acknowledged write may be lost
    BEYOND_SOURCE = "beyond-source"  # writes the member restored from had not applied yet
    BEYOND_SNAPSHOT = "beyond-snapshot"  # writes after the snapshot restored


@dataclass(frozen=True)
class AllowedLoss:
    """What the recovery may lose, as the plan says it: acknowledged writes with a revision above
    after_revision (None: none at all), and why, in one sentence."""

    rule: LossRule
    after_revision: int | None
    why: str

    @classmethod
    def none(cls) -> AllowedLoss:
        return cls(LossRule.NONE, None, "a surviving voter keeps every acknowledged write: none may be lost")

    def allows(self, rec: WriteRecord) -> bool:
        return (
            self.after_revision is not None
            and rec.revision is not None
            and rec.revision > self.after_revision
        )

    def to_json(self) -> dict[str, object]:
        return {"rule": str(self.rule), "after_revision": self.after_revision, "why": self.why}


@dataclass(frozen=True)
class Measures:
    acknowledged: int  # every acknowledged write: the data set and the writer's
    unacknowledged: int
    dataset: int
    dataset_present: int
    missing: tuple[WriteRecord, ...]  # acknowledged, and absent or with another value after recovery
    lost_within_plan: int  # of missing: a loss the plan announced (AllowedLoss)
    unacknowledged_landed: int  # failed or timed out, yet present after recovery
    last_ack_before: WriteRecord | None  # the last write acknowledged before the fault was complete
    first_ack_after: WriteRecord | None  # the first write acknowledged after it
    restored: WriteRecord | None  # the first acknowledged write after the writer's last failed one
    outages: int  # runs of failed writes after the fault began (2: writes came back, then went again)
    first_write_s: float | None  # first_ack_after.done_at - fault_at
    rto_s: float | None  # restored.done_at - fault_at: writes accepted for good
    outage_s: float | None  # restored.done_at - last_ack_before.done_at: what the writer went without

    @property
    def rpo_writes(self) -> int:
        return len(self.missing)

    @property
    def lost_beyond_plan(self) -> int:
        return len(self.missing) - self.lost_within_plan

    def to_json(self, fault_at: float, limit: int = 20) -> dict[str, object]:
        return {
            "rto_s": _r(self.rto_s),
            "first_write_s": _r(self.first_write_s),
            "outage_s": _r(self.outage_s),
            "outages": self.outages,
            "rpo_writes": self.rpo_writes,
            "acknowledged": self.acknowledged,
            "unacknowledged": self.unacknowledged,
            "unacknowledged_landed": self.unacknowledged_landed,
            "lost_within_plan": self.lost_within_plan,
            "lost_beyond_plan": self.lost_beyond_plan,
            "dataset": {"keys": self.dataset, "present": self.dataset_present},
            "lost": [
                {
                    "key": r.key,
                    "revision": r.revision,
                    "acked_before_fault_s": round(fault_at - r.done_at, 3),
                    "endpoint": r.endpoint,
                }
                for r in self.missing[:limit]
            ],
        }


def analyze(
    log: Sequence[WriteRecord],
    present: Mapping[str, str],
    *,
    fault_at: float,
    fault_done_at: float,
    allowed: AllowedLoss,
) -> Measures:
    """RPO and RTO from the writer's log (epoch times) and the keys the recovered member holds.
    fault_at: the fault began (first host lost); fault_done_at: it was complete (quorum gone). The
    writer's records are in the order it made them (one attempt at a time)."""
    acked = [r for r in log if r.acked]
    failed = [r for r in log if not r.acked]
    missing = tuple(r for r in acked if present.get(r.key) != r.value)
    dataset = [r for r in acked if r.phase is Phase.DATASET]
    before = [r for r in acked if r.done_at <= fault_done_at]
    after = [r for r in acked if r.done_at > fault_done_at]
    last_before = max(before, key=lambda r: r.done_at, default=None)
    first_after = min(after, key=lambda r: r.done_at, default=None)
    during = [r for r in log if r.phase is Phase.WRITER and r.sent_at >= fault_at]
    outages = sum(1 for i, r in enumerate(during) if not r.acked and (i == 0 or during[i - 1].acked))
    last_fail = max((i for i, r in enumerate(during) if not r.acked), default=None)
    if last_fail is None:
        restored = first_after  # no attempt failed: the first write after the fault
    else:
        restored = next((r for r in during[last_fail + 1 :] if r.acked), None)
    return Measures(
        acknowledged=len(acked),
        unacknowledged=len(failed),
        dataset=len(dataset),
        dataset_present=sum(1 for r in dataset if present.get(r.key) == r.value),
        missing=missing,
        lost_within_plan=sum(1 for r in missing if allowed.allows(r)),
        unacknowledged_landed=sum(1 for r in failed if present.get(r.key) == r.value),
        last_ack_before=last_before,
        first_ack_after=first_after,
        restored=restored,
        outages=outages,
        first_write_s=first_after.done_at - fault_at if first_after else None,
        rto_s=restored.done_at - fault_at if restored else None,
        outage_s=restored.done_at - last_before.done_at if restored and last_before else None,
    )


def loss_sentence(m: Measures, allowed: AllowedLoss) -> str:
    """'RPO 0 of 6124 acknowledged writes lost', with the plan's allowance when something was lost."""
    head = f"RPO {m.rpo_writes} of {m.acknowledged} acknowledged writes lost"
    if m.rpo_writes == 0:
        return head
    if m.lost_beyond_plan == 0:
        return f"{head}, all after revision {allowed.after_revision} as the plan allowed ({allowed.why})"
    revs = sorted({r.revision for r in m.missing if not allowed.allows(r) and r.revision is not None})
    shown = ", ".join(str(x) for x in revs[:5]) + (", ..." if len(revs) > 5 else "")
    where = (
        "where the plan may lose none"
        if allowed.after_revision is None
        else f"at or below revision {allowed.after_revision}, which the plan keeps"
    )
    return f"{head}, {m.lost_beyond_plan} of them {where} (revisions {shown})"


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None
