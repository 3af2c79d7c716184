"""A resume that notices what changed, on the lab.

- `restore-kubernetes` fails at `rke up` (rke taken off node2) with master3's etcd already moved onto
  ssl_old; then the recovered etcd stops (its quorum lost: a change the plan did not make). The same
  command refuses to resume (status stale, nothing run, the journal moved aside) saying what
  changed; with etcd back it decides afresh and finishes.
- `recover` is SIGKILLed right after it stopped master3 (the only survivor, behind the others);
  then master1 powers back on, more advanced. The resume is refused: forcing master3 now would drop
  what only master1 holds; master3 stays stopped, nothing else done."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from etcd_dr.errors import EtcdDrError
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.lab import kube, lifecycle
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_recover import sh
from .test_restore_kubernetes import objects_back, on, restore

pytestmark = pytest.mark.lab


def test_a_resume_after_the_recovered_etcd_stopped_is_refused_then_decided_afresh(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    expected = kube.load_counts(lab.cfg)
    journal = lab.cfg.dir / f"kubernetes-{load_inventory(lab.cfg.inventory_path).cluster}.json"
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", timeout=240)
        assert r.returncode == 0, r.stderr + r.stdout
        on(lab, "node2", "mv /usr/local/bin/rke /usr/local/bin/rke.away")
        rc, out, _ = restore(lab, "--yes")
        assert rc == 1 and out["status"] == "failed", out["reason"]
        basis = json.loads(journal.read_text())["basis"]
        assert basis["quorum"] is True and list(basis["voters"]) == ["master3"], basis

        on(lab, "master3", "docker stop -t 5 etcd")  # the recovered etcd goes away under the plan
        on(lab, "node2", "mv /usr/local/bin/rke.away /usr/local/bin/rke")
        rc, out, wall = restore(lab, "--yes")
        look = out["timings"].get("observe", 0)
        print(f"stale resume refused in {wall:.1f} s (look {look:.2f} s): {out['reason']}")
        assert rc == 1 and out["status"] == "stale" and out["resumed"], out["reason"]
        assert out["reason"].startswith("the cluster changed since this plan was made: quorum is lost now (")
        assert "steps it had begun: etcd-on-ssl-old:master3, rke-up" in out["reason"]
        assert (
            "run `etcd-dr restore-kubernetes` again to decide from what the cluster is now" in out["reason"]
        )
        assert out["steps"] == [] and not journal.exists()
        closed = Path(out["journal"])
        assert closed.name.endswith(".closed.json") and json.loads(closed.read_text())["plan"]  # kept

        on(lab, "master3", "docker start etcd")
        wait_voters(lab, 1)
        rc, out, wall = restore(lab, "--yes")
        print(f"decided afresh: {wall:.1f} s")
        assert rc == 0 and out["status"] == "restored" and not out["resumed"], out["reason"]
        objects_back(out, expected)
    finally:
        on(lab, "node2", "test -e /usr/local/bin/rke.away && mv /usr/local/bin/rke.away /usr/local/bin/rke")
        on(lab, "master3", "docker start etcd")
        lifecycle.up(lab.cfg, say=print)


def _answers(inv: Inventory, host: str, timeout: float = 60) -> None:
    """Until host's etcd answers Status (a started member takes 0.3-2.5 s, more under load)."""
    url = inv.client_url(inv.host(host))
    with client_for(inv, [url], dial_timeout=1) as c:
        end = time.monotonic() + timeout
        while True:
            try:
                c.status(url, timeout=1)
                return
            except EtcdDrError:
                assert time.monotonic() < end, f"{host}'s etcd did not answer"
                time.sleep(0.5)


def _cut(lab: Lab, host: str, rules: tuple[tuple[str, ...], ...], *, add: bool) -> None:
    """Rules in host's own namespace, from this machine (not over SSH: the cut may take SSH too)."""
    for rule in rules:
        argv = ["ip", "netns", "exec", lab.cfg.netns(host), "iptables", "-w", "-I" if add else "-D", *rule]
        r = subprocess.run([*argv, "-m", "comment", "--comment", "etcd-dr-test-resume"], capture_output=True)
        assert r.returncode == 0 or not add, r.stderr


# etcd's peers dial each other both ways (each side's stream reader dials out): cut both directions
PEERS = (
    ("INPUT", "-p", "tcp", "--dport", "2380", "-j", "DROP"),
    ("OUTPUT", "-p", "tcp", "--dport", "2380", "-j", "DROP"),
)
SILENT = (
    ("INPUT", "!", "-i", "lo", "-p", "tcp", "-m", "multiport", "--dports", "22,2379,2380", "-j", "DROP"),
    ("OUTPUT", "!", "-o", "lo", "-p", "tcp", "--dport", "2380", "-j", "DROP"),
)


