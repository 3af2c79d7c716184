"""The kubelet-cleanup flow on a real Prefect server: the real core (etcd_dr.hostrepair.run) plans
from a looping kubelet's look, the run pauses with the recovery's approval form showing the plan
and the containers it removes; rejected -> Cancelled with nothing done; approved -> one task run
per step, Completed, the artifact and the approval in the audit log. The host is faked (the look
and the steps' handlers: recording, no host): what the steps do on a host is tested on the lab
(tests/lab/test_kubelet_cleanup.py). The cert-renew flow is the same wiring (flows/hostrepair._run)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_kubelet_cleanup_plan import loop

from etcd_dr.hostrepair import run as run_mod
from etcd_dr.hostrepair.plan import CleanupAction
from etcd_dr.plans import Step
from tests.flows.flowthread import FlowThread, settled_task_runs


class Fake:
    """Every step's handler: not done before, records what ran."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.done_ids = log, set()

    def done(self, step: Step) -> bool:
        return step.id in self.done_ids

    def run(self, step: Step) -> str:
        self.log.append(step.id)
        self.done_ids.add(step.id)
        return "ok"


def inventory(tmp_path: Path) -> Path:
    for f in ("id", "kh", "ca.pem", "c.pem", "k.pem"):  # the inventory checks they exist; never read here
        (tmp_path / f).write_text("")
    p = tmp_path / "inventory.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "cluster": "flowkubelet",
                "audit_log": "audit.jsonl",
                "ssh": {"key_file": "id", "known_hosts": "kh"},
                "etcd": {"client": {"ca_cert": "ca.pem", "cert": "c.pem", "key": "k.pem"}},
                "hosts": [
                    {"name": "master1", "address": "10.9.0.11", "roles": ["etcd"]},
                    {"name": "node2", "address": "10.9.0.22", "roles": ["worker"]},
                ],
            }
        )
    )
    return p


def test_paused_for_approval_rejected_then_approved(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.logging.handlers import APILogHandler

    from flows.hostrepair import kubelet_cleanup_flow

    inv_path = inventory(tmp_path)
    log: list[str] = []
    fake = Fake(log)
    monkeypatch.setattr(run_mod, "look", lambda ex, **kw: loop())
    monkeypatch.setattr(run_mod, "handlers", lambda c: {str(a): fake for a in CleanupAction})

    ft = FlowThread(
        kubelet_cleanup_flow, "kubelet-test", host="node2", inventory_path=str(inv_path), approval_poll_s=1
    )
    run = ft.wait_paused()
    desc = read_flow_run_input(run.state.state_details.run_input_keyset["description"], flow_run_id=run.id)
    assert "## Kubelet sandbox cleanup on cluster `flowkubelet`: approval needed" in desc
    assert "**Decision.** kubelet on node2 is in the sandbox loop (restarted 7 times" in desc
    assert "**Destructive steps (1 of 2).**" in desc and "k8s_app_web" in desc
    resume_flow_run(run.id, run_input={"approve": False, "cluster": "flowkubelet", "approver": "ann"})
    state = ft.join()
    assert state.is_cancelled() and "rejected by ann; nothing was changed" in (state.message or "")
    assert log == []

    ft = FlowThread(
        kubelet_cleanup_flow, "kubelet-test", host="node2", inventory_path=str(inv_path), approval_poll_s=1
    )
    run = ft.wait_paused()
    resume_flow_run(run.id, run_input={"approve": True, "cluster": "flowkubelet", "approver": "bob"})
    state = ft.join()
    assert state.is_completed(), state
    out = state.result()
    assert out["ok"] and out["approval"] == "approved by bob"
    assert log == ["remove-containers:node2", "restart-kubelet:node2"]
    trs = settled_task_runs(run.id, dict.fromkeys(log, "COMPLETED"))
    with get_client(sync_client=True) as c:
        arts = {a.key: a for a in c.read_artifacts() if a.flow_run_id == run.id}  # this run's, not the first
    assert sorted(t.name for t in trs) == sorted(log) and {t.state.type.value for t in trs} == {"COMPLETED"}
    assert "approved by bob" in (arts["kubelet-cleanup-flowkubelet"].data or "")
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"action":"kubelet-cleanup-approval"' in audit and "approved by bob" in audit
    asyncio.run(APILogHandler.aflush())  # ship the runs' logs while the test server is still up
