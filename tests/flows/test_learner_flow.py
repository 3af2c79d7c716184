"""The learner flow's step hook on a real Prefect server: its steps run the recover flow's way
(tasks.steps): one task run per step, named by the step's id, and a FAILED step fails its task run
while the core still gets its result and stops there (it showed Completed, named by action)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from etcd_dr.errors import EtcdDrError
from etcd_dr.plans import Outcome, Plan, Step, StepState, execute
from tests.flows.flowthread import settled_task_runs


@pytest.fixture
def prefect(prefect_harness) -> Iterator[None]:
    from prefect.logging.handlers import APILogHandler

    yield
    asyncio.run(APILogHandler.aflush())


class Held:
    def done(self, step: Step) -> bool:
        return True

    def run(self, step: Step) -> None:
        raise AssertionError("a held step is not run")


class Fails:
    def done(self, step: Step) -> bool:
        return False

    def run(self, step: Step) -> None:
        raise EtcdDrError("etcd refused: the cluster has its one learner already")


def test_a_failed_learner_step_is_a_failed_task_run_named_by_its_id(prefect) -> None:
    from prefect import flow

    from tasks.learner import run_learner_step

    steps = (
        Step("cert:node1", "cert", "node1", "issue a certificate", "valid", "why"),
        Step("member-add:node1", "member-add", "node1", "add node1 as a learner", "a learner", "why", True),
        Step("start:node1", "cert", "node1", "start etcd", "runs", "why"),
    )
    plan = Plan("learner-add", "c1", "node1 joins as a learner", steps)

    @flow
    def learner_steps() -> Outcome:
        return execute(plan, {"cert": Held(), "member-add": Fails()}, run_step=run_learner_step)

    state = learner_steps(return_state=True)
    assert state.is_completed()  # the flow decides on the core's verdict (add_learner_flow raises)
    out = state.result()
    assert [r.state for r in out.results] == [StepState.SKIPPED, StepState.FAILED, StepState.NOT_RUN]
    failed = out.failed
    assert failed is not None and "one learner already" in (failed.error or "")
    expected = {"cert:node1": "COMPLETED", "member-add:node1": "FAILED"}
    runs = settled_task_runs(state.state_details.flow_run_id, expected)
    assert sorted((t.name, t.state.type.value) for t in runs) == sorted(expected.items())
