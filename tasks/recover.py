"""Recovery steps as Prefect tasks: thin wrappers over etcd_dr.recover. One task run per plan step is
the flow's checkpoint; each step checks its postcondition first (etcd_dr.plans.carry_out), so a
re-run for the same incident (the core resumes its journalled plan) skips what is done. Nothing is
cached or retried by Prefect: every decision is made on a fresh look, and a retry is a re-run."""

from __future__ import annotations

from prefect import task

from etcd_dr.errors import EtcdDrError
from etcd_dr.plans import Step, StepBody, StepResult, StepState


class StepFailed(EtcdDrError):
    """Carries a FAILED step's result out of its task run (which then shows Failed in the UI)."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(f"{result.step.description}: {result.error or result.detail or 'failed'}")
        self.result = result


@task(name="recover-step", task_run_name="{step.id}", cache_policy=None, retries=0)
def recover_step(step: Step, body: StepBody) -> StepResult:
    """The step (postcondition, action, audit record) in a task run of its own."""
    r = body()
    if r.state is StepState.FAILED:
        # the core reports a failure as a result, not an exception; raising marks the task run
        # Failed so the operator sees which step it was
        raise StepFailed(r)
    return r


def run_recover_step(step: Step, body: StepBody) -> StepResult:
    """etcd_dr.plans.execute's run_step hook: the core gets its StepResult back either way and
    stops at the first failed one."""
    try:
        return recover_step(step, body)
    except StepFailed as e:
        return e.result
