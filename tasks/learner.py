"""Learner add as Prefect tasks: thin wrappers over etcd_dr.learner. One task run per plan step is
the flow's checkpoint; each step checks its own postcondition first, so a retried run skips what is
done. Nothing is cached (cache_policy=None): every decision is made on a fresh look."""

from __future__ import annotations

from prefect import task

from etcd_dr.inventory import Inventory
from etcd_dr.learner import (
    Ctx,
    HostFacts,
    LearnerOptions,
    gather_facts,
    plan_learner_add,
    set_aside_member,
)
from etcd_dr.plans import Plan, Rollback, Step, StepBody, StepResult
from etcd_dr.state import ClusterState
from tasks.steps import failed_raises, step_hook


@task(name="learner-probe-host", cache_policy=None)
def probe_learner_host(ctx: Ctx, options: LearnerOptions) -> HostFacts:
    """Read-only: certificate, data dir, etcd runtime and clock of the target host."""
    return gather_facts(ctx, options)


@task(name="learner-plan", cache_policy=None)
def plan_learner(
    inventory: Inventory, state: ClusterState, host: str, facts: HostFacts | None, options: LearnerOptions
) -> Plan:
    return plan_learner_add(inventory, state, host, facts, options)


@task(name="learner-step", task_run_name="{step.id}", cache_policy=None, retries=0)
def learner_step(step: Step, body: StepBody) -> StepResult:
    """The step (postcondition, action, audit) in a task run named by its id; Failed if it failed
    (it showed Completed before: the core's FAILED result was returned as a value)."""
    return failed_raises(body())


# etcd_dr.plans.execute's run_step hook, the recover flow's way (tasks.steps)
run_learner_step = step_hook(learner_step)


@task(name="learner-rollback", cache_policy=None)
def rollback_learner(ctx: Ctx, reason: str) -> Rollback:
    return set_aside_member(ctx, reason)
