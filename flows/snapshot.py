"""The snapshot flow: observe -> take -> verify -> catalog -> offsite -> prune, with an artifact.

Deployed with a daily schedule (deployments/prefect.yaml). Retention runs only after a VERIFIED
snapshot: a failing run never deletes the backups it failed to replace.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcd_dr.errors import EtcdDrError
from etcd_dr.snapshots.record import SnapshotRecord
from etcd_dr.snapshots.retention import Decision
from flows.common import audited_run, cluster_inventory
from tasks.observe import observe_cluster
from tasks.snapshot import catalog_snapshot, offsite_copy, prune_snapshots, take_snapshot, verify_snapshot


class SnapshotNotVerified(EtcdDrError):
    """The flow took a snapshot but could not call it verified: the run fails so an alert fires."""


def _markdown(record: SnapshotRecord, decisions: list[Decision]) -> str:
    rows = [
        ("id", record.id),
        ("verdict", f"**{record.verdict}**: {record.reason}"),
        ("source", f"{record.member} ({record.endpoint}): {record.source_reason}"),
        ("revision", f"{record.revision} ({record.revision_source}), raft index {record.raft_index}"),
        ("size", f"{record.size:,} bytes"),
        ("sha256", f"`{record.sha256}`"),
        ("created", record.created.isoformat()),
        ("path", f"`{record.path}`"),
    ]
    rows += [("off-site", f"{c.location}: {'verified' if c.verified else c.reason}") for c in record.offsite]
    out = ["| field | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    deleted = [d for d in decisions if not d.keep]
    if deleted:
        out += ["", "**Pruned**", "", *(f"- `{d.record.id}`: {d.reason}" for d in deleted)]
    return "\n".join(out)


@flow(name="etcd-snapshot", log_prints=False)
def snapshot_flow(
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    allow_learner: bool = False,
    trial_restore: bool = True,
    prune: bool = True,
) -> dict:
    """Take a verified snapshot of one cluster, catalog it, copy it off-site and apply retention."""
    logger = get_run_logger()
    with audited_run(), cluster_inventory(inventory_block, inventory_path, "snapshot_flow") as inv:
        state = observe_cluster(inv, check_ssh=False)
        logger.info(state.verdict)
        taken = take_snapshot(inv, state, allow_learner=allow_learner)
        verification = verify_snapshot(inv, taken, trial_restore=trial_restore)
        record = catalog_snapshot(inv, taken, verification)
        logger.info("%s: %s: %s", record.id, record.verdict, record.reason)
        record = offsite_copy(inv, record)
        decisions = prune_snapshots(inv) if prune and record.verified else []
    create_markdown_artifact(
        key=f"etcd-snapshot-{record.cluster}".lower().replace("_", "-"),
        markdown=_markdown(record, decisions),
        description=f"{record.verdict}: {record.reason}",
    )
    if not record.verified or not all(c.verified for c in record.offsite):
        raise SnapshotNotVerified(f"snapshot {record.id}: {record.verdict}: {record.reason}")
    return record.to_json()
