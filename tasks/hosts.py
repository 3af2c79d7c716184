"""Host repair's tasks: thin wrappers over etcd_dr.hostrepair (and etcd_dr.certrenew's steps)."""

from __future__ import annotations

from prefect import task

from etcd_dr.hostrepair.clock import ClockReport, clock_report
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Step, StepBody, StepResult
from tasks.steps import failed_raises, step_hook


@task(name="hosts-clock", retries=0, cache_policy=None)
def hosts_clock(inventory: Inventory, sync: bool = False, ntp_server: str | None = None) -> ClockReport:
    """Each host's clock and every certificate on it by that clock (`etcd-dr hosts clock`); with sync,
    the flagged clocks stepped and measured again. Never cached: it reports the hosts as they are."""
    return clock_report(inventory, sync=sync, ntp_server=ntp_server)


@task(name="hostrepair-step", task_run_name="{step.id}", cache_policy=None, retries=0)
def hostrepair_step(step: Step, body: StepBody) -> StepResult:
    """A kubelet-cleanup or cert-renew step (postcondition, action, audit record) in a task run of
    its own; Failed if it failed. Never retried by Prefect: each step checks its postcondition first."""
    return failed_raises(body())


run_hostrepair_step = step_hook(hostrepair_step)
