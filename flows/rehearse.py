"""The rehearsal flow: `etcd-dr rehearse` on a schedule (weekly, deployments/prefect.yaml). The core
(etcd_dr.lab.rehearsal.run) builds the lab, plays the scenario, recovers without approval, measures RTO and
RPO from its writer's log and rejoins; this flow runs it in one task, publishes the report as a
markdown artifact (verdict, figures, members) and fails the run when the rehearsal is not ok, so a
failed scheduled run is the alert. The lab comes from the worker's environment (ETCD_DR_LAB_PREFIX,
ETCD_DR_LAB_SUBNET, ETCD_DR_LAB_DIR) unless given; the worker runs as root."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcd_dr.errors import EtcdDrError
from etcd_dr.lab.rehearsal.run import RehearsalOptions, lab_config_from_env
from etcd_dr.lab.rehearsal.scenarios import Scenario
from etcd_dr.recovery.plan import VoterMethod
from flows.common import audited_run
from tasks.rehearse import run_rehearsal


class RehearsalFailed(EtcdDrError):
    """The rehearsal did not recover, lost what the plan keeps, or did not rejoin."""


@flow(name="etcd-rehearse", log_prints=False)
def rehearse_flow(
    scenario: Scenario = Scenario.MASTERS_LOST,
    keys: int = 500,
    keep_lab: bool = False,
    voter_method: VoterMethod = VoterMethod.RESTORE,
    lab_prefix: str | None = None,
    lab_subnet: str | None = None,
) -> dict:
    """Rehearse one scenario on the lab: masters-lost, all-voters-lost, all-lost or incident."""
    logger = get_run_logger()
    opts = RehearsalOptions(
        scenario=Scenario(scenario), keys=keys, keep_lab=keep_lab, voter_method=VoterMethod(voter_method)
    )
    lab = lab_config_from_env(lab_prefix, lab_subnet)
    with audited_run():
        report = run_rehearsal(opts, lab)
    create_markdown_artifact(
        key=f"etcd-rehearse-{lab.prefix}-{report.scenario}".lower(),
        markdown=report.markdown(),
        description=report.verdict[:250],
    )
    (logger.info if report.ok else logger.error)(report.verdict)
    if not report.ok:
        raise RehearsalFailed(report.verdict)
    return report.to_json()
