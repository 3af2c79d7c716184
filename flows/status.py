"""The status flow: observe the cluster and publish a table artifact with the verdict."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.inventory import ClusterInventory
from etcd_dr.inventory import load_inventory
from etcd_dr.state import ClusterState
from flows.common import audited_run
from tasks.observe import observe_cluster


def _rows(state: ClusterState) -> list[dict]:
    return [
        {
            "name": m["name"],
            "role": "learner" if m["is_learner"] else "voter",
            "endpoint": m["endpoint"],
            "etcd": "up" if m["reachable"] else "down",
            "ssh": m["ssh"],
            "leader": "*" if state.leader == m["name"] else "",
            "raft_index": m["raft_index"],
            "revision": m["revision"],
            "version": m["version"],
            "error": m["error"] or "",
        }
        for m in state.to_json()["members"]
    ]


@flow(name="etcd-status", log_prints=False)
def status_flow(
    inventory_block: str | None = None, inventory_path: str | None = None, check_ssh: bool = True
) -> dict:
    """Observe one cluster. Give a saved ClusterInventory block's name, or an inventory file path."""
    logger = get_run_logger()
    if not (inventory_block or inventory_path):
        raise ValueError("status_flow needs inventory_block or inventory_path")
    with audited_run():
        if inventory_block:
            with ClusterInventory.load(inventory_block).materialize() as inv:
                state = observe_cluster(inv, check_ssh=check_ssh)
        else:
            state = observe_cluster(load_inventory(inventory_path), check_ssh=check_ssh)
    logger.info(state.verdict)
    create_table_artifact(
        key=f"etcd-status-{state.cluster}".lower().replace("_", "-"),
        table=_rows(state),
        description=f"**{state.verdict}**",
    )
    return state.to_json()
