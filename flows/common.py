"""What every flow does first: tie the core's audit records to this flow run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.runtime import flow_run

from etcd_dr import audit


@contextlib.contextmanager
def audited_run() -> Iterator[str | None]:
    """Within the block, audit records written by the core carry this flow run's id. Reset on exit:
    a sync flow runs in its caller's context, and the id must not outlive the run."""
    run_id = flow_run.get_id()
    token = audit.current_flow_run_id.set(str(run_id) if run_id else None)
    try:
        yield run_id
    finally:
        audit.current_flow_run_id.reset(token)
