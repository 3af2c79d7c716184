"""`etcd-dr fault orphan-sandbox` and `etcd-dr hosts kubelet-cleanup` on the lab: the fault puts the
stand-in kubelet (etcd_dr/lab/kubelet.py) into the source incident's loop with a real container
labelled with a sandbox that does not exist; the cleanup removes exactly that container (a decoy with
another label, a pod's running container and its sandbox stay), kubelet runs again, the audit log
names what was removed; `fault heal` then has nothing left to undo. A kubelet that does not loop is
refused with nothing removed."""

from __future__ import annotations

import json
import time

import pytest

from etcd_dr.executor import executor_for
from etcd_dr.inventory import load_inventory
from etcd_dr.lab import kubelet

from .conftest import Lab

pytestmark = pytest.mark.lab
D = "docker"
WORDS = "Failed to start ContainerManager failed to build map of initial containers from runtime: "


def containers(ex) -> dict[str, dict]:
    """name -> {id, running, labels} of every container on the host."""
    ids = ex.run([D, "ps", "-a", "-q", "--no-trunc"]).stdout.split()
    out = json.loads(ex.run([D, "inspect", *ids]).stdout)
    return {
        d["Name"].lstrip("/"): {
            "id": d["Id"],
            "running": d["State"]["Running"],
            "labels": d["Config"]["Labels"],
        }
        for d in out
    }


def test_an_orphaned_sandbox_is_cleaned_and_nothing_else(running_lab: Lab) -> None:
    lab = running_lab
    inv = load_inventory(lab.cfg.inventory_path)
    ex = executor_for(inv, "node2")
    try:
        sandbox = kubelet.run_workload(ex, "k8s_POD_api", {kubelet.TYPE_LABEL: "podsandbox"})
        kubelet.run_workload(ex, "k8s_api", {kubelet.TYPE_LABEL: "container", kubelet.SANDBOX_LABEL: sandbox})
        kubelet.run_workload(ex, "decoy", {"io.kubernetes.pod.name": "decoy", "app": "decoy"})
        before = containers(ex)

        t0 = time.monotonic()
        r = lab.etcd_dr("fault", "orphan-sandbox", "--host", "node2", "--yes", "--json")
        fault_s = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        (fault,) = out["faults"]
        assert fault["mode"] == "orphan-sandbox"
        orphan = next(c for n, c in containers(ex).items() if n not in before)
        sid = orphan["labels"][kubelet.SANDBOX_LABEL]
        assert orphan["labels"]["etcd-dr.fault"] == fault["id"] and len(sid) == 64
        logs = ex.run([D, "logs", "--tail", "20", "kubelet"]).stdout
        assert f"{WORDS}no PodsandBox found with Id '{sid}'" in logs  # the loop, in kubelet's words

        # refused where kubelet does not loop: nothing removed there
        r = lab.etcd_dr("hosts", "kubelet-cleanup", "--host", "node1", "--yes", "--json")
        assert r.returncode == 1 and json.loads(r.stdout)["refused"], r.stdout

        r = lab.etcd_dr("hosts", "kubelet-cleanup", "--host", "node2", "--plan", "--json")
        assert r.returncode == 0, r.stderr
        plan = json.loads(r.stdout)
        remove, restart = plan["plan"]["steps"]
        assert restart["action"] == "restart-kubelet"
        assert [c["id"] for c in remove["params"]["containers"]] == [orphan["id"]]
        assert orphan["id"] in {c["id"] for c in containers(ex).values()}  # --plan changed nothing

        t0 = time.monotonic()
        r = lab.etcd_dr("hosts", "kubelet-cleanup", "--host", "node2", "--yes", "--json")
        cleanup_s = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        after = containers(ex)
        assert orphan["id"] not in {c["id"] for c in after.values()}
        assert set(after) == set(before)  # the decoy, the pod's container and its sandbox stay
        assert after["k8s_api"]["running"] and after["decoy"]["running"] and after["kubelet"]["running"]
        assert "Started kubelet" in ex.run([D, "logs", "--tail", "1", "kubelet"]).stdout

        assert inv.audit_log is not None
        recs = [json.loads(x) for x in inv.audit_log.read_text().splitlines()]
        # the audit log outlives labs (lab down --wipe keeps it): this run's record is the orphan's
        (rm,) = [
            x for x in recs if x["action"] == "kubelet-cleanup.remove" and x["container"] == orphan["id"]
        ]
        assert rm["host"] == "node2"
        assert rm["image"] == kubelet.IMAGE and rm["name"].startswith("k8s_etcd-dr-orphan_")
        assert rm["labels"][kubelet.SANDBOX_LABEL] == sid

        r = lab.etcd_dr("fault", "heal", "--host", "node2", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert {s["state"] for s in json.loads(r.stdout)["steps"]} == {"skipped"}
        print(
            f"fault orphan-sandbox {fault_s:.1f} s, kubelet-cleanup --yes {cleanup_s:.1f} s (whole commands)"
        )
    finally:
        ex.run([D, "rm", "-f", "k8s_api", "k8s_POD_api", "decoy"], check=False)
        ex.close()
        lab.etcd_dr("fault", "heal", "--host", "node2")  # never leave the fault to the next test
