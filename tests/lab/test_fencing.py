"""Fencing on positive evidence only (issue 8, "never fork the cluster"), on the real lab.

(a) the finding: master1 and master2 still reach each other (a working majority that accepts writes)
    but are cut off from master3, node1, node2 and this machine (blackhole routes inside their
    namespaces: replies never leave, a real partition). `recover --yes` must refuse, leave master3's
    etcd untouched, and the majority's write must be there once the partition heals;
(c) `--confirm-down` on that partition is explicit: `--plan` shows the plan with the risk sentence
    (never executed here: that would fork);
(b) only this machine is cut off from master1 and master2: node1 and node2 still reach them, and
    recover refuses "a partition, not a loss", naming who reached whom."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from etcd_dr.lab import lifecycle

from .conftest import Lab
from .test_faults import cli, status, wait_voters
from .test_recover import sh

pytestmark = pytest.mark.lab
MAJORITY = ("master1", "master2")


def console(lab: Lab, host: str, *argv: str) -> str:
    r = lifecycle.console(lab.state, host).run(list(argv), check=True, timeout=30)
    return r.stdout


@contextmanager
def cut_off(
    lab: Lab, hosts: tuple[str, ...], others: tuple[str, ...], *, this_machine: bool
) -> Iterator[None]:
    """Blackhole routes inside each of `hosts` to each of `others` (and to this machine: the
    bridge's address): what they send there is dropped, so no connection completes either way."""
    cfg = lab.cfg
    targets = [cfg.address(o) for o in others] + ([cfg.gateway] if this_machine else [])
    for h in hosts:
        for t in targets:
            console(lab, h, "ip", "route", "add", "blackhole", f"{t}/32")
    try:
        yield
    finally:
        for h in hosts:
            for t in targets:
                lifecycle.console(lab.state, h).run(
                    ["ip", "route", "del", "blackhole", f"{t}/32"], check=False
                )


def etcdctl_in(lab: Lab, host: str, *args: str) -> str:
    """etcdctl inside host's etcd container, with its own member certificate."""
    a = lab.cfg.address(host)
    d = "/etc/kubernetes/ssl"
    dashed = a.replace(".", "-")
    return console(
        lab, host, "docker", "exec", "-e", "ETCDCTL_API=3", "etcd", "etcdctl", f"--endpoints=https://{a}:2379",
        f"--cacert={d}/kube-ca.pem", f"--cert={d}/kube-etcd-{dashed}.pem",
        f"--key={d}/kube-etcd-{dashed}-key.pem",
        "--command-timeout=5s", *args,
    )  # fmt: skip


def etcd_id(lab: Lab, host: str) -> str:
    return sh(lab, host, "docker inspect -f '{{.Id}} {{.State.Pid}} {{.State.StartedAt}}' etcd").strip()


def test_a_partitioned_majority_is_never_forked(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    before = etcd_id(lab, "master3")
    with cut_off(lab, MAJORITY, ("master3", "node1", "node2"), this_machine=True):
        # the majority still elects and accepts writes
        end = time.monotonic() + 30
        while True:
            try:
                etcdctl_in(lab, "master1", "put", "/fence-test/during-partition", "acknowledged")
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(1)
        t = time.monotonic()
        r, wall = cli(lab, "recover", "--yes", "--json", timeout=120)
        out = json.loads(r.stdout)
        print(f"partition: recover refused in {wall:.2f} s (timings {out['timings']}): {out['reason']}")
        assert r.returncode != 0 and out["status"] == "refused" and out["steps"] == [], out
        assert "master1 is not fenced (" in out["reason"] and "master2 is not fenced (" in out["reason"]
        assert (
            "silence is not evidence" in out["reason"] and "power on (the lab's power state)" in out["reason"]
        )
        assert "from this machine, master3, node1 and node2" in out["reason"]
        assert etcd_id(lab, "master3") == before  # same container, same PID: nothing forced
        args = sh(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
        assert "--force-new-cluster" not in args

        # (c) an explicit attestation: planned (never executed here), the risk stated
        r, _ = cli(
            lab, "recover", "--plan", "--json", "--confirm-down", "master1", "--confirm-down", "master2",
            timeout=120,
        )  # fmt: skip
        out = json.loads(r.stdout)
        assert r.returncode == 0 and out["status"] == "planned", out
        assert out["reason"].endswith(
            "master1 and master2 are fenced only by root's word: if they are still running, the cluster forks"
        ), out["reason"]
        fence = out["plan"]["steps"][0]["params"]["evidence"]
        assert {h: e["kind"] for h, e in fence.items()} == {"master1": "attested", "master2": "attested"}
        assert etcd_id(lab, "master3") == before
        print(f"partition refusal + attested plan: {time.monotonic() - t:.2f} s")
    # healed: the majority's acknowledged write is on every member (each read on the member itself,
    # serializable: master3 may still be catching up, and a linearizable read then waits on it)
    wait_voters(lab, 3)
    for h in ("master1", "master2", "master3"):
        end = time.monotonic() + 30
        while True:
            try:
                got = etcdctl_in(
                    lab, h, "get", "/fence-test/during-partition", "--print-value-only", "--consistency=s"
                )
            except Exception:
                got = ""
            if got.strip() == "acknowledged" or time.monotonic() > end:
                break
            time.sleep(0.5)
        assert got.strip() == "acknowledged", (h, got)


def test_only_this_machine_cut_off_is_a_partition_not_a_loss(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    before = etcd_id(lab, "master3")
    # master1 and master2 drop only this machine (and master3): node1 and node2 still reach them
    with cut_off(lab, MAJORITY, ("master3",), this_machine=True):
        time.sleep(1)
        r, wall = cli(lab, "recover", "--yes", "--json", timeout=120)
        out = json.loads(r.stdout)
        print(f"probe: recover refused in {wall:.2f} s: {out['reason']}")
        assert r.returncode != 0 and out["status"] == "refused", out
        assert "refused: a partition, not a loss: " in out["reason"]
        for seen in ("node1 reaches master1 on 2379", "node2 reaches master2 on 2380"):
            assert seen in out["reason"], out["reason"]
        assert "this machine reaches" not in out["reason"]
        assert etcd_id(lab, "master3") == before
    wait_voters(lab, 3)


# No etcd traffic in or out but on loopback: SSH still works, the host's own etcd still answers there
POLICY_RUNNING = "{{.HostConfig.RestartPolicy.Name}} {{.State.Running}}"
ETCD_CUT = [
    ["INPUT", "!", "-i", "lo", "-p", "tcp", "-m", "multiport", "--dports", "2379,2380", "-j", "DROP"],
    ["INPUT", "!", "-i", "lo", "-p", "tcp", "-m", "multiport", "--sports", "2379,2380", "-j", "DROP"],
]


def test_a_lost_voter_knowing_no_leader_on_its_host_is_stopped_for_good(running_lab: Lab) -> None:
    """master2 and master3 reach no etcd port and none reaches theirs (iptables in their namespaces),
    while SSH to them works: each runs etcd alone and, asked on its own host through an SSH tunnel,
    knows no leader. `recover --yes` (unattended: no attestation) stops both for good first, then
    forces master1; their data dirs stay as they were."""
    lab = running_lab
    wait_voters(lab, 3)
    cut = ("master2", "master3")
    try:
        for h in cut:
            for rule in ETCD_CUT:
                console(lab, h, "iptables", "-I", *rule)
        end = time.monotonic() + 60  # quorum lost, then an election timeout until they know no leader
        while True:
            r, _ = cli(lab, "recover", "--plan", "--json", timeout=120)
            out = json.loads(r.stdout)
            if out["status"] == "planned" or time.monotonic() > end:
                break
            time.sleep(1)
        assert out["status"] == "planned", out["reason"]
        assert [s["id"] for s in out["plan"]["steps"][:3]] == [
            "fence-stop:master2", "fence-stop:master3", "fence-check",
        ]  # fmt: skip
        assert (
            "master2 and master3 still run etcd but know no leader (asked on their own host)"
            in (out["reason"])
        )
        evidence = out["plan"]["steps"][2]["params"]["evidence"]
        assert {h: e["kind"] for h, e in evidence.items()} == {"master2": "to-stop", "master3": "to-stop"}
        assert "asked on master2 itself, knows no leader" in evidence["master2"]["how"]

        r, wall = cli(lab, "recover", "--yes", "--json", timeout=180)
        out = json.loads(r.stdout)
        print(f"stop-for-good recovery: {wall:.2f} s, timings {out['timings']}")
        assert r.returncode == 0 and out["status"] == "recovered", r.stderr + r.stdout
        for h in cut:
            state = sh(lab, h, f"docker inspect -f '{POLICY_RUNNING}' etcd")
            assert state.strip() == "no false", (h, state)
            assert sh(lab, h, "test -d /var/lib/etcd/member && echo kept").strip() == "kept"
        st = status(lab)
        assert st["quorum"] and st["voters"] == 1, st["verdict"]
    finally:
        for h in cut:
            for rule in ETCD_CUT:
                lifecycle.console(lab.state, h).run(["iptables", "-D", *rule], check=False)
        lifecycle.up(lab.cfg, say=print)  # other tests expect the lab as built
