"""Host repair's tasks: thin wrappers over etcd_dr.hostrepair."""

from __future__ import annotations

from prefect import task

from etcd_dr.hostrepair.clock import ClockReport, clock_report
from etcd_dr.inventory import Inventory


@task(name="hosts-clock", retries=0, cache_policy=None)
def hosts_clock(inventory: Inventory, sync: bool = False, ntp_server: str | None = None) -> ClockReport:
    """Each host's clock and every certificate on it by that clock (`etcd-dr hosts clock`); with sync,
    the flagged clocks stepped and measured again. Never cached: it reports the hosts as they are."""
    return clock_report(inventory, sync=sync, ntp_server=ntp_server)
