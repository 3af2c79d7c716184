"""Every plan kind's steps as Prefect task runs, the same way: etcd_dr.plans.execute's `run_step`
hook runs each step in a task run named by the step's id (its checkpoint in the UI), a FAILED step
fails its task run (the UI shows which step it was), and the core gets the StepResult back either
way and stops at the first failed one. A plan kind declares its task and takes its hook:

    @task(name="recover-step", task_run_name="{step.id}", cache_policy=None, retries=0)
    def recover_step(step: Step, body: StepBody) -> StepResult:
        return failed_raises(body())

    run_recover_step = step_hook(recover_step)
"""

from __future__ import annotations

from collections.abc import Callable

from etcd_dr.errors import EtcdDrError
from etcd_dr.plans import Step, StepBody, StepResult, StepRunner, StepState


class StepFailed(EtcdDrError):
    """Carries a FAILED step's result out of its task run (which then shows Failed in the UI)."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(f"{result.step.description}: {result.error or result.detail or 'failed'}")
        self.result = result


def failed_raises(r: StepResult) -> StepResult:
    """r, or StepFailed when it FAILED: the core reports a failure as a result, not an exception;
    raising marks the task run Failed."""
    if r.state is StepState.FAILED:
        raise StepFailed(r)
    return r


def step_hook(step_task: Callable[[Step, StepBody], StepResult]) -> StepRunner:
    """The run_step hook for execute() from a plan kind's step task."""

    def run_step(step: Step, body: StepBody) -> StepResult:
        try:
            return step_task(step, body)
        except StepFailed as e:
            return e.result

    return run_step
