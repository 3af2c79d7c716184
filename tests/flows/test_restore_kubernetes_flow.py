"""The restore-kubernetes flow on a real Prefect server: it pauses with the recovery's approval form
showing the decision, the plan and the cluster.yml diff; rejected -> Cancelled with nothing
written; approved -> one task run per step, Completed, the verdict artifact with /readyz and the
object counts. The core is the real etcd_dr.kubernetes.run on RKE fixtures, with the cluster's
picture faked (observe) and the steps' handlers faked (recording, no hosts): what each step does on
a host is tested on the lab (tests/lab/test_restore_kubernetes.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_kubernetes_run import Fake, lab_like

from etcd_dr.kubernetes import run as run_mod
from etcd_dr.kubernetes.steps import KubernetesAction
from tests.flows.flowthread import FlowThread, settled_task_runs


def test_paused_for_approval_rejected_then_approved(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.logging.handlers import APILogHandler

    from flows.restore_kubernetes import restore_kubernetes_flow

    inv_path, _ = lab_like(tmp_path, monkeypatch, ["master3"], "master3")
    log: list[str] = []
    fake = Fake(log, set())
    monkeypatch.setattr(run_mod, "handlers", lambda c: {str(a): fake for a in KubernetesAction})
    new_yml = tmp_path / "rke/cluster.recovered.yml"

    ft = FlowThread(restore_kubernetes_flow, "k8s-test", inventory_path=str(inv_path), approval_poll_s=1)
    run = ft.wait_paused()
    desc = read_flow_run_input(run.state.state_details.run_input_keyset["description"], flow_run_id=run.id)
    assert "## Kubernetes back on cluster `prod-eu1`: approval needed" in desc
    assert "**Decision.** surviving-plane: the recovered etcd (master3) overlaps" in desc
    assert "- run rke up --config cluster.recovered.yml on node1 (on node1)" in desc
    assert "-    hostname_override: master1" in desc  # the cluster.yml diff
    resume_flow_run(run.id, run_input={"approve": False, "cluster": "prod-eu1", "approver": "ann"})
    state = ft.join()
    assert state.is_cancelled() and "rejected by ann; nothing was changed" in (state.message or "")
    assert log == [] and not new_yml.exists()

    ft = FlowThread(restore_kubernetes_flow, "k8s-test", inventory_path=str(inv_path), approval_poll_s=1)
    run = ft.wait_paused()
    resume_flow_run(run.id, run_input={"approve": True, "cluster": "prod-eu1", "approver": "bob"})
    state = ft.join()
    assert state.is_completed(), state
    out = state.result()
    assert out["status"] == "restored" and out["approval"] == "approved by bob"
    assert log == ["ssl-old:master3", "etcd-on-ssl-old:master3", "rke-files", "rke-up", "api-check"]
    assert new_yml.exists()
    trs = settled_task_runs(run.id, dict.fromkeys(log, "COMPLETED"))
    with get_client(sync_client=True) as c:
        arts = {a.key: a for a in c.read_artifacts()}
    assert sorted(t.name for t in trs) == sorted(log) and {t.state.type.value for t in trs} == {"COMPLETED"}
    verdict = arts["restore-kubernetes-verdict-prod-eu1"]
    assert "| /registry/pods/ | 15 | - |" in (verdict.data or "")
    audit = (tmp_path / "rke/etcd-dr/audit.jsonl").read_text()
    assert '"action":"restore-kubernetes-approval"' in audit and "approved by bob" in audit
    asyncio.run(APILogHandler.aflush())  # ship the runs' logs while the test server is still up
