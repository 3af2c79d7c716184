"""The flows `etcd-dr server` serves: each takes the cluster by name (the deployment's run form shows
the served clusters as a choice) and runs the project's flow for that cluster's inventory in the
same flow run (`.fn`: one run, its tasks, artifacts and pause, not a sub-flow).

The inventory is found through $ETCD_DR_INVENTORIES (set by the server, inherited by every run it
starts) and read afresh by each run: an edited inventory counts from the next run; a new one needs a
server restart (the form's choice is made when the server starts)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Cancelled, Failed, State

from console.alerts import INCIDENTS_FILE, incident_open
from console.clusters import DATA_ENV, inventory_path
from etcd_dr.audit import redact
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.inventory import load_inventory
from etcd_dr.readiness import DEFAULT_DEADLINE_S
from etcd_dr.recovery.plan import VoterMethod
from flows.common import audited_run
from flows.recover import recover_flow

if TYPE_CHECKING:
    from etcd_dr.rejoin.run import RejoinResult

# Every run's process loads this module (the deployment's entrypoint) before its flow starts: the
# other flows' modules are imported in their wrappers, so an alert's recover run does not import
# the rehearsal, snapshot, learner, readiness and clock code (146 of 1395 modules) on its way to
# the first step. The rehearsal's scenarios are named here, not imported (their module pulls in the
# lab and the fault code); tests/unit/test_console_flows.py checks the names match.
ScenarioName = Literal["masters-lost", "all-voters-lost", "all-lost", "incident"]


def _path(cluster: str) -> str:
    return str(inventory_path(cluster))


@flow(name="etcd-status", flow_run_name="status-{cluster}", log_prints=False)
def status(cluster: str, check_ssh: bool = True) -> dict:
    """Observe one cluster: members, leader, raft index, SSH; a table artifact with the verdict.

    Args:
        cluster: the cluster (its inventory in the served directory)
        check_ssh: also try SSH to every host (a dead host costs the look's 1.2 s deadline)
    """
    from flows.status import status_flow

    return status_flow.fn(inventory_path=_path(cluster), check_ssh=check_ssh)


@flow(name="etcd-check", flow_run_name="check-{cluster}", log_prints=False)
def check(cluster: str, deadline_s: float = DEFAULT_DEADLINE_S) -> dict:
    """Is the cluster ready for a disaster? Quorum, alarms, learner lag, snapshot age, certificates,
    clock skew, disk; the run fails when a critical check fails.

    Args:
        cluster: the cluster (its inventory in the served directory)
        deadline_s: seconds every probe must answer within, together
    """
    from flows.check import check_flow

    return check_flow.fn(inventory_path=_path(cluster), deadline_s=deadline_s)


@flow(name="etcd-snapshot", flow_run_name="snapshot-{cluster}", log_prints=False)
def snapshot(
    cluster: str, allow_learner: bool = False, trial_restore: bool = True, prune: bool = True
) -> dict:
    """Take a verified snapshot: stream, verify (trial restore + HashKV), catalog, off-site copy,
    retention; the run fails unless it is verified.

    Args:
        cluster: the cluster (its inventory in the served directory)
        allow_learner: a learner may be the source when it is the healthiest member
        trial_restore: verify by restoring into a throwaway etcd and comparing HashKV
        prune: apply the inventory's retention after a verified snapshot
    """
    from flows.snapshot import snapshot_flow

    return snapshot_flow.fn(
        inventory_path=_path(cluster), allow_learner=allow_learner, trial_restore=trial_restore, prune=prune
    )


@flow(name="etcd-hosts-clock", flow_run_name="hosts-clock-{cluster}", log_prints=False)
def hosts_clock(cluster: str, sync: bool = False, ntp_server: str | None = None) -> dict:
    """Every host's clock and every etcd/Kubernetes certificate by that host's clock (as `etcd-dr
    hosts clock`); the run fails while a clock is off or a certificate is not valid on its host.

    Args:
        cluster: the cluster (its inventory in the served directory)
        sync: step the flagged hosts' clocks (chronyc makestep, else ntpdate -u, else
            timedatectl set-ntp true) and measure again
        ntp_server: the server for `ntpdate -u` (only ntpdate needs one)
    """
    from flows.hosts import hosts_clock_flow

    return hosts_clock_flow.fn(inventory_path=_path(cluster), sync=sync, ntp_server=ntp_server)


@flow(name="etcd-rehearse", flow_run_name="rehearse-{cluster}-{scenario}", log_prints=False)
def rehearse(
    cluster: str,
    scenario: ScenarioName = "masters-lost",
    keys: int = 500,
    voter_method: VoterMethod = VoterMethod.FORCE_NEW_CLUSTER,
) -> dict:
    """Rehearse the bad day on the lab: the fault, the recovery without approval, RTO and RPO, the
    rejoin. Only clusters whose inventory says `rehearsal: true`; the lab is the one named by the
    server's ETCD_DR_LAB_* environment (the rehearsal builds and removes it).

    Args:
        cluster: a cluster whose inventory says rehearsal: true
        scenario: masters-lost, all-voters-lost, all-lost or incident
        keys: the data set written before the fault
        voter_method: how a surviving voter becomes a one-member cluster
    """
    from console.metrics import record_rehearsal
    from etcd_dr.lab.rehearsal.scenarios import Scenario
    from flows.rehearse import RehearsalFailed, rehearse_flow

    inv = load_inventory(_path(cluster))
    if not inv.rehearsal:
        raise InputError(f"cluster {cluster}: rehearsal is false in its inventory; rehearsals are refused")
    try:
        report = rehearse_flow.fn(scenario=Scenario(scenario), keys=keys, voter_method=voter_method)
    except RehearsalFailed:
        record_rehearsal(inv, False, None)  # the metrics: failed (its figures are in the artifact)
        raise
    record_rehearsal(inv, bool(report.get("ok")), report)
    return report


@flow(name="etcd-recover", flow_run_name="recover-{cluster}", log_prints=False)
def recover(
    cluster: str,
    approve: bool = False,
    incident: str | None = None,
    method: Literal["restore", "force-new-cluster"] | None = None,
    target: str | None = None,
    plan_only: bool = False,
    approval_timeout_s: int = 3600,
    slot_wait_s: int = 120,
) -> dict | State:
    """Recover the cluster's etcd after quorum loss: observe, fence, plan, then pause with the plan
    in an approval form (tick approve, type the cluster's name, give your name); one run per
    cluster at a time.

    Args:
        cluster: the cluster to recover (its inventory in the served directory)
        approve: execute without the approval form (an unattended run: fencing then rests on
            power-off or stopped-etcd evidence alone)
        incident: the alert incident that started this run (set by the alert automation; a resolved
            alert cancels the run while it waits for approval)
        method: how a surviving voter becomes a one-member cluster (default: force-new-cluster)
        target: the host a snapshot restore goes to (default: the first voter that answers SSH)
        plan_only: show the plan as an artifact and change nothing
        approval_timeout_s: how long the run waits for an approver
        slot_wait_s: how long a second run of the same cluster waits for the first, then fails
    """
    if incident:
        get_run_logger().info("started by alert incident %s of cluster %s", incident, cluster)
        # resolved between the event and this start (the receiver cancels only runs that exist)
        data = os.environ.get(DATA_ENV)
        if data and incident_open(Path(data) / INCIDENTS_FILE, cluster, incident) is False:
            msg = f"the alerts of incident {incident} resolved before this run started; nothing was done"
            get_run_logger().warning(msg)
            return Cancelled(message=msg)
    return recover_flow.fn(
        inventory_path=_path(cluster),
        approve=approve,
        method=method,
        target=target,
        plan_only=plan_only,
        approval_timeout_s=approval_timeout_s,
        slot_wait_s=slot_wait_s,
    )


@flow(name="etcd-add-learner", flow_run_name="add-learner-{cluster}-{host}", log_prints=False)
def add_learner(cluster: str, host: str, promote: bool = False, dry_run: bool = False) -> dict:
    """Add `host` (role etcd-learner in the inventory) as a learner: certificate, member add, start,
    catch-up; promote on request. A failure after the member add rolls back.

    Args:
        cluster: the cluster (its inventory in the served directory)
        host: the inventory host to add (role etcd-learner)
        promote: make it a voter once caught up
        dry_run: show the plan and change nothing
    """
    from flows.add_learner import add_learner_flow

    return add_learner_flow.fn(host=host, inventory_path=_path(cluster), promote=promote, dry_run=dry_run)


class RejoinFailed(EtcdDrError):
    """A host did not rejoin (rolled back) or the cluster was not safe to change."""


@task(name="rejoin")
def _rejoin(cluster: str, hosts: list[str] | None, dry_run: bool) -> RejoinResult:
    from etcd_dr.learner.plan import LearnerOptions
    from etcd_dr.rejoin.run import rejoin as rejoin_core

    inv = load_inventory(_path(cluster))
    return rejoin_core(inv, hosts, LearnerOptions(promote=True, rejoin=True), dry_run=dry_run,
                       say=get_run_logger().info)  # fmt: skip


@flow(name="etcd-rejoin", flow_run_name="rejoin-{cluster}", log_prints=False)
def rejoin(cluster: str, host: str | None = None, dry_run: bool = False) -> dict | State:
    """Bring lost masters back after a recovery (as `etcd-dr rejoin`): the old member set aside
    (renamed, data dir moved aside, what it held beyond the cluster reported), added as a learner,
    promoted once caught up.

    Args:
        cluster: the cluster (its inventory in the served directory)
        host: one inventory voter to rejoin; empty: every voter that is not a voting member
        dry_run: show the plan and change nothing
    """
    with audited_run():
        res = _rejoin(cluster, [host] if host else None, dry_run)
    lines = [f"## Rejoin in `{cluster}`", "", f"**Outcome.** {res.verdict}", ""]
    lines += [f"```\n{r.plan.render()}\n```" for r in res.results]
    key = f"etcd-rejoin-{cluster}".lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(
        key=key, markdown=redact("\n".join(lines)), description=redact(res.verdict)[:250]
    )
    if not res.ok:
        return Failed(message=res.verdict)
    return res.to_json()


@flow(name="etcd-restore-kubernetes", flow_run_name="restore-kubernetes-{cluster}", log_prints=False)
def restore_kubernetes(
    cluster: str,
    approve: bool = False,
    plan_only: bool = False,
    approval_timeout_s: int = 3600,
    slot_wait_s: int = 120,
) -> dict | State:
    """Bring the Kubernetes API back on the recovered etcd (as `etcd-dr restore-kubernetes`):
    decide (the surviving etcd plane or external etcd; clocks and certificates checked), then pause
    with the plan and the cluster.yml diff in the approval form; ssl_old, RKE's files, `rke up`,
    /readyz and the /registry objects checked. Shares the recovery's slot of the cluster.

    Args:
        cluster: the cluster (its inventory in the served directory; needs its rke: section)
        approve: execute without the approval form
        plan_only: show the plan and change nothing
        approval_timeout_s: how long the run waits for an approver
        slot_wait_s: how long it waits while a recovery of the same cluster runs, then fails
    """
    from flows.restore_kubernetes import restore_kubernetes_flow

    return restore_kubernetes_flow.fn(
        inventory_path=_path(cluster),
        approve=approve,
        plan_only=plan_only,
        approval_timeout_s=approval_timeout_s,
        slot_wait_s=slot_wait_s,
    )


@flow(name="etcd-kubelet-cleanup", flow_run_name="kubelet-cleanup-{cluster}-{host}", log_prints=False)
def kubelet_cleanup(
    cluster: str, host: str, approve: bool = False, plan_only: bool = False, approval_timeout_s: int = 3600
) -> dict | State:
    """Free a kubelet stuck on `no PodsandBox found` (as `etcd-dr hosts kubelet-cleanup`): the
    containers labelled with the missing sandbox shown in the approval form, exactly those removed,
    kubelet restarted and watched.

    Args:
        cluster: the cluster (its inventory in the served directory)
        host: the inventory host whose kubelet loops
        approve: execute without the approval form
        plan_only: show the plan and change nothing
        approval_timeout_s: how long the run waits for an approver
    """
    from flows.hostrepair import kubelet_cleanup_flow

    return kubelet_cleanup_flow.fn(
        host=host,
        inventory_path=_path(cluster),
        approve=approve,
        plan_only=plan_only,
        approval_timeout_s=approval_timeout_s,
    )


@flow(name="etcd-cert-renew", flow_run_name="cert-renew-{cluster}", log_prints=False)
def cert_renew(
    cluster: str,
    host: str | None = None,
    approve: bool = False,
    plan_only: bool = False,
    approval_timeout_s: int = 3600,
) -> dict | State:
    """Reissue member certificates (as `etcd-dr cert renew`): same names and SANs, validity starting
    a few minutes in the past, the old ones kept, one member restarted at a time; refused where a
    restart would cost quorum. The approval form shows the plan first.

    Args:
        cluster: the cluster (its inventory in the served directory)
        host: one etcd host; empty: every etcd host, one at a time
        approve: execute without the approval form
        plan_only: show the plan and change nothing
        approval_timeout_s: how long the run waits for an approver
    """
    from flows.hostrepair import cert_renew_flow

    return cert_renew_flow.fn(
        hosts=[host] if host else None,
        inventory_path=_path(cluster),
        approve=approve,
        plan_only=plan_only,
        approval_timeout_s=approval_timeout_s,
    )
