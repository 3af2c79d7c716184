"""The delta log's watcher as a long-lived flow run per cluster (`etcd-dr backup stream` in a
worker): it runs until cancelled (or a limit) and fails when it stops at a gap, so an alert fires.
Cancelling the run stops it at the next check (about a second); a crash leaves the open segment,
which the next run seals and resumes after.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from etcd_dr.deltalog.service import stream_cluster
from etcd_dr.errors import EtcdDrError
from flows.common import audited_run, cluster_inventory


class DeltaLogGap(EtcdDrError):
    """The watcher stopped at a gap: a new full snapshot is needed (the message says why)."""


@flow(name="etcd-backup-stream", log_prints=False)
def backup_stream_flow(
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    max_seconds: float | None = None,
    until_revision: int | None = None,
) -> dict:
    """Append every revision of one cluster to its delta log until stopped."""
    logger = get_run_logger()
    with audited_run(), cluster_inventory(inventory_block, inventory_path, "backup_stream_flow") as inv:
        res = stream_cluster(inv, max_seconds=max_seconds, until_revision=until_revision)
    logger.info("delta log %s: %s", res.state, res.reason)
    if not res.ok:
        raise DeltaLogGap(res.reason)
    return res.to_json()
