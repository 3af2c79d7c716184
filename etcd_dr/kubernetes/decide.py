"""The Kubernetes decision from what is on disk and what the cluster shows: the one entry point
`etcd-dr kubernetes plan|cluster-yml` (and later the flow) share. Reads RKE's files the inventory
names (`rke:`), the client PEMs (`etcd.client`), observes the cluster unless given a picture, runs
the pure planner, then measures the clocks and certificates of the hosts the way back uses
(clockgate: the same measurement as `etcd-dr hosts clock`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.hostrepair.clock import ClockReport, clock_report
from etcd_dr.inventory import InMemoryFile, Inventory
from etcd_dr.kubernetes import clockgate
from etcd_dr.kubernetes.plan import ClientPem, KubernetesDecision, plan_kubernetes
from etcd_dr.kubernetes.rkefiles import FullState, RkeConfig, read_cluster_yml, read_state_file
from etcd_dr.state import LOOK_DEADLINE_S, ClusterState, observe


@dataclass(frozen=True)
class Decided:
    decision: KubernetesDecision
    state: ClusterState
    cluster_yml: Path
    state_file: Path
    kube_config: Path
    config: RkeConfig
    rke_state: FullState
    clocks: ClockReport | None = None  # measured on the hosts the way back uses (None: refused before)

    def to_json(self) -> dict:
        return {
            **self.decision.to_json(),
            "cluster_yml": str(self.cluster_yml),
            "state_file": str(self.state_file),
            "verdict": self.state.verdict,
            "clocks": self.clocks.to_json() if self.clocks else None,
        }


# the clocks of a few answering hosts: 5 samples each take well under a second; a host that does
# not answer within this is reported as not measured, never waited for longer
CLOCK_DEADLINE_S = 8.0


def measure_clocks(inv: Inventory, hosts: tuple[str, ...]) -> ClockReport:
    """`etcd-dr hosts clock`'s measurement, on these hosts only."""
    return clock_report(inv, only=hosts, deadline_s=CLOCK_DEADLINE_S)


def decide(inv: Inventory, *, state: ClusterState | None = None) -> Decided:
    """InputError when the inventory names no RKE files or they cannot be read (nothing contacted
    then: the files are read before the cluster is observed)."""
    if inv.rke is None:
        raise InputError(
            "rke: the inventory has no rke: section; add one (cluster_yml, deploy_host) or write the "
            "inventory from RKE's files with `etcd-dr inventory import-rke CLUSTER_YML`"
        )
    yml, st_path = inv.rke.cluster_yml, inv.rke.state_path()
    cfg = read_cluster_yml(yml)
    full = read_state_file(st_path)
    client = client_pem(inv)
    picture = state if state is not None else look(inv)
    d = plan_kubernetes(picture, inv, cfg, full.current.rke_config, client=client)
    clocks = None
    if d.ok:
        hosts = clockgate.involved_hosts(d, inv.rke.deploy_host)
        clocks = measure_clocks(inv, hosts)
        d = clockgate.gate(d, clocks, hosts)
    return Decided(d, picture, yml, st_path, inv.rke.kube_config_path(), cfg, full, clocks)


def look(inv: Inventory) -> ClusterState:
    """The cluster, observed within status's one deadline: dead masters (the reason for this) cost it
    once, not the etcd dial timeout and then the SSH connect timeout."""
    return observe(inv, deadline_s=LOOK_DEADLINE_S)


def client_pem(inv: Inventory) -> ClientPem | None:
    """The inventory's etcd client files as PEM text (a Prefect block's in memory, else on disk)."""
    parts = []
    for f in (inv.etcd.client.ca_cert, inv.etcd.client.cert, inv.etcd.client.key):
        if isinstance(f, InMemoryFile):
            parts.append(bytes(f).decode(errors="replace"))
            continue
        try:
            parts.append(Path(f).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
    return ClientPem(*parts)
