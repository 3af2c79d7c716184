"""The recovery flow's Prefect side without hosts: the approval form and its judgement, the
artifacts' text, and the one-recovery-per-cluster concurrency limit on a real Prefect server (a
second run finds the slot taken and does nothing). The approval itself, paused and resumed for real
on a cluster that lost its masters, is in tests/lab/test_recover_flow.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcd_dr.plans import Outcome, Plan, Step, StepResult, StepState
from etcd_dr.recovery.plan import RecoveryPath
from etcd_dr.recovery.run import RecoverResult, RecoverStatus
from flows.recover import (
    Approval,
    AttestationForm,
    RecoveryApproval,
    approval_description,
    judge,
    plan_markdown,
    timeline_rows,
    verdict_markdown,
)
from tests.flows.flowthread import settled_task_runs
from tests.unit.inventory_sample import VALID, write_invdir

SECRET = "--peer-client-password=hunter2hunter2"


@pytest.fixture
def prefect(prefect_harness) -> Iterator[None]:
    """The session's Prefect server; this test's logs are shipped before it goes (a log queued for
    a stopped server costs a minute of retries at interpreter exit)."""
    from prefect.logging.handlers import APILogHandler

    yield
    asyncio.run(APILogHandler.aflush())


def _plan() -> Plan:
    steps = (
        Step("fence-check:master3", "fence-check", "master3", "check fencing", "fenced", "why 1"),
        Step(
            "force-new-cluster:master3",
            "etcd-run",
            "master3",
            "start etcd once with --force-new-cluster",
            "master3 leads alone",
            "why | 2",
            destructive=True,
            runs=f"docker run ... {SECRET}",
        ),
    )
    return Plan("recover", "prod-eu1", "quorum lost: 1 of 3 voters reachable; master3 ...", steps)


def test_judge_needs_the_box_and_the_exact_cluster_name() -> None:
    def form(**kw: object) -> RecoveryApproval:
        return RecoveryApproval(**{"approver": "ann", **kw})

    assert judge(form(approve=True, cluster="prod-eu1", comment="ticket 42"), "prod-eu1") == Approval(
        "approved", "approved by ann (ticket 42)", approver="ann"
    )
    a = judge(form(approve=False, cluster="prod-eu1"), "prod-eu1")
    assert (a.state, a.ok, a.sentence) == ("rejected", False, "rejected by ann")
    a = judge(form(approve=True, cluster="prod-eu"), "prod-eu1")
    assert not a.ok and "typed 'prod-eu', not the cluster's name 'prod-eu1'" in a.sentence
    # the server validates the answer against this schema: a name is required, nothing else is taken
    schema = RecoveryApproval.model_json_schema()
    assert schema["required"] == ["approver"] and schema["additionalProperties"] is False


def test_form_and_artifacts_show_the_plan_without_secrets() -> None:
    plan = _plan()
    text = approval_description(plan, 600, plan_url="/artifacts/artifact/42")
    assert plan.reason in text and "**Destructive: 1 of 2 steps.**\n- step 2: start etcd once" in text
    # what a step does; what follows ';' or '(' is in the plan the form links to
    assert "- step 2: start etcd once with --force-new-cluster (on master3)\n" in text
    assert "[the plan](/artifacts/artifact/42)" in text and "Expires " in text
    assert "the plan (the run's Artifacts tab)" in approval_description(plan, 600)
    assert "Resuming" not in text and "**Resuming** an unfinished" in approval_description(plan, 600, True)
    # the plan's form has no attestation field (it would squeeze the plan out of sight); the
    # attestation's has, and the same answer fields
    assert "down" not in RecoveryApproval.model_json_schema()["properties"]
    assert set(AttestationForm.model_json_schema()["properties"]) == {
        "approve", "cluster", "approver", "comment", "down"
    }  # fmt: skip
    md = plan_markdown(plan, "force-new-cluster")
    assert "| 2 | force-new-cluster:master3 | master3 | yes |" in md and "why / 2" in md
    for t in (text, md):
        assert "hunter2" not in t

    done = StepResult(plan.steps[0], StepState.SKIPPED, 0.01, detail="fenced already")
    failed = StepResult(plan.steps[1], StepState.FAILED, 2.5, "boom", f"boom {SECRET}")
    res = RecoverResult(
        RecoverStatus.FAILED,
        "recovery failed at: start etcd once: boom",
        plan,
        RecoveryPath.FORCE_NEW_CLUSTER,
        outcome=Outcome(plan, (done, failed)),
        timings={"observe": 3.2, "fence": 0.4, "plan": 0.01, "execute": 2.6, "total": 9.1},
    )
    approval = Approval("approved", "approved by ann", 2.0, "ann")
    rows = timeline_rows(res, approval)
    assert [(r["step"], r["state"]) for r in rows] == [
        ("observe", "done"),
        ("fence", "done"),
        ("plan", "done"),
        ("approval", "approved"),
        ("fence-check:master3", "skipped"),
        ("force-new-cluster:master3", "failed"),
        ("total", "failed"),
    ]
    assert rows[5]["duration_s"] == "2.50" and "hunter2" not in rows[5]["detail"]
    v = verdict_markdown(res, approval)
    assert "| status | failed |" in v and "| approval | approved by ann |" in v
    assert "observe 3.20, fence 0.40, plan 0.01, execute 2.60, total 9.10" in v


def test_concurrency_limit_and_a_second_run_that_finds_it_taken(tmp_path: Path, prefect) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.concurrency.sync import concurrency

    from flows.recover import ensure_concurrency_limit, main, recover_flow

    lim = ensure_concurrency_limit("busy-test")
    assert (lim.name, lim.limit, lim.active, lim.active_slots) == ("recover-busy-test", 1, True, 0)
    assert ensure_concurrency_limit("busy-test").id == lim.id  # idempotent
    with get_client(sync_client=True) as c:  # someone widened and disabled it: set back
        c.update_global_concurrency_limit(
            "recover-busy-test", GlobalConcurrencyLimitUpdate(limit=3, active=False)
        )
    assert main(["ensure-limit", "--cluster", "busy-test"]) == 0  # the operator's setup command
    again = ensure_concurrency_limit("busy-test")
    assert (again.id, again.limit, again.active) == (lim.id, 1, True)

    from blocks.inventory import ClusterInventory

    d = write_invdir(tmp_path)
    (d / "inventory.yaml").write_text(VALID.replace("cluster: lab", "cluster: busy-test"))
    ClusterInventory.from_inventory_file(d / "inventory.yaml").save("busy-test", overwrite=True)
    assert main(["ensure-limit", "--inventory-block", "busy-test"]) == 0  # as `prefect deploy` runs it
    # the test holds the one slot, as a first recovery of the cluster would (strict: it exists)
    with concurrency("recover-busy-test", occupy=1, strict=True):
        t0 = time.monotonic()
        state = recover_flow(inventory_block="busy-test", slot_wait_s=1, return_state=True)
        took = time.monotonic() - t0
    assert state.is_failed(), state
    assert (state.message or "").startswith(
        "another recovery of cluster busy-test holds the concurrency slot recover-busy-test (waited 1 s); "
        "nothing was done"
    ), state.message
    assert took < 30, took
    # it did not act: no observation (SSH probes are audited), no journal, not even the core's lock
    assert sorted(p.name for p in d.iterdir()) == ["certs", "inventory.yaml", "keys"]
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name("recover-busy-test").active_slots == 0


def test_a_slot_freed_during_the_wait_is_taken(prefect) -> None:
    """The wait reads the limit itself (flows/recover.py, SLOT_POLL_S): a slot given back while a
    second run waits is taken, and held until that run's block ends."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from flows.recover import ensure_concurrency_limit, recovery_slot

    ensure_concurrency_limit("freed-test")
    held, release = threading.Event(), threading.Event()

    def first_run() -> None:
        with concurrency("recover-freed-test", occupy=1, strict=True):
            held.set()
            release.wait(30)

    t = threading.Thread(target=first_run)
    t.start()
    try:
        assert held.wait(30)
        threading.Timer(1.5, release.set).start()
        t0 = time.monotonic()
        with recovery_slot("freed-test", None, wait_s=60):
            waited = time.monotonic() - t0
            with get_client(sync_client=True) as c:
                assert c.read_global_concurrency_limit_by_name("recover-freed-test").active_slots == 1
    finally:
        release.set()
        t.join(30)
    assert 1.0 < waited < 30, waited  # it waited for the first run, and not to its own deadline
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name("recover-freed-test").active_slots == 0


