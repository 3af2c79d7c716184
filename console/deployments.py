"""What `etcd-dr server` serves: one deployment per flow, each taking the cluster by name (a choice of
the served clusters in the run form), with one schedule per cluster where the flow has one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from console import flows
from console.clusters import Cluster

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    """A deployment: its flow, its name, when it runs (None: on demand), for which clusters."""

    name: str
    flow: Flow
    description: str
    every: timedelta | str | None  # an interval, a cron line (UTC), or no schedule
    rehearsal_only: bool = False


SPECS: tuple[Spec, ...] = (
    Spec("status", flows.status, "Observe the cluster every 5 minutes; the table artifact has the verdict.",
         timedelta(minutes=5)),
    Spec("check", flows.check, "Readiness for a disaster, hourly; the run fails on a critical check.",
         timedelta(hours=1)),
    Spec("snapshot", flows.snapshot, "A verified snapshot every 6 hours (trial restore, catalog, off-site, "
         "retention).", timedelta(hours=6)),
    Spec("hosts-clock", flows.hosts_clock, "Every host's clock and certificates by that host's clock, daily "
         "(05:47 UTC); the run fails while anything is flagged.", "47 5 * * *"),
    Spec("rehearse", flows.rehearse, "Weekly rehearsal on the lab (Sundays 04:17 UTC), for inventories "
         "with rehearsal: true: RTO and RPO measured.", "17 4 * * 0", rehearsal_only=True),
    Spec("recover", flows.recover, "Recover etcd after quorum loss: the plan, then the approval form "
         "(unless the run says approve); started by hand or by an alert. One run per cluster at a time.",
         None),
    Spec("add-learner", flows.add_learner, "Add a learner (a member in a second site); promote on request.",
         None),
    Spec("rejoin", flows.rejoin, "Bring lost masters back after a recovery, one at a time.", None),
    Spec("restore-kubernetes", flows.restore_kubernetes, "Kubernetes back on the recovered etcd (rke up on "
         "the surviving plane or external etcd): the plan, then the approval form. Shares the recovery's "
         "slot of the cluster.", None),
    Spec("kubelet-cleanup", flows.kubelet_cleanup, "Free a kubelet stuck on 'no PodsandBox found': the "
         "containers labelled with the missing sandbox, shown in the approval form, removed.", None),
    Spec("cert-renew", flows.cert_renew, "Reissue member certificates (validity from a few minutes ago), "
         "one member restarted at a time, after the approval form.", None),
)  # fmt: skip


def _schedules(spec: Spec, clusters: list[str]) -> list[Schedule]:
    if spec.every is None:
        return []
    make: Any = Interval if isinstance(spec.every, timedelta) else Cron
    # a fixed anchor: intervals fall on the clock (a 6-hourly snapshot at 00, 06, 12, 18 UTC) and a
    # restart neither fires every schedule at once nor shifts them
    kw: dict[str, Any] = {"timezone": "UTC"}
    if make is Interval:
        kw["anchor_date"] = ANCHOR
    # one schedule per cluster, its parameters naming the cluster; the slug keeps it across restarts
    return [make(spec.every, parameters={"cluster": c}, slug=f"{spec.name}-{c}", **kw) for c in clusters]


def _only(d: RunnerDeployment, clusters: list[str]) -> None:
    """The cluster parameter becomes a choice of the served clusters: the UI shows a list, and the
    server refuses any other name before a run is created (enforce_parameter_schema)."""
    props = d._parameter_openapi_schema.properties
    props["cluster"] = {**props["cluster"], "enum": clusters}


def build(clusters: dict[str, Cluster]) -> list[RunnerDeployment]:
    out: list[RunnerDeployment] = []
    for spec in SPECS:
        names = [c.name for c in clusters.values() if c.rehearsal or not spec.rehearsal_only]
        if not names:
            continue  # no cluster may be rehearsed: no rehearsal deployment at all
        d = spec.flow.to_deployment(
            spec.name,
            description=spec.description,
            schedules=_schedules(spec, names),
            tags=["etcd-dr"],
            enforce_parameter_schema=True,
        )
        _only(d, names)
        out.append(d)
    return out
