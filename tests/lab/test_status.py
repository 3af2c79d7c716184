"""`etcd-dr status` and the status flow on the real lab: healthy, two masters powered off, back on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from .conftest import Lab

pytestmark = pytest.mark.lab


def status(lab: Lab, *args: str, timeout: float = 60) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    r = lab.etcd_dr("status", "--json", *args, timeout=timeout)
    elapsed = time.monotonic() - t0
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), elapsed


def wait_quorum(lab: Lab, voters: int = 3, timeout: float = 60) -> dict:
    """Until quorum holds with `voters` voters answering."""
    end = time.monotonic() + timeout
    while True:
        rc, out, _ = status(lab, "--no-ssh")
        if (rc == 0 and out["voters_answering"] == voters) or time.monotonic() > end:
            assert rc == 0 and out["voters_answering"] == voters, out["verdict"]
            return out
        time.sleep(0.5)


def test_status_healthy_lost_and_back(running_lab: Lab) -> None:
    lab = running_lab
    out = wait_quorum(lab)
    rc, out, healthy_s = status(lab)
    assert rc == 0 and out["quorum"] is True
    voters = [m for m in out["members"] if not m["is_learner"]]
    assert sorted(m["name"] for m in voters) == ["master1", "master2", "master3"]
    assert all(m["reachable"] and m["ssh"] == "ok" for m in voters)
    assert out["leader"] in {"master1", "master2", "master3"}
    assert out["verdict"] == f"quorum held: 3 of 3 voters healthy, leader {out['leader']}"
    assert out["member_list_source"] == "linearizable"
    assert len({m["raft_term"] for m in voters}) == 1

    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    rc, out, lost_s = status(lab)
    print(f"status: healthy {healthy_s:.2f} s, quorum lost {lost_s:.2f} s")
    assert rc == 1 and out["quorum"] is False and out["leader"] is None
    survivor = next(m for m in out["members"] if m["name"] == "master3")
    assert survivor["reachable"] and survivor["raft_index"] > 0
    assert out["verdict"] == (
        f"quorum lost: 1 of 3 voters reachable, master3 has the highest raft index {survivor['raft_index']}"
    )
    dead = [m for m in out["members"] if m["name"] in ("master1", "master2")]
    assert all(not m["reachable"] and m["ssh"] == "unreachable" for m in dead)
    # within its timeouts: ssh connect 3 s and etcd dial 2 s run side by side
    assert lost_s < 10

    for h in ("master1", "master2"):
        assert lab.cli("power", h, "on").returncode == 0
    out = wait_quorum(lab)
    assert out["verdict"].startswith("quorum held: 3 of 3 voters healthy")


def test_status_with_a_bad_inventory_exits_2(running_lab: Lab, tmp_path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("cluster: x\nhosts:\n  - name: m1\n    address: '10.0.0'\n")
    r = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "status", "-i", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2
    assert "hosts[0].address" in r.stderr


def test_status_flow_under_prefect(running_lab: Lab, prefect_harness) -> None:
    from prefect.client.orchestration import get_client

    from flows.status import status_flow

    wait_quorum(running_lab)
    lab_dir = running_lab.state.config.dir
    audit_log = lab_dir / "audit.jsonl"
    before = len(audit_log.read_text().splitlines()) if audit_log.exists() else 0
    out = status_flow(inventory_path=str(lab_dir / "inventory.yaml"))
    assert out["quorum"] is True
    # the SSH probes of the run are audited under its flow run id (pool threads included)
    new = [json.loads(line) for line in audit_log.read_text().splitlines()[before:]]
    probes = [r for r in new if r["argv"] == ["true"]]
    assert len(probes) == 3
    run_ids = {r["flow_run_id"] for r in probes}
    assert len(run_ids) == 1 and None not in run_ids

    async def artifact():
        async with get_client() as c:
            return await c.read_latest_artifacts()

    import asyncio

    # this cluster's artifact: the session's Prefect server also has those of other tests' clusters
    key = f"etcd-status-{out['cluster']}".lower().replace("_", "-")
    arts = [a for a in asyncio.run(artifact()) if a.key == key]
    assert arts and out["verdict"] in (arts[0].description or "")
