"""`etcd-dr recover` when no voter is left on the real lab: the source incident's all-voters-lost
(3.4 voters master1..3 powered off, the 3.5 learner on node1 survives: its db restored into a new
one-member cluster, never --force-new-cluster on a learner), and all-lost (no etcd member answers:
the newest verified snapshot restored onto the first voter that answers SSH). Each leaves a
one-member cluster; the next test's `running_lab` rebuilds the lab."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from etcd_dr.inventory import RuntimeKind, load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.lab.config import EtcdSeries
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_recover import one, sh

pytestmark = pytest.mark.lab
KEYS = 300


def _caught_up(inv, learner: str, timeout: float = 30) -> int:
    """Until the learner has applied everything the leader had when asked; its applied index."""
    with client_for(inv) as c:
        voters = [c.status(inv.client_url(h)) for h in inv.voters]
        target = next(st.raft_index for st in voters if st.is_leader)
        ep = inv.client_url(inv.host(learner))
        end = time.monotonic() + timeout
        while (st := c.status(ep)).raft_applied_index < target:
            assert time.monotonic() < end, f"{learner} applied {st.raft_applied_index} < {target}"
            time.sleep(0.1)
        return st.raft_applied_index


def test_all_voters_lost_recovered_from_the_learner(lab: Lab) -> None:
    cfg = dataclasses.replace(lab.cfg, learner_etcd=EtcdSeries("3.5"))
    lifecycle.up(cfg, say=print)
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/learner-test/k{i:04d}", f"v{i}")
        revision = c.range("/learner-test/k0000").header.revision
    _caught_up(inv, "node1")
    node1 = sh(lab, "node1", "docker inspect -f '{{.Config.Image}}' etcd").strip()
    assert "3.5" in node1, node1

    for h in ("master1", "master2", "master3"):
        assert lab.cli("power", h, "off").returncode == 0
    r, wall = cli(lab, "recover", "--plan")
    assert r.returncode == 0 and "learner node1 has the highest raft index" in r.stdout, r.stdout + r.stderr
    assert "--force-new-cluster on a learner panics: removed all voters" in r.stdout

    r, wall = cli(lab, "recover", "--yes", "--json", timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout)
    assert out["status"] == "recovered" and out["path"] == "learner-restore"
    ids = [s["id"] for s in out["steps"]]
    assert ids == [
        "fence-check", "stop:node1", "copy-db:node1", "restore:node1", "retire:node1",
        "swap:node1", "start:node1", "wait-healthy:node1", "verify:node1",
    ]  # fmt: skip
    assert all(s["state"] in ("done", "skipped") for s in out["steps"])
    print(f"all-voters-lost: recover {wall:.2f} s wall; timings {out['timings']}")
    # the learner's db copied once its server closed it (killed in its peer listener's drain) or
    # once it exited by itself; never killed before (its db may lack its last batch interval)
    stop = next(s for s in out["steps"] if s["id"] == "stop:node1")
    print(f"stop:node1 {out['timings']['step:stop:node1']:.2f} s: {stop['detail']}")
    assert stop["detail"].startswith("stopped gracefully"), stop

    with one(inv, "node1") as n1:
        assert n1.range("/learner-test/", "/learner-test0", count_only=True).count == KEYS
        (m,) = n1.member_list(linearizable=True)
        assert m.name == "etcd-node1" and not m.is_learner
        assert n1.status(inv.client_url(inv.host("node1"))).revision > revision
        n1.put("/learner-test/after", "accepted")
    args = sh(lab, "node1", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
    assert "--force-new-cluster" not in args and "--initial-cluster=etcd-node1=" in args
    ts = out["plan"]["steps"][4]["params"]["new_name"].removeprefix("etcd-old-")
    # the learner kept: its container renamed with restart=no, its data dir moved aside whole
    assert (
        sh(lab, "node1", f"docker inspect -f '{{{{.HostConfig.RestartPolicy.Name}}}}' etcd-old-{ts}").strip()
        == "no"
    )
    assert sh(lab, "node1", f"test -f /var/lib/etcd.bak-{ts}/member/snap/db && echo kept").strip() == "kept"
    # a second run resumes nothing and is refused: the new cluster has its quorum
    r, _ = cli(lab, "recover", "--yes", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == "refused"


def test_all_lost_restores_the_newest_verified_snapshot(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/snap-test/k{i:04d}", f"v{i}")
    r, _ = cli(lab, "snapshot", "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert snap["verdict"] == "verified"
    with client_for(inv) as c:
        for i in range(20):  # after the snapshot: these are what the restore loses
            c.put(f"/snap-test/late{i:02d}", "lost")

    for h in ("master1", "master2", "master3"):
        assert lab.cli("power", h, "off").returncode == 0
    # master1 comes back, but its etcd does not (a host rebuilt, a disk lost): nothing answers 2379
    assert lab.cli("power", "master1", "on").returncode == 0
    sh(lab, "master1", "docker update --restart=no etcd >/dev/null && docker kill etcd >/dev/null || true")

    r, wall = cli(lab, "recover", "--yes", "--json", timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout)
    assert out["status"] == "recovered" and out["path"] == "snapshot-restore"
    assert f"restore snapshot {snap['id']} (newest verified, revision {snap['revision']}" in out["reason"]
    assert "onto master1" in out["reason"]
    print(f"all-lost: recover {wall:.2f} s wall; timings {out['timings']}")
    with one(inv, "master1") as m1:
        assert m1.range("/snap-test/k", "/snap-test/l", count_only=True).count == KEYS
        assert m1.range("/snap-test/late", "/snap-test/latf", count_only=True).count == 0
        assert len(m1.member_list(linearizable=True)) == 1
    ts = out["plan"]["steps"][4]["params"]["new_name"].removeprefix("etcd-old-")
    assert sh(lab, "master1", f"test -d /var/lib/etcd.bak-{ts}/member && echo kept").strip() == "kept"


def test_masters_lost_restore_method_keeps_the_survivors_db(running_lab: Lab) -> None:
    """--method restore: master3's own db restored into a new one-member cluster."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/voter-restore/k{i:04d}", f"v{i}")
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    r, wall = cli(lab, "recover", "--yes", "--json", "--method", "restore", timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout)
    assert out["status"] == "recovered" and out["path"] == "voter-restore"
    assert "a new cluster id: rejoin the lost masters one at a time as they return" in out["reason"]
    print(f"masters-lost, --method restore: recover {wall:.2f} s wall; timings {out['timings']}")
    with one(inv, "master3") as m3:
        assert m3.range("/voter-restore/", "/voter-restore0", count_only=True).count == KEYS
        assert len(m3.member_list(linearizable=True)) == 1
    args = sh(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
    assert "--force-new-cluster" not in args


def _is_step(r: dict) -> bool:
    return r.get("plan") == "recover" and str(r.get("action", "")).startswith("step:")


def _step_records(audit: Path, since: int) -> list[dict]:
    lines = audit.read_text().splitlines()[since:]
    return [r for r in (json.loads(x) for x in lines if x.strip()) if _is_step(r)]


def test_crash_at_every_step_boundary_resumes_without_repeating(running_lab: Lab) -> None:
    """SIGKILL `etcd-dr recover` as soon as it has completed a step, run it again, and again: each
    run resumes the journalled plan, skips what holds, does one more step and dies, until a run
    finishes. The cluster ends healthy; no destructive step was carried out twice."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    assert inv.audit_log is not None
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/crash-test/k{i:04d}", f"v{i}")
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    start = len(inv.audit_log.read_text().splitlines())
    argv = [sys.executable, "-m", "etcd_dr.cli", "recover", "--yes", "--json"]
    killed = 0
    for _ in range(12):
        p = subprocess.Popen(argv, env=lab.cli_env(), stdout=PIPE, stderr=PIPE, text=True)
        end = time.monotonic() + 180
        # Only the lines appended since, read as they come: a step is a few remote commands of
        # 10-30 ms since TCP_NODELAY, so a kill must follow its record within milliseconds to land
        # before the next step is done (re-reading the whole log every 20 ms was too slow in CI).
        with inv.audit_log.open() as log:
            log.seek(0, os.SEEK_END)
            pending = ""
            while p.poll() is None and time.monotonic() < end:
                pending += log.read()
                *lines, pending = pending.split("\n")
                recs = [json.loads(x) for x in lines if x.strip()]
                # the last step (verify) is let finish: killed after it, the run is done but says nothing
                if any(
                    _is_step(r) and r["outcome"] == "ok" and not r["step"].startswith("verify:") for r in recs
                ):
                    os.kill(p.pid, signal.SIGKILL)  # a step just completed: die at the boundary
                    killed += 1
                    break
                time.sleep(0.002)
        out, err = p.communicate(timeout=60)
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL, f"rc {p.returncode}: {err}{out}"
    else:
        pytest.fail("the recovery never finished")
    res = json.loads(out)
    assert res["status"] == "recovered" and res["resumed"], res["status"]
    # a kill can land a step late (two steps done in one run), and the waits often hold at once
    # (skipped: no boundary to die at): at least the four destructive steps' boundaries were crossed
    assert killed >= 4, f"only {killed} runs were killed: the boundaries were not crossed"
    done: dict[str, int] = {}
    for r in _step_records(inv.audit_log, start):
        if r["outcome"] == "ok":
            done[r["step"]] = done.get(r["step"], 0) + 1
    destructive = {s["id"] for s in res["plan"]["steps"] if s["destructive"]}
    twice = {k: n for k, n in done.items() if n > 1 and k in destructive}
    assert not twice, f"destructive steps carried out more than once: {twice}"
    print(f"crash-resume: {killed} runs killed at step boundaries, then one finished; done counts {done}")
    with one(inv, "master3") as m3:
        assert m3.range("/crash-test/", "/crash-test0", count_only=True).count == KEYS
        assert len(m3.member_list(linearizable=True)) == 1
    args = sh(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
    assert "--force-new-cluster" not in args


def test_all_voters_lost_on_the_process_runtime(lab: Lab) -> None:
    """The learner path with etcd as plain processes: node1's 3.5 learner stopped (SIGTERM), its db
    restored with the etcdutl beside its binary, the old unit renamed and kept, not started at boot."""
    cfg = dataclasses.replace(lab.cfg, runtime=RuntimeKind.PROCESS, learner_etcd=EtcdSeries("3.5"))
    lifecycle.up(cfg, say=print)
    try:
        wait_voters(lab, 3)
        inv = load_inventory(lab.cfg.inventory_path)
        assert inv.etcd.runtime is RuntimeKind.PROCESS
        with client_for(inv) as c:
            for i in range(KEYS):
                c.put(f"/proc-learner/k{i:04d}", f"v{i}")
        _caught_up(inv, "node1")
        for h in ("master1", "master2", "master3"):
            assert lab.cli("power", h, "off").returncode == 0
        r, wall = cli(lab, "recover", "--yes", "--json", timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
        assert out["status"] == "recovered" and out["path"] == "learner-restore"
        restore = next(s for s in out["plan"]["steps"] if s["id"] == "restore:node1")
        assert restore["params"]["argv"][0] == "etcdutl"
        print(f"all-voters-lost, process runtime: recover {wall:.2f} s wall; timings {out['timings']}")
        with one(inv, "node1") as n1:
            assert n1.range("/proc-learner/", "/proc-learner0", count_only=True).count == KEYS
            (m,) = n1.member_list(linearizable=True)
            assert m.name == "etcd-node1" and not m.is_learner
        ts = out["plan"]["steps"][4]["params"]["new_name"].removeprefix("etcd-old-")
        units = sh(lab, "node1", "ls /etc/etcd-dr/units").split()
        assert f"etcd-old-{ts}.sh" in units and f"etcd-old-{ts}.enabled" not in units, units
        assert "etcd.enabled" in units
        assert (
            sh(lab, "node1", f"test -f /var/lib/etcd.bak-{ts}/member/snap/db && echo kept").strip() == "kept"
        )
    finally:
        lifecycle.up(lab.cfg, say=print)  # back to the docker runtime the other tests expect
