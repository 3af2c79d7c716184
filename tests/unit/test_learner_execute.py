"""The learner executor loop with stand-in step runners (no I/O): which failures roll back, what the
verdict says, and that every step is recorded in the audit log."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from etcd_dr.learner import Ctx, HostFacts, LearnerAction, LearnerOptions, plan_learner_add, run_plan
from etcd_dr.plans import Rollback, StepResult, StepState
from tests.unit.test_learner_plan import INV, state


def _plan(promote: bool = False):
    return plan_learner_add(
        INV, state(), "node1", HostFacts("node1", cert_problem="missing"), LearnerOptions(promote=promote)
    )


def _runner(fail_at: LearnerAction | None):
    ran: list[LearnerAction] = []

    def run(step, _body) -> StepResult:  # the run_step hook, standing in for the step itself
        ran.append(step.action)
        state = StepState.FAILED if step.action is fail_at else StepState.DONE
        return StepResult(step, state, 0.01, detail=f"{step.action} {state}")

    return run, ran


def _rollback(calls: list[str]):
    def rb(c: Ctx, reason: str) -> Rollback:
        calls.append(reason)
        return Rollback(("member 21 removed",), ())

    return rb


def test_a_failed_start_rolls_back_and_stops(tmp_path: Path) -> None:
    inv = dataclasses.replace(INV, audit_log=tmp_path / "audit.jsonl")
    run, ran = _runner(LearnerAction.START)
    calls: list[str] = []
    with Ctx.for_host(inv, "node1") as c:
        res = run_plan(_plan(promote=True), c, run_step=run, rollback=_rollback(calls))
    assert ran == [
        LearnerAction.ISSUE_CERT,
        LearnerAction.MEMBER_ADD,
        LearnerAction.START,
    ]  # nothing after the failure
    assert not res.ok and calls == ["start-etcd failed: start-etcd failed"]
    assert res.verdict == "node1: start-etcd failed: start-etcd failed; rolled back (member 21 removed)"
    records = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[0]["action"] == "learner-add.plan" and records[0]["steps"][0] == "issue-cert"


def test_a_failed_certificate_changes_nothing_and_does_not_roll_back() -> None:
    run, ran = _runner(LearnerAction.ISSUE_CERT)
    calls: list[str] = []
    with Ctx.for_host(INV, "node1") as c:
        res = run_plan(_plan(), c, run_step=run, rollback=_rollback(calls))
    assert ran == [LearnerAction.ISSUE_CERT] and calls == [] and res.rollback is None
    assert res.verdict.endswith("; nothing in the cluster was changed")


def test_a_failed_promote_rolls_back_too() -> None:
    run, _ = _runner(LearnerAction.PROMOTE)
    calls: list[str] = []
    with Ctx.for_host(INV, "node1") as c:
        res = run_plan(_plan(promote=True), c, run_step=run, rollback=_rollback(calls))
    assert not res.ok and len(calls) == 1


def test_success_runs_every_step_once() -> None:
    run, ran = _runner(None)
    with Ctx.for_host(INV, "node1") as c:
        res = run_plan(_plan(promote=True), c, run_step=run, rollback=_rollback([]))
    assert res.ok and ran == [st.action for st in _plan(promote=True).steps]
    assert [r.state for r in res.results] == [StepState.DONE] * 5
    assert res.to_json()["steps"][0] == {
        "action": "issue-cert",
        "host": "node1",
        "status": "done",
        "detail": "issue-cert done",
        "duration_s": 0.01,
    }
