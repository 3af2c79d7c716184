"""`etcd-dr restore-kubernetes` end to end on the lab, after real recoveries, with the lab's stand-in
rke and kube-apiserver (README "The lab as RKE left it"):

- masters lost (master1 and master2 powered off, `recover --yes` forces master3): the surviving
  plane; master3's etcd moved onto ssl_old, `rke up` on node2, /readyz ready on master3 and every
  /registry object `lab up` recorded back; the same command again changes nothing;
- all voters lost (`lab up --learner`, the three masters powered off, node1's learner restored):
  with the lab's own (P-256) client key refused, naming RSA, nothing changed; with an RSA client
  certificate signed by kube-ca (what `import-rke` gives: RKE's kube-node) external etcd, ssl_old on
  node1, kube-apiserver on node1 ready, every object back.

Each test rebuilds the lab in `finally` (other tests expect three voters and no learner)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import kube, lifecycle
from etcd_dr.lab.config import EtcdSeries

from .conftest import Lab, lab_config
from .test_faults import cli, wait_voters

pytestmark = pytest.mark.lab
SSL, SSL_OLD = "/etc/kubernetes/ssl", "/etc/kubernetes/ssl_old"


def on(lab: Lab, host: str, script: str) -> str:
    r = subprocess.run(
        lifecycle.ssh_argv(lab.cfg, host, [script]), capture_output=True, text=True, timeout=60, check=False
    )
    return r.stdout


def restore(lab: Lab, *args: str) -> tuple[int, dict, float]:
    r, wall = cli(lab, "restore-kubernetes", "--json", *args, timeout=600)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), wall


def objects_back(out: dict, expected: dict[str, int]) -> None:
    per = out["objects"]["per_resource"]
    assert {p: v["before"] for p, v in per.items()} == expected, per
    assert {p: v["after"] for p, v in per.items()} == expected, per
    assert out["objects"]["before"] == out["objects"]["after"] == sum(expected.values())
    assert "registry-counts.json" in out["objects"]["counted"]


def test_masters_lost_then_restore_kubernetes(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    expected = kube.load_counts(lab.cfg)
    try:
        t_off = time.monotonic()
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, t_recover = cli(lab, "recover", "--yes", "--json", timeout=240)
        assert r.returncode == 0, r.stderr + r.stdout
        rc, out, wall = restore(lab, "--yes")
        print(f"recover {t_recover:.1f} s, restore-kubernetes {wall:.1f} s, {time.monotonic() - t_off:.1f} s")
        print({k: v for k, v in out["timings"].items()})
        assert rc == 0 and out["status"] == "restored", out["reason"]
        assert out["decision"]["decision"] == "surviving-plane"
        assert out["ready"] == {"master3": {"ready": True, "said": None}}
        objects_back(out, expected)
        states = {s["id"]: s["state"] for s in out["steps"]}
        assert all(states[i] == "done" for i in ("ssl-old:master3", "etcd-on-ssl-old:master3", "rke-up"))
        args = on(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
        assert f"--cert-file={SSL_OLD}/" in args and f"{SSL}/" not in args
        assert "etcd-before-ssl-old" in on(lab, "master3", "docker ps -a --format '{{.Names}}'")
        assert "cluster.recovered.yml" in on(lab, "node2", "ls /opt/rke")
        assert "cluster.yml" in on(lab, "node2", "ls /opt/rke")  # the operator's own stays
        assert (lab.cfg.dir / "cluster.recovered.yml").exists()

        rc, again, wall = restore(lab, "--yes")  # the same command again: every step holds
        print(f"again: {wall:.1f} s")
        assert rc == 0 and again["status"] == "restored", again["reason"]
        assert {s["state"] for s in again["steps"]} == {"skipped"}, again["steps"]
        objects_back(again, expected)
    finally:
        lifecycle.up(lab.cfg, say=print)


def test_a_failed_rke_up_is_resumed_by_the_same_command(running_lab: Lab) -> None:
    """rke missing on the deploy host: the run fails at rke-up with etcd already on ssl_old; the same
    command, rke back, resumes the journalled plan (the done steps skipped) and finishes."""
    lab = running_lab
    wait_voters(lab, 3)
    expected = kube.load_counts(lab.cfg)
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", timeout=240)
        assert r.returncode == 0, r.stderr + r.stdout
        on(lab, "node2", "mv /usr/local/bin/rke /usr/local/bin/rke.away")
        rc, out, _ = restore(lab, "--yes")
        assert rc == 1 and out["status"] == "failed", out
        states = {s["id"]: s["state"] for s in out["steps"]}
        assert states["etcd-on-ssl-old:master3"] == "done" and states["rke-up"] == "failed", states
        assert states["api-check"] == "not-run" and "to resume this plan" in out["reason"]
        journal = lab.cfg.dir / f"kubernetes-{load_inventory(lab.cfg.inventory_path).cluster}.json"
        assert json.loads(journal.read_text())["started"] == ["etcd-on-ssl-old:master3", "rke-up"]

        on(lab, "node2", "mv /usr/local/bin/rke.away /usr/local/bin/rke")
        rc, out, wall = restore(lab, "--yes")
        print(f"resumed: {wall:.1f} s")
        assert rc == 0 and out["status"] == "restored" and out["resumed"], out["reason"]
        states = {s["id"]: s["state"] for s in out["steps"]}
        assert states == {
            "ssl-old:master3": "skipped",
            "etcd-on-ssl-old:master3": "skipped",
            "rke-files": "skipped",
            "rke-up": "done",
            "api-check": states["api-check"],  # ready at once (skipped) or after a poll (done)
        }, states
        assert out["ready"] == {"master3": {"ready": True, "said": None}}
        objects_back(out, expected)
        assert not journal.exists()
        # etcd was moved onto ssl_old once: one retired container, not two
        names = on(lab, "master3", "docker ps -a --format '{{.Names}}'").split()
        assert names.count("etcd-before-ssl-old") == 1 and "etcd" in names
    finally:
        on(lab, "node2", "test -e /usr/local/bin/rke.away && mv /usr/local/bin/rke.away /usr/local/bin/rke")
        lifecycle.up(lab.cfg, say=print)


def test_all_voters_lost_then_restore_kubernetes_on_external_etcd(lab: Lab) -> None:
    try:
        lifecycle.up(dataclasses.replace(lab.cfg, learner_etcd=EtcdSeries("3.5")), say=print)
        wait_voters(lab, 3)
        expected = kube.load_counts(lab.cfg)
        t_off = time.monotonic()
        for h in ("master1", "master2", "master3"):
            assert lab.cli("power", h, "off").returncode == 0
        r, t_recover = cli(lab, "recover", "--yes", "--json", timeout=240)
        assert r.returncode == 0, r.stderr + r.stdout
        assert json.loads(r.stdout)["path"] == "learner-restore"

        # the lab's own client key is P-256: refused before anything changes, naming RSA
        before = on(lab, "node1", "docker ps -a --format '{{.Names}}'; ls /etc/kubernetes")
        rc, out, _ = restore(lab, "--yes")
        assert rc == 1 and out["status"] == "refused", out
        assert "clientKey.(*rsa.PrivateKey)" in out["reason"] and out["steps"] == []
        assert on(lab, "node1", "docker ps -a --format '{{.Names}}'; ls /etc/kubernetes") == before

        rc, out, wall = restore(lab, "--yes", "-i", str(kube.rsa_client_inventory(lab.cfg)))
        print(f"recover {t_recover:.1f} s, restore-kubernetes {wall:.1f} s, {time.monotonic() - t_off:.1f} s")
        print({k: v for k, v in out["timings"].items()})
        assert rc == 0 and out["status"] == "restored", out["reason"]
        assert out["decision"]["decision"] == "external-etcd"
        node1 = load_inventory(lab.cfg.inventory_path).host("node1")
        assert out["decision"]["external"]["urls"] == [f"https://{node1.address}:2379"]
        assert out["ready"] == {"node1": {"ready": True, "said": None}}
        objects_back(out, expected)
        states = {s["id"]: s["state"] for s in out["steps"]}
        assert states["ssl-old:node1"] == states["etcd-on-ssl-old:node1"] == states["rke-up"] == "done"
        assert f"{SSL_OLD}/" in on(
            lab, "node1", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd"
        )
        apiserver = on(lab, "node1", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' kube-apiserver")
        assert f"--etcd-servers=https://{node1.address}:2379" in apiserver
        assert "--etcd-prefix=/registry" in apiserver
    finally:
        lifecycle.up(lab.cfg, say=print)


def test_rehearse_through_kubernetes_reports_both_rtos() -> None:
    """`etcd-dr rehearse --through-kubernetes --json` (masters-lost): the recovery, then
    restore-kubernetes, then the rejoin; the RTO to etcd writes and the RTO to a ready API."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces, mounts, veths)")
    lab = Lab(lab_config(), Path("/usr/bin/etcdctl"))
    t0 = time.monotonic()
    r = lab.etcd_dr("rehearse", "--scenario", "masters-lost", "--through-kubernetes", "--json", timeout=900)
    assert r.stdout.strip(), r.stderr[-3000:]
    out = json.loads(r.stdout)
    wall = time.monotonic() - t0
    print(f"{out['verdict']}\nRTO {out['rto_s']} s, API {out['rto_api_s']} s; wall {wall:.1f} s")
    print(out["timings"], out["kubernetes"]["timings"])
    assert r.returncode == 0 and out["ok"], out["verdict"]
    k = out["kubernetes"]
    assert k["status"] == "restored" and k["decision"] == "surviving-plane"
    assert k["ready"] == {"master3": {"ready": True, "said": None}}
    assert k["objects_after"] == k["objects_before"] == 55
    # the API is ready after etcd takes writes again, both measured from the fault
    assert out["rto_s"] < out["rto_api_s"] < out["rto_s"] + 120, (out["rto_s"], out["rto_api_s"])
    assert "RTO to a ready API" in out["verdict"] and out["rejoin"]["ok"], out["rejoin"]
