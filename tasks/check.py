"""The readiness check: structured results under one deadline (etcd_dr.readiness)."""

from __future__ import annotations

from prefect import task

from etcd_dr.inventory import Inventory
from etcd_dr.readiness import DEFAULT_DEADLINE_S, Readiness, check_readiness


@task(name="readiness-check", retries=0, cache_policy=None)
def readiness_check(inventory: Inventory, deadline_s: float = DEFAULT_DEADLINE_S) -> Readiness:
    """Read-only and bounded by its own deadline (Prefect's timeout cannot interrupt blocking I/O);
    never cached: it reports the cluster as it is now."""
    return check_readiness(inventory, deadline_s=deadline_s)
