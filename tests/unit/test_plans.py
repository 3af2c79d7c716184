"""The plan loop: postconditions checked first (skip), then after (verify); stop at the first
failure; refused plans never run; every step audited."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import pytest

from etcd_dr.audit import AuditLog, verify
from etcd_dr.cli.result import exit_for
from etcd_dr.errors import CommandError
from etcd_dr.plans import Plan, PlanRefused, Refusal, Rollback, Step, StepResult, StepState, execute


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


def test_refusal_is_closed_and_maps_to_exit_codes() -> None:
    bad = Plan("t", "c", "no such host", refusal=Refusal.BAD_INPUT)
    assert bad.refused and exit_for(bad.refusal) == 2 and bad.render().startswith("REFUSED (bad-input): ")
    legacy = Plan("t", "c", "quorum healthy", refused=True)  # the first spelling still works
    assert legacy.refusal is Refusal.UNSAFE and exit_for(legacy.refusal) == 1
    assert not Plan("t", "c", "fine").refused


def test_to_json_round_trips_refusal_params_and_step_hints() -> None:
    p = Plan(
        "t", "c", "r",
        (Step("a", "flag", "h1", "do a", "a is set", "a is needed", holds=True, runs="touch a"),),
        params={"member_id": 33},
    )  # fmt: skip
    d = p.to_json()
    assert d["params"] == {"member_id": 33} and d["steps"][0]["holds"] and d["steps"][0]["runs"] == "touch a"
    back = Plan(**{k: v for k, v in d.items() if k not in ("refused", "steps")}, steps=p.steps)
    assert back == p
    assert Plan(**{**d, "steps": ()} | {"refused": False}).refusal is None
    assert Plan("t", "c", "r", refusal="unsafe").refusal is Refusal.UNSAFE  # type: ignore[arg-type]
    text = p.render()
    assert "1. do a (holds already: will be skipped)" in text and "runs: touch a" in text


class Said(Flags):
    """Flags whose handler says what it did and what it found."""

    def done(self, step: Step) -> bool | str:
        return f"{step.id} found set" if step.id in self.set else False

    def run(self, step: Step) -> str:
        super().run(step)
        return f"{step.id} set"


def test_results_carry_a_detail_per_step(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl")
    out = execute(plan("a", "b", "c"), {"flag": Said(already={"a"}, fail={"c"})}, audit=audit)
    assert out.results[0].detail == "a found set" and out.results[1].detail == "b set"
    assert out.results[2].detail == out.results[2].error and "boom" in out.results[2].detail
    recs = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["detail"] for r in recs][:2] == ["a found set", "b set"]


def test_run_step_hook_wraps_every_step_and_on_failure_rolls_back() -> None:
    wrapped: list[str] = []

    def run_step(step: Step, body):
        wrapped.append(step.id)
        return body()

    undone: list[str] = []

    def on_failure(r: StepResult) -> Rollback:
        undone.append(r.step.id)
        return Rollback(("a unset",), ())

    out = execute(plan("a", "b", "c"), {"flag": Flags(fail={"b"})}, run_step=run_step, on_failure=on_failure)
    assert wrapped == ["a", "b"] and undone == ["b"]  # a NOT_RUN step is not wrapped
    assert out.rollback == Rollback(("a unset",), ()) and out.rollback.sentence == "a unset"
    assert out.to_json()["rollback"] == {"ok": True, "done": ["a unset"], "errors": []}
    ok = execute(plan("a"), {"flag": Flags()}, on_failure=on_failure)
    assert ok.ok and ok.rollback is None and undone == ["b"]


def test_step_action_may_be_a_str_enum() -> None:
    class A(enum.StrEnum):
        FLAG = "flag"

    p = Plan("t", "c", "r", (Step("a", A.FLAG, "h1", "do a", "a is set", "a is needed"),))
    out = execute(p, {"flag": Flags()})
    assert out.ok and out.to_json()["plan"]["steps"][0]["action"] == "flag"
