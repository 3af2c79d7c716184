"""restore-kubernetes' steps as Prefect tasks: thin wrappers over etcd_dr.kubernetes.run, the same
way as the recovery's (tasks.steps): one task run per plan step, named by its id, Failed when the
step failed. Nothing cached or retried by Prefect: a re-run resumes the core's journalled plan and
each step checks its postcondition first."""

from __future__ import annotations

from prefect import task

from etcd_dr.plans import Step, StepBody, StepResult
from tasks.steps import failed_raises, step_hook


@task(name="kubernetes-step", task_run_name="{step.id}", cache_policy=None, retries=0)
def kubernetes_step(step: Step, body: StepBody) -> StepResult:
    """The step (postcondition, action, audit record) in a task run of its own; Failed if it failed."""
    return failed_raises(body())


run_kubernetes_step = step_hook(kubernetes_step)

__all__ = ["kubernetes_step", "run_kubernetes_step"]
