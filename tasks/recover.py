"""Recovery steps as Prefect tasks: thin wrappers over etcd_dr.recovery.run. One task run per plan step is
the flow's checkpoint; each step checks its postcondition first (etcd_dr.plans.carry_out), so a
re-run for the same incident (the core resumes its journalled plan) skips what is done. Nothing is
cached or retried by Prefect: every decision is made on a fresh look, and a retry is a re-run."""

from __future__ import annotations

from prefect import task

from etcd_dr.plans import Step, StepBody, StepResult
from tasks.steps import StepFailed, failed_raises, step_hook


@task(name="recover-step", task_run_name="{step.id}", cache_policy=None, retries=0)
def recover_step(step: Step, body: StepBody) -> StepResult:
    """The step (postcondition, action, audit record) in a task run of its own; Failed if it failed."""
    return failed_raises(body())


# etcd_dr.plans.execute's run_step hook (tasks.steps: the same for every plan kind)
run_recover_step = step_hook(recover_step)

__all__ = ["StepFailed", "recover_step", "run_recover_step"]
