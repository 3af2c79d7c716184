"""What every flow does first: tie the core's audit records to this flow run and keep secrets out
of the logs Prefect ships."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect.runtime import flow_run

from etcd_dr import audit
from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory, load_inventory


@contextlib.contextmanager
def audited_run() -> Iterator[str | None]:
    """Within the block, audit records written by the core carry this flow run's id. Reset on exit:
    a sync flow runs in its caller's context, and the id must not outlive the run."""
    run_id = flow_run.get_id()
    # Prefect sets its handlers up when a run starts: mask secrets in whatever they ship.
    audit.redact_log_handlers(
        *(logging.getLogger(n) for n in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"))
    )
    token = audit.current_flow_run_id.set(str(run_id) if run_id else None)
    try:
        yield run_id
    finally:
        audit.current_flow_run_id.reset(token)


@contextlib.contextmanager
def cluster_inventory(block: str | None, path: str | None, flow_name: str) -> Iterator[Inventory]:
    """The core's Inventory from a saved ClusterInventory block (credentials materialized for the
    duration of the block) or from an inventory file."""
    if block:
        from blocks.inventory import ClusterInventory

        with ClusterInventory.load(block).materialize() as inv:
            yield inv
    elif path:
        yield load_inventory(path)
    else:
        raise InputError(f"{flow_name} needs inventory_block or inventory_path")
