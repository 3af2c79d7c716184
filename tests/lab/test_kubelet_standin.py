"""The lab's STAND-IN kubelet (etcd_dr/lab/kubelet.py): running on every host after `lab up`; a
container labelled with a sandbox that exists does not bother it; one labelled with a sandbox id that
does not exist makes it fail at start with kubelet's exact words and loop (restart=always); once that
container is gone it runs again. The containers are real Docker containers with real labels."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from etcd_dr.executor import executor_for
from etcd_dr.inventory import load_inventory
from etcd_dr.lab import kubelet
from etcd_dr.lab.config import HOST_NAMES

from .conftest import Lab

pytestmark = pytest.mark.lab
D = "/usr/bin/docker"


def state(ex, name: str = "kubelet") -> dict:
    out = ex.run([D, "inspect", "-f", "{{json .}}", name]).stdout
    d = json.loads(out)
    return {"running": d["State"]["Running"], "restarts": d["RestartCount"], "exit": d["State"]["ExitCode"]}


def test_the_kubelet_stand_in_loops_on_a_missing_sandbox_and_runs_without_one(running_lab: Lab) -> None:
    inv = load_inventory(running_lab.cfg.inventory_path)
    for h in HOST_NAMES:
        ex = executor_for(inv, h)
        try:
            assert state(ex)["running"], h
        finally:
            ex.close()
    ex = executor_for(inv, "node2")
    missing = secrets.token_hex(32)
    try:
        sandbox = kubelet.run_workload(ex, "k8s_POD_web", {kubelet.TYPE_LABEL: "podsandbox"})
        kubelet.run_workload(ex, "k8s_web", {kubelet.TYPE_LABEL: "container", kubelet.SANDBOX_LABEL: sandbox})
        ex.run([D, "restart", "-t", "2", "kubelet"])
        time.sleep(1.0)
        assert state(ex)["running"]  # the workload's sandbox exists

        ex.run([D, "create", "--name", "k8s_orphan", "--label", f"{kubelet.SANDBOX_LABEL}={missing}",
                "--label", f"{kubelet.TYPE_LABEL}=container", kubelet.IMAGE, "/bin/true"])  # fmt: skip
        ex.run([D, "restart", "-t", "2", "kubelet"])
        end = time.monotonic() + 20
        # it loops: restarted again and again, exiting 255 (caught between two runs: a run that has
        # just started shows exit code 0 until it fails again)
        while not ((s := state(ex))["restarts"] >= 2 and s["exit"] == 255) and time.monotonic() < end:
            time.sleep(0.3)
        assert s["restarts"] >= 2 and s["exit"] == 255, s
        logs = ex.run([D, "logs", "--tail", "20", "kubelet"]).stdout
        want = (
            "Failed to start ContainerManager failed to build map of initial containers from runtime: "
            f"no PodsandBox found with Id '{missing}'"
        )
        assert want in logs

        ex.run([D, "rm", "k8s_orphan"])
        ex.run([D, "restart", "-t", "2", "kubelet"])
        time.sleep(2.0)
        s = state(ex)
        assert s["running"], s
        assert "Started kubelet" in ex.run([D, "logs", "--tail", "1", "kubelet"]).stdout
    finally:
        ex.run([D, "rm", "-f", "k8s_orphan", "k8s_web", "k8s_POD_web"], check=False)
        ex.close()
