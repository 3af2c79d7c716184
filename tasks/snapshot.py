"""Snapshot tasks: thin wrappers over etcd_dr.snapshots.service (take, verify, catalog, offsite, prune)."""

from __future__ import annotations

from prefect import task

from etcd_dr.inventory import Inventory
from etcd_dr.snapshots import service
from etcd_dr.snapshots.record import SnapshotRecord
from etcd_dr.snapshots.retention import Decision
from etcd_dr.snapshots.take import Taken
from etcd_dr.snapshots.verify import Verification
from etcd_dr.state import ClusterState


@task(name="snapshot-take", retries=1, retry_delay_seconds=5, cache_policy=None)
def take_snapshot(inventory: Inventory, state: ClusterState, allow_learner: bool = False) -> Taken:
    """A retry takes a new snapshot under a new id: a failed stream leaves no file behind."""
    return service.take(inventory, state, allow_learner=allow_learner, show_progress=False)


@task(name="snapshot-verify", cache_policy=None)
def verify_snapshot(inventory: Inventory, taken: Taken, trial_restore: bool = True) -> Verification:
    return service.verify_taken(inventory, taken, trial_restore=trial_restore)


@task(name="snapshot-catalog", cache_policy=None)
def catalog_snapshot(inventory: Inventory, taken: Taken, verification: Verification) -> SnapshotRecord:
    return service.catalog_add(inventory, service.record_for(taken, verification))


@task(name="snapshot-offsite", retries=2, retry_delay_seconds=10, cache_policy=None)
def offsite_copy(inventory: Inventory, record: SnapshotRecord) -> SnapshotRecord:
    return service.copy_offsite(inventory, record)


@task(name="snapshot-prune", cache_policy=None)
def prune_snapshots(inventory: Inventory, dry_run: bool = False) -> list[Decision]:
    """Classify (pure), then delete what the policy does not keep, then the delta log's segments
    no kept snapshot needs; returns every snapshot decision."""
    from etcd_dr.deltalog.service import prune_segments

    decisions = service.plan_prune(inventory)
    if not dry_run:
        service.delete_decided(inventory, decisions)
        prune_segments(inventory)
    return decisions
