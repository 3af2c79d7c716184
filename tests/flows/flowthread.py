"""A flow run in a thread, as a worker would run it, while the test plays the approver: its run read
back by name from the Prefect API, waited for until paused, joined."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any


class FlowThread:
    def __init__(self, flow: Any, prefix: str, **params: Any) -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.state: Any = None
        f = flow.with_options(flow_run_name=self.name)

        def target() -> None:
            self.state = f(**params, return_state=True)

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def run(self) -> Any:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[self.name])))
        return runs[0] if runs else None

    def wait_paused(self, timeout: float = 60) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            run = self.run()
            if run is not None and run.state is not None and run.state.is_paused():
                return run
            assert self.thread.is_alive(), f"the flow ended without pausing: {self.state}"
            time.sleep(0.3)
        raise AssertionError(f"flow run {self.name} did not pause within {timeout} s")

    def join(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"flow run {self.name} still running after {timeout} s"
        return self.state


def settled_task_runs(run_id: Any, expected: Mapping[str, str], timeout: float = 60) -> list[Any]:
    """The run's task runs once each named one has reached the API in its expected state type
    ("COMPLETED", "FAILED"): their states arrive as events, one by one, after the flow's own (60 s:
    a loaded CI machine). Reading until every run read is completed is not enough: the first ones
    may be all that arrived (a quick-loop run read one of five). What was there at the timeout
    otherwise, for the caller's assertion to show."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    end = time.monotonic() + timeout
    with get_client(sync_client=True) as c:
        while True:
            trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            seen = {t.name: t.state.type.value for t in trs if t.state is not None}
            if seen == dict(expected) or time.monotonic() > end:
                return trs
            time.sleep(0.25)