def test_a_bad_method_is_refused_before_anything(prefect) -> None:
    from flows.recover import recover_flow

    state = recover_flow(inventory_path="/nonexistent.yaml", method="snapshot", return_state=True)
    assert state.is_failed() and "method" in (state.message or ""), state.message


def test_a_failed_step_is_a_failed_task_run_and_the_core_gets_its_result(prefect) -> None:
    from prefect import flow

    from tasks.recover import run_recover_step

    ok, bad = _plan().steps

    @flow
    def two_steps() -> list[StepResult]:
        return [
            run_recover_step(ok, lambda: StepResult(ok, StepState.SKIPPED, detail="fenced already")),
            run_recover_step(bad, lambda: StepResult(bad, StepState.FAILED, 0.1, "boom", "boom")),
        ]

    state = two_steps(return_state=True)
    assert state.is_completed()  # the flow decides; recover_flow ends Failed on the core's verdict
    assert [(r.step.id, r.state) for r in state.result()] == [
        ("fence-check:master3", StepState.SKIPPED),
        ("force-new-cluster:master3", StepState.FAILED),
    ]
    expected = {"fence-check:master3": "COMPLETED", "force-new-cluster:master3": "FAILED"}
    runs = settled_task_runs(state.state_details.flow_run_id, expected)
    assert sorted((t.name, t.state.type.value) for t in runs) == sorted(expected.items())
