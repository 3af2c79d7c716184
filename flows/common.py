"""What every flow does first: tie the core's audit records to this flow run and keep secrets out
of the logs Prefect ships."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect.runtime import flow_run

from etcd_dr import audit


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
