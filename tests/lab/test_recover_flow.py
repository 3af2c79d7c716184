"""The recovery flow on the real lab and a real Prefect server: the masters are lost (master1 and
master2 powered off), the flow runs in a thread, pauses with the approval form, and this test
answers it as an approver would in the UI (`resume_flow_run` with the form's fields). Approved: the
cluster is recovered on master3, one task run per plan step, three artifacts. Rejected, or left
unanswered until the timeout: nothing changed on master3 (containers, data dirs), no journal, no
step run; the final states are the ones flows/recover.py documents."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.state import client_for
from tests.flows.flowthread import FlowThread as SharedFlowThread
from tests.flows.flowthread import settled_task_runs

from .conftest import Lab
from .test_faults import inventory_copy, wait_voters
from .test_recover import assert_steps_ran, one, sh

pytestmark = pytest.mark.lab
KEYS = 200
REASON = "quorum lost: 1 of 3 voters reachable; master3 has the highest raft index"
# what a recovery on master3 would change: its containers, their state and arguments, its data dirs
PICTURE = (
    "docker ps -a --format '{{.Names}} {{.ID}}' | sort; "
    "docker inspect -f '{{.Id}} {{.State.Running}} {{.State.StartedAt}} {{.HostConfig.RestartPolicy.Name}} "
    "{{range .Args}}{{.}} {{end}}' etcd; ls -d /var/lib/etcd*"
)


class FlowThread(SharedFlowThread):
    """recover_flow in a background thread, as a worker would run it; the test is the approver. A
    lab recovery takes longer than the flow tests' faked ones: longer waits by default."""

    started: list[FlowThread] = []  # noqa: RUF012 (every one, for the teardown below)

    def __init__(self, **params: Any) -> None:
        from flows.recover import recover_flow

        FlowThread.started.append(self)
        super().__init__(recover_flow, "recover-test", **params)

    def wait_paused(self, timeout: float = 120) -> Any:
        return super().wait_paused(timeout)

    def join(self, timeout: float = 300) -> Any:
        return super().join(timeout)


def form_of(run: Any) -> tuple[str, dict]:
    from prefect.input.actions import read_flow_run_input

    keys = run.state.state_details.run_input_keyset
    return (
        read_flow_run_input(keys["description"], flow_run_id=run.id),
        read_flow_run_input(keys["schema"], flow_run_id=run.id),
    )


