"""Observe the cluster: a frozen ClusterState (etcd_dr.state)."""

from __future__ import annotations

from prefect import task

from etcd_dr.inventory import Inventory
from etcd_dr.state import ClusterState, observe


@task(name="observe", retries=0, cache_policy=None)
def observe_cluster(inventory: Inventory, check_ssh: bool = True) -> ClusterState:
    """Read-only; its answer is the decision input of every later step, so it is never cached."""
    return observe(inventory, check_ssh=check_ssh)