# `etcd-dr recover --yes --confirm-down master1`, as the CLI runs it, whose process is SIGKILLed as
# soon as the step that stopped master3 returned (its audit record and checkpoint written)
_DIES_AFTER_STOP = """
import getpass, os, signal, sys
from etcd_dr.inventory import load_inventory
from etcd_dr.recovery.run import Attestation, recover

def run_step(step, body):
    result = body()
    if step.id == "stop:master3":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

recover(load_inventory(sys.argv[1]), yes=True, plan_only=False, say=print, run_step=run_step,
        attestation=Attestation(("master1",), getpass.getuser(), "--confirm-down"))
"""


def test_a_recovery_resumed_after_a_more_advanced_master_came_back_is_refused(running_lab: Lab) -> None:
    """master1 is cut off (SSH and etcd silent) and wrongly attested down; master3, behind it, is
    the plan's survivor. The run dies right after stopping master3; the cut heals; master1, which
    never stopped, answers more advanced: the resume is refused."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    assert inv.audit_log is not None
    journal = lab.cfg.dir / f"recover-{inv.cluster}.json"
    try:
        _cut(lab, "master3", PEERS, add=True)  # master3 falls behind: writes it never sees
        time.sleep(1)
        with client_for(inv, [inv.client_url(inv.host(h)) for h in ("master1", "master2")]) as c:
            # if master3 led, master1 and master2 elect a new leader first: RKE's 5 s election
            # timeout, randomized up to 10 s, plus a loaded machine, can outlast one write's timeout
            end = time.monotonic() + 60
            while True:
                try:
                    c.put("/resume-changed/first", "v", timeout=10)
                    break
                except EtcdDrError:
                    if time.monotonic() > end:
                        raise
            for i in range(50):
                c.put(f"/resume-changed/k{i:03d}", f"v{i}", timeout=10)
        assert lab.cli("power", "master2", "off").returncode == 0
        _cut(lab, "master1", SILENT, add=True)  # master1 runs on, silent
        _cut(lab, "master3", PEERS, add=False)  # master3: quorum lost, answering, behind
        _answers(inv, "master3")

        # the orchestrator dies the moment the stop step returns: killed from outside on seeing the
        # step's audit record, it had begun the next step already in one CI run (the journal said
        # so) and most likely in another (Dec 2026)
        p = subprocess.Popen([sys.executable, "-c", _DIES_AFTER_STOP, str(lab.cfg.inventory_path)],
                             env=lab.cli_env(), stdout=PIPE, stderr=PIPE, text=True)  # fmt: skip
        out, err = p.communicate(timeout=240)
        assert p.returncode == -signal.SIGKILL, f"rc {p.returncode}: {err}{out}"
        assert json.loads(journal.read_text())["started"] == ["stop:master3"]

        _cut(lab, "master1", SILENT, add=False)  # the cut heals: master1 never stopped
        _answers(inv, "master1")
        r, wall = cli(lab, "recover", "--yes", "--json", "--confirm-down", "master1", timeout=240)
        res = json.loads(r.stdout)
        print(f"stale recovery resume refused in {wall:.1f} s: {res['reason']}")
        assert r.returncode == 1 and res["status"] == "stale" and res["resumed"], res["reason"]
        assert res["reason"].startswith(
            "the cluster changed since this plan was made: master1 answers etcd again and is more "
            "advanced than master3 (raft index "
        )
        assert "(steps it had begun: stop:master3)" in res["reason"]
        assert "run `etcd-dr recover` again to plan from what the cluster is now" in res["reason"]
        assert res["steps"] == [] and not journal.exists() and res["journal"].endswith(".closed.json")
        # nothing was forced: master3's etcd is as the killed run left it, stopped, its data in place
        # (once in CI this read '', most likely the same late kill: force-new-cluster had begun
        # replacing the container; `sh` names docker's stderr when it fails)
        assert sh(lab, "master3", "docker inspect -f '{{.State.Running}}' etcd").strip() == "false"
        assert on(lab, "master3", "test -d /var/lib/etcd/member && echo kept").strip() == "kept"
    finally:
        _cut(lab, "master1", SILENT, add=False)
        _cut(lab, "master3", PEERS, add=False)
        lifecycle.up(lab.cfg, say=print)
