"""The plan loop: postconditions checked first (skip), then after (verify); stop at the first
failure; refused plans never run; every step audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcd_dr.audit import AuditLog, verify
from etcd_dr.errors import CommandError
from etcd_dr.plans import Plan, PlanRefused, Step, StepState, execute


class Flags:
    """A handler over a set of flags: a step is done when its flag is set; run() sets it."""

    def __init__(self, already=(), fail=(), lie=()) -> None:
        self.set = set(already)
        self.fail, self.lie = set(fail), set(lie)
        self.ran: list[str] = []

    def done(self, step: Step) -> bool:
        return step.id in self.set

    def run(self, step: Step) -> None:
        self.ran.append(step.id)
        if step.id in self.fail:
            raise CommandError(step.host or "-", "false", 1, "boom")
        if step.id not in self.lie:
            self.set.add(step.id)


def plan(*ids: str) -> Plan:
    return Plan(
        kind="t",
        cluster="c",
        reason="because",
        steps=tuple(
            Step(i, "flag", "h1", f"do {i}", f"{i} is set", f"{i} is needed", destructive=i == "b")
            for i in ids
        ),
    )


def test_runs_in_order_and_skips_what_holds(tmp_path: Path) -> None:
    h = Flags(already={"a"})
    audit = AuditLog(tmp_path / "a.jsonl")
    out = execute(plan("a", "b", "c"), {"flag": h}, audit=audit)
    assert out.ok and h.ran == ["b", "c"]
    assert [r.state for r in out.results] == [StepState.SKIPPED, StepState.DONE, StepState.DONE]
    recs = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["skipped", "ok", "ok"]
    assert verify(tmp_path / "a.jsonl").ok


def test_rerun_after_a_crash_repeats_nothing_done() -> None:
    h = Flags()
    execute(plan("a", "b"), {"flag": h})
    again = execute(plan("a", "b", "c"), {"flag": h})
    assert h.ran == ["a", "b", "c"]
    assert [r.state for r in again.results][:2] == [StepState.SKIPPED, StepState.SKIPPED]


def test_stops_at_first_failure() -> None:
    h = Flags(fail={"b"})
    out = execute(plan("a", "b", "c"), {"flag": h})
    assert not out.ok and out.failed.step.id == "b" and "boom" in out.failed.error
    assert [r.state for r in out.results] == [StepState.DONE, StepState.FAILED, StepState.NOT_RUN]
    assert h.ran == ["a", "b"]


def test_a_step_whose_postcondition_does_not_hold_fails() -> None:
    out = execute(plan("a"), {"flag": Flags(lie={"a"})})
    assert not out.ok and "ran, but not true: a is set" in out.failed.error


def test_refused_plan_never_runs() -> None:
    with pytest.raises(PlanRefused, match="quorum healthy"):
        execute(Plan("t", "c", "quorum healthy: nothing to do", refused=True), {})


def test_render_names_destructive_steps() -> None:
    text = plan("a", "b").render()
    assert "2. do b [destructive]" in text and "why: a is needed" in text and "done when: b is set" in text