def task_runs(run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return sorted(trs, key=lambda t: t.start_time or t.expected_start_time)


def artifacts(run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: a for a in arts}


def audit_since(lab: Lab, n: int, pred: Callable[[dict], bool] = lambda r: True) -> list[dict]:
    lines = (lab.cfg.dir / "audit.jsonl").read_text().splitlines()[n:]
    return [r for r in map(json.loads, lines) if pred(r)]


def audit_len(lab: Lab) -> int:
    path = lab.cfg.dir / "audit.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def flush_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    asyncio.run(APILogHandler.aflush())  # ship them while the test server is still up


@pytest.fixture(autouse=True)
def _no_run_left_paused() -> Iterator[None]:
    """A test that fails while its run waits for approval would leave the run paused, holding the
    cluster's recovery slot and lock: every later recovery of the lab would wait for it and fail.
    Rejected here, so that one failure stays one."""
    yield
    from prefect.flow_runs import resume_flow_run

    while FlowThread.started:
        ft = FlowThread.started.pop()
        if not ft.thread.is_alive():
            continue
        run = ft.run()
        if run is not None and run.state is not None and run.state.is_paused():
            resume_flow_run(run.id, run_input={"approve": False, "cluster": "-", "approver": "teardown"})
        ft.thread.join(120)


def test_rejected_or_unanswered_approval_changes_nothing(running_lab: Lab, prefect_harness) -> None:
    from prefect.flow_runs import resume_flow_run

    lab = running_lab
    wait_voters(lab, 3)
    cluster = f"lab-{lab.cfg.prefix}"
    journal = lab.cfg.dir / f"recover-{cluster}.json"
    inv_path = str(lab.cfg.inventory_path)
    before = sh(lab, "master3", PICTURE)
    n0 = audit_len(lab)
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    try:
        # rejected in the form: Cancelled, nothing changed
        ft = FlowThread(inventory_path=inv_path, approval_timeout_s=600, approval_poll_s=1)
        run = ft.wait_paused()
        text, _ = form_of(run)
        assert f"**Recovery of `{cluster}`: approval needed.** {REASON}" in text
        assert "**Destructive: " in text and "nothing is done if it changed" in text
        resume_flow_run(
            run.id,
            run_input={
                "approve": False,
                "cluster": cluster,
                "approver": "test-rejecter",
                "comment": "not now",
            },
        )
        state = ft.join()
        assert state.is_cancelled(), state
        assert state.message == "rejected by test-rejecter (not now); nothing was changed"
        assert task_runs(run.id) == []
        arts = artifacts(run.id)
        assert {f"recover-{k}-{cluster}" for k in ("plan", "timeline", "verdict")} <= set(arts)
        assert "| status | not-confirmed |" in arts[f"recover-verdict-{cluster}"].data
        approvals = audit_since(lab, n0, lambda r: r["action"] == "recover-approval")
        assert [(a["outcome"], a["approver"], a["comment"], a["flow_run_id"]) for a in approvals] == [
            ("refused", "test-rejecter", "not now", str(run.id))
        ]

        # nobody answers: the pause expires, the run fails (Prefect's rule), nothing changed
        ft = FlowThread(inventory_path=inv_path, approval_timeout_s=3, approval_poll_s=1)
        timed_out = ft.join()
        assert timed_out.is_failed(), timed_out
        run2 = ft.run()
        verdict = artifacts(run2.id)[f"recover-verdict-{cluster}"].data
        assert "| approval | approval timed out after 3 s |" in verdict
        assert task_runs(run2.id) == []

        assert sh(lab, "master3", PICTURE) == before
        assert not journal.exists()
        assert audit_since(lab, n0, lambda r: r["action"].startswith("step:")) == []
        looked = audit_since(lab, n0, lambda r: r["action"] == "command")
        print("commands run while observing:", sorted({" ".join(r["argv"][:3]) for r in looked}))
    finally:
        for h in ("master1", "master2"):
            lab.cli("power", h, "on")
        flush_logs()
    wait_voters(lab, 3)


def test_approved_in_the_form_recovers_with_a_task_run_per_step(running_lab: Lab, prefect_harness) -> None:
    from prefect.flow_runs import resume_flow_run

    lab = running_lab
    wait_voters(lab, 3)
    cluster = f"lab-{lab.cfg.prefix}"
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/recover-flow-test/k{i:04d}", f"v{i}")
    n0 = audit_len(lab)
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    try:
        t0 = time.monotonic()
        ft = FlowThread(inventory_path=str(lab.cfg.inventory_path), approval_poll_s=1)
        run = ft.wait_paused()
        paused_after = time.monotonic() - t0
        text, schema = form_of(run)
        assert REASON in text and "**Destructive: " in text and "--force-new-cluster" in text
        assert schema["required"] == ["approver"]
        # the server checks the answer against the form: without a name it is not taken
        with pytest.raises(RuntimeError, match="'approver' is a required property"):
            resume_flow_run(run.id, run_input={"approve": True, "cluster": cluster})
        t1 = time.monotonic()
        resume_flow_run(run.id, run_input={"approve": True, "cluster": cluster, "approver": "test-approver"})
        state = ft.join()
        assert state.is_completed(), state
        out = state.result()
        print(
            f"flow: paused after {paused_after:.1f} s; resume -> completed {time.monotonic() - t1:.1f} s; "
            f"timings {out['timings']}"
        )
        assert out["status"] == "recovered" and out["reason"].startswith(REASON)
        assert out["approval"] == "approved by test-approver"

        with one(inv, "master3") as m3:
            assert m3.range("/recover-flow-test/", "/recover-flow-test0", count_only=True).count == KEYS
            assert len(m3.member_list(linearizable=True)) == 1
            m3.put("/recover-flow-test/after", "accepted")

        # one task run per plan step, in order, each named by its step id
        steps = [s["id"] for s in out["plan"]["steps"]]
        # their states arrive as events after the flow's own (settled_task_runs)
        settled_task_runs(run.id, dict.fromkeys(steps, "COMPLETED"))
        trs = task_runs(run.id)
        assert [t.name for t in trs] == steps
        assert all(t.state.is_completed() for t in trs), [(t.name, t.state) for t in trs]
        assert_steps_ran(out)  # destructive steps done; a wait may hold at once (skipped)

        arts = artifacts(run.id)
        assert REASON in arts[f"recover-plan-{cluster}"].data
        rows = json.loads(arts[f"recover-timeline-{cluster}"].data)
        assert [r["step"] for r in rows] == [
            "observe",
            "fence",
            "plan",
            "approval",
            "recheck",
            *steps,
            "total",
        ]
        assert rows[3]["state"] == "approved" and rows[-1]["state"] == "recovered"
        verdict = arts[f"recover-verdict-{cluster}"].data
        assert "| status | recovered |" in verdict and f"| keys | {out['keys']} |" in verdict

        recs = audit_since(lab, n0, lambda r: r["flow_run_id"] == str(run.id))
        (approval,) = [r for r in recs if r["action"] == "recover-approval"]
        assert (approval["outcome"], approval["approver"]) == ("ok", "test-approver")
        assert {r["step"] for r in recs if r["action"].startswith("step:")} == set(steps)
    finally:
        flush_logs()
        lifecycle.up(lab.cfg, say=print)  # other tests expect three voters


def test_an_approval_given_after_the_cluster_was_recovered_does_nothing(
    running_lab: Lab, prefect_harness, tmp_path: Path
) -> None:
    """Issue 15: the run waits for approval; meanwhile another operator recovers the cluster from
    the CLI (with their own copy of the inventory); then the approval arrives. The run must not stop
    and force master3 a second time: its fresh look under the cluster lease finds the plan stale."""
    from prefect.flow_runs import resume_flow_run

    lab = running_lab
    wait_voters(lab, 3)
    cluster = f"lab-{lab.cfg.prefix}"
    other = inventory_copy(lab, tmp_path, rehearsal=True)
    n0 = audit_len(lab)
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    try:
        ft = FlowThread(inventory_path=str(lab.cfg.inventory_path), approval_poll_s=1)
        run = ft.wait_paused()
        r = lab.etcd_dr("recover", "--yes", "--json", "-i", str(other), timeout=240)
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "recovered", r.stderr + r.stdout
        picture = sh(lab, "master3", PICTURE)
        resume_flow_run(run.id, run_input={"approve": True, "cluster": cluster, "approver": "late-approver"})
        state = ft.join()
        assert state.is_failed(), state
        assert state.message.startswith(
            "stale: the cluster changed since this plan was made: quorum is held again (quorum held: 1 of 1"
        ), state.message
        assert task_runs(run.id) == []
        assert sh(lab, "master3", PICTURE) == picture  # nothing stopped, renamed or forced again
        assert audit_since(lab, n0, lambda r: r["action"].startswith("step:")) == []
        assert not (lab.cfg.dir / f"recover-{cluster}.json").exists()
        rows = json.loads(artifacts(run.id)[f"recover-timeline-{cluster}"].data)
        assert [r["state"] for r in rows if r["step"] in ("approval", "total")] == ["approved", "stale"]
    finally:
        flush_logs()
        lifecycle.up(lab.cfg, say=print)


def test_the_form_asks_for_an_attestation_when_nothing_proves_the_voters_down(
    running_lab: Lab, prefect_harness, tmp_path: Path
) -> None:
    """An inventory without a power driver: master1 and master2 powered off answer nothing, and
    silence is not evidence. The run pauses first asking which voters the approver attests are down
    (the form's *Hosts you attest are down*), then, planned with that word, pauses again with the
    plan and its risk sentence; approved, it recovers. The attestation is audited with its author."""
    from prefect.flow_runs import resume_flow_run

    lab = running_lab
    wait_voters(lab, 3)
    cluster = f"lab-{lab.cfg.prefix}"
    path = inventory_copy(lab, tmp_path, rehearsal=True)
    d = yaml.safe_load(path.read_text())
    d.pop("power", None)
    path.write_text(yaml.safe_dump(d))
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    try:
        ft = FlowThread(inventory_path=str(path), approval_poll_s=1)
        first = ft.wait_paused()
        text, _ = form_of(first)
        assert "silence is not evidence" in text and "Hosts you attest are down" in text, text
        assert "master1" in text and "master2" in text
        keys = first.state.state_details.run_input_keyset
        down = ["master1", "master2"]
        answer = {"approve": True, "cluster": cluster, "approver": "alice", "down": down}
        resume_flow_run(first.id, run_input=answer)
        end = time.monotonic() + 120
        while True:  # the second pause: a new form (a new input keyset), now with the plan
            run = ft.run()
            if run.state.is_paused() and run.state.state_details.run_input_keyset != keys:
                break
            assert time.monotonic() < end and ft.thread.is_alive(), run.state
            time.sleep(0.3)
        text, _ = form_of(run)
        risk = "master1 and master2 are fenced only by alice's word: if they are still running, the "
        assert risk + "cluster forks" in text, text
        resume_flow_run(run.id, run_input={"approve": True, "cluster": cluster, "approver": "bob"})
        state = ft.join()
        assert state.is_completed(), state
        out = state.result()
        assert out["status"] == "recovered" and out["approval"] == "approved by bob", out
        fence = out["plan"]["steps"][0]["params"]["evidence"]
        assert {h: (e["kind"], e["by"]) for h, e in fence.items()} == {
            "master1": ("attested", "alice"),
            "master2": ("attested", "alice"),
        }
        recs = [r for r in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())]
        (att,) = [r for r in recs if r["action"] == "recover-attestation"]
        assert att["attester"] == "alice" and att["via"] == "the approval form" and att["hosts"] == down, att
    finally:
        flush_logs()
        lifecycle.up(lab.cfg, say=print)
