"""What every flow does first: tie the core's audit records to this flow run and keep secrets out
of the logs Prefect ships; and the approval form's text for a plan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from prefect.runtime import flow_run

from etcd_dr import audit
from etcd_dr.audit import redact
from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.plans import Plan


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


def plan_approval_text(
    what: str, plan: Plan, timeout_s: int, *, note: Sequence[str] = (), tail: Sequence[str] = ()
) -> str:
    """An approval form's text (markdown) for a plan: the heading, the decision, `note`, the
    destructive steps, the plan, `tail`, what approving takes and when the request expires."""
    expires = (datetime.now(UTC) + timedelta(seconds=timeout_s)).strftime("%Y-%m-%d %H:%M:%S UTC")
    destructive = [s for s in plan.steps if s.destructive]
    lines = [
        f"## {what} on cluster `{plan.cluster}`: approval needed",
        "",
        f"**Decision.** {plan.reason}",
        "",
        *note,
        f"**Destructive steps ({len(destructive)} of {len(plan.steps)}).**",
        *(f"- {s.description} (on {s.host or '-'})" for s in destructive),
        "",
        "```",
        plan.render(),
        "```",
        *tail,
        "",
        f"To execute: tick **Approve**, type `{plan.cluster}` as the cluster name, give your name. "
        "Anything else changes nothing.",
        "",
        f"This request expires at {expires}; then the run fails and nothing is changed.",
    ]
    return redact("\n".join(lines))
