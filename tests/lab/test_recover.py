"""`etcd-dr recover` on the real lab: the masters-lost scenario (two of three voters lose power, the
survivor is forced into a one-member cluster once and restarted without the flag), what stays behind
(old containers kept with restart=no, the data dir's backup), the returning masters that must not
split the cluster, and the refusals that change nothing. Leaves three healthy voters behind."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from subprocess import PIPE

import pytest

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.inventory import Inventory, RuntimeKind, load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters

pytestmark = pytest.mark.lab
KEYS = 300


def sh(lab: Lab, host: str, script: str) -> str:
    """A shell script on a lab host over SSH (one string: the remote shell parses it)."""
    r = subprocess.run(
        lifecycle.ssh_argv(lab.cfg, host, [script]), capture_output=True, text=True, timeout=30, check=False
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def one(inv: Inventory, host: str) -> EtcdClient:
    e = inv.etcd
    ep = inv.client_url(inv.host(host))
    return EtcdClient(
        [ep],
        ca_cert=e.client.ca_cert,
        cert=e.client.cert,
        key=e.client.key,
        dial_timeout=1,
        request_timeout=2,
    )


def assert_steps_ran(out: dict) -> None:
    """Every destructive step was carried out; the checks (fence, waits) may have held already:
    the fence by the evidence gathered for the plan, a wait when etcd elected itself at once."""
    destructive = {s["id"] for s in out["plan"]["steps"] if s["destructive"]}
    states = {s["id"]: s["state"] for s in out["steps"]}
    assert all(states[i] == "done" for i in destructive), states
    assert set(states.values()) <= {"done", "skipped"}, states
    assert states["fence-check"] == "skipped", states  # master1 and master2 are silent


def test_masters_lost_force_new_cluster_once(running_lab: Lab) -> None:
    """The classic runbook (--method force-new-cluster): forced once, restarted without the flag."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/recover-test/k{i:04d}", f"v{i}")
    try:
        t_off = time.time()
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, wall = cli(lab, "recover", "--yes", "--json", "--method", "force-new-cluster", timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
        assert out["status"] == "recovered" and out["path"] == "force-new-cluster"
        assert out["reason"].startswith(
            "quorum lost: 1 of 3 voters reachable; master3 has the highest raft index"
        )
        assert_steps_ran(out)
        rto = out["first_write_at"] - t_off
        steps = ", ".join(f"{k.removeprefix('step:')} {v:.2f}" for k, v in out["timings"].items())
        print(f"masters-lost RTO (power loss -> first accepted write) {rto:.2f} s; recover wall {wall:.2f} s")
        print(f"timings (s): {steps}")

        with one(inv, "master3") as m3:
            assert m3.range("/recover-test/", "/recover-test0", count_only=True).count == KEYS
            assert len(m3.member_list(linearizable=True)) == 1
            m3.put("/recover-test/after", "accepted")
        ts = out["plan"]["steps"][3]["params"]["new_name"].removeprefix("etcd-old-")
        args = sh(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
        assert "--force-new-cluster" not in args and "--initial-cluster=etcd-master3=" in args
        policies = sh(
            lab,
            "master3",
            f"for c in etcd etcd-old-{ts} etcd-forced-{ts}; do "
            'docker inspect -f "$c {{.HostConfig.RestartPolicy.Name}} {{.State.Running}}" $c; done',
        )
        assert policies.split("\n")[:3] == [
            "etcd always true",
            f"etcd-old-{ts} no false",
            f"etcd-forced-{ts} no false",
        ]
        assert sh(lab, "master3", f"test -d /var/lib/etcd.bak-{ts}/member && echo kept").strip() == "kept"

        # a second run is refused: the cluster (one member) has its quorum; nothing forced twice
        r, _ = cli(lab, "recover", "--yes", "--json")
        assert r.returncode == 1 and json.loads(r.stdout)["status"] == "refused"
        assert "quorum held: 1 of 1 voters healthy, leader master3" in r.stderr

        # the lost masters come back with their old data and --restart=always: the recovered member
        # tells them they were removed, they stop; the cluster keeps one member and keeps serving
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "on").returncode == 0
        with client_for(inv) as c, one(inv, "master3") as m3:
            end = time.monotonic() + 12
            while time.monotonic() < end:
                assert len(m3.member_list(linearizable=True)) == 1
                m3.put("/recover-test/after-power-on", str(time.time()))
                for h in ("master1", "master2"):
                    try:
                        st = c.status(inv.client_url(inv.host(h)), timeout=0.5)
                    except EtcdDrError:
                        continue  # not answering: its etcd stopped, as it should
                    assert st.leader == 0, f"{h} is in a cluster with a leader again: {st}"
                time.sleep(0.5)
    finally:
        lifecycle.up(lab.cfg, say=print)  # other tests expect three voters


def test_refusals_change_nothing(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    journal = lab.cfg.dir / f"recover-lab-{lab.cfg.prefix}.json"
    r, _ = cli(lab, "recover", "--yes")
    assert r.returncode == 1
    assert "quorum held: 3 of 3 voters healthy" in r.stderr and "nothing to recover" in r.stderr
    assert not journal.exists()

    # master1 gone; master2's etcd runs and talks to master3 on 2380, only its client port is cut:
    # forcing master3 now would split the cluster in two
    rule = "INPUT -p tcp --dport 2379 -m comment --comment etcd-dr-test-recover -j DROP"
    sh(lab, "master2", f"iptables -w 5 -I {rule}")
    try:
        assert lab.cli("unplug", "master1").returncode == 0
        before = sh(lab, "master3", "docker ps -a --format '{{.Names}} {{.Status}}' | cut -d' ' -f1,2")
        r, _ = cli(lab, "recover", "--yes", "--json")
        assert r.returncode == 1, r.stderr
        out = json.loads(r.stdout)
        assert out["status"] == "refused" and out["steps"] == []
        # master2 answers on 2380 (to this machine and to every host): alive, whatever else is seen
        assert "refused: a partition, not a loss: " in out["reason"], out["reason"]
        assert "this machine reaches master2 on 2380" in out["reason"]
        assert "node1 reaches master2 on 2380" in out["reason"]
        after = sh(lab, "master3", "docker ps -a --format '{{.Names}} {{.Status}}' | cut -d' ' -f1,2")
        # every container as it was (the lab's kubelet and kube-apiserver stand-ins run beside etcd)
        assert before == after and "etcd Up" in before.splitlines(), (before, after)
        assert not journal.exists()
    finally:
        sh(lab, "master2", f"iptables -w 5 -D {rule}")
        lab.cli("plug", "master1")
    wait_voters(lab, 3)


def test_masters_lost_on_the_process_runtime_and_two_recoveries_at_once(lab: Lab) -> None:
    """etcd as a plain process (a unit started at boot): the same force-new-cluster plan, carried out
    on units (renamed and kept, never restarted by themselves). Two `etcd-dr recover` started at
    the same moment: one recovers, the other is refused as busy and changes nothing."""
    cfg = dataclasses.replace(lab.cfg, runtime=RuntimeKind.PROCESS)
    lifecycle.up(cfg, say=print)
    try:
        wait_voters(lab, 3)
        inv = load_inventory(lab.cfg.inventory_path)
        assert inv.etcd.runtime is RuntimeKind.PROCESS
        with client_for(inv) as c:
            for i in range(KEYS):
                c.put(f"/recover-proc/k{i:04d}", f"v{i}")
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        argv = [sys.executable, "-m", "etcd_dr.cli", "recover", "--yes", "--json"]
        procs = [
            subprocess.Popen(argv, env=lab.cli_env(), stdout=PIPE, stderr=PIPE, text=True) for _ in range(2)
        ]
        outs = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
        statuses = sorted(o["status"] for o in outs)
        assert statuses == ["busy", "recovered"], [o["reason"] for o in outs]
        done = next(o for o in outs if o["status"] == "recovered")
        busy = next(o for o in outs if o["status"] == "busy")
        assert done["path"] == "force-new-cluster" and busy["steps"] == []
        assert "another recovery of cluster" in busy["reason"]
        assert_steps_ran(done)
        print(f"process runtime, masters-lost: timings {done['timings']}")
        with one(inv, "master3") as m3:
            assert m3.range("/recover-proc/", "/recover-proc0", count_only=True).count == KEYS
            assert len(m3.member_list(linearizable=True)) == 1
        ts = done["plan"]["steps"][3]["params"]["new_name"].removeprefix("etcd-old-")
        units = sh(lab, "master3", "ls /etc/etcd-dr/units")
        # the old and the forced unit kept, neither enabled at boot; the running one is, without the flag
        assert f"etcd-old-{ts}.sh" in units and f"etcd-forced-{ts}.sh" in units, units
        assert f"etcd-old-{ts}.enabled" not in units and f"etcd-forced-{ts}.enabled" not in units, units
        assert "etcd.enabled" in units.split()
        line = sh(lab, "master3", "grep '^exec ' /etc/etcd-dr/units/etcd.sh")
        assert "--force-new-cluster" not in line and "--initial-cluster=etcd-master3=" in line
    finally:
        lifecycle.up(lab.cfg, say=print)  # back to the docker runtime the other tests expect
