"""The rehearsal as one Prefect task: a thin wrapper over etcd_dr.lab.rehearsal.run. One task, not one per
phase: a rehearsal is one experiment on a lab it builds itself, and a retry is a new rehearsal."""

from __future__ import annotations

from prefect import get_run_logger, task

from etcd_dr.lab.config import LabConfig
from etcd_dr.lab.rehearsal.report import RehearsalReport
from etcd_dr.lab.rehearsal.run import RehearsalOptions, rehearse


@task(name="rehearse", task_run_name="rehearse-{options.scenario}", retries=0, cache_policy=None)
def run_rehearsal(options: RehearsalOptions, lab: LabConfig) -> RehearsalReport:
    """Build the lab, play the scenario, recover, measure, rejoin; progress lines to the run log."""
    logger = get_run_logger()
    return rehearse(options, lab, say=logger.info)
