"""How the survivor's stop step leaves its WAL synced without waiting (issue 9, issue 12's
alert-to-writes target), each case with every write the cluster acknowledged before the loss kept:

- it was the leader when quorum went and, by the recovery's stop step, has stepped down and
  campaigns: a graceful stop of it hangs until docker's 30 s timeout kills it (exit 137); the stop
  step kills it once it saw a campaign since it last had a leader (etcd fsyncs the new term's
  HardState with the commit index it holds);
- it is a follower that still names the lost leader: it is stopped gracefully until its server
  closed (its WAL synced and closed: "stopping serving peer traffic"), then killed instead of
  waiting out the peer listener's 0.5 s drain.
(One that still leads when the stop comes is synced by a proposal: tests/lab/test_rejoin.py.)"""

from __future__ import annotations

import json
import threading
import time

import pytest

from etcd_dr.errors import EtcdDrError
from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_recover import one, sh

pytestmark = pytest.mark.lab


def _recover_on_master3(lab: Lab) -> tuple[dict, dict, float]:
    """`recover --yes` by force-new-cluster on master3: its result, its stop step, that step's time."""
    r, wall = cli(lab, "recover", "--yes", "--json", "--method", "force-new-cluster", timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout)
    assert out["status"] == "recovered" and out["path"] == "force-new-cluster"
    stop_step = next(s for s in out["steps"] if s["id"] == "stop:master3")
    stop_step["detail"] = stop_step.get("detail") or ""
    took = out["timings"]["step:stop:master3"]
    print(
        f"stop:master3 {took:.2f} s: {stop_step['detail']}; recover wall {wall:.2f} s; "
        f"timings {out['timings']}"
    )
    return out, stop_step, took


def test_former_leader_is_killed_after_a_campaign_not_stalled(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    m3_ep = inv.client_url(inv.host("master3"))
    with one(inv, "master3") as m3:
        me = m3.status(m3_ep).member_id
    r = lab.etcdctl("move-leader", f"{me:x}")
    assert r.returncode == 0 or "already" in r.stderr, r.stderr

    # a writer on the leader until the power loss and a little after: every acknowledged key must
    # survive (no fence write after it: the last commit-only HardState is what #14009 loses)
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with one(inv, "master3") as c:
            i = 0
            while not stop.is_set():
                key = f"/leader-stop/k{i:05d}"
                i += 1
                try:
                    c.put(key, "v", timeout=1.0)
                    acked.append(key)
                except EtcdDrError:
                    time.sleep(0.05)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(1.0)
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        time.sleep(1.0)
        stop.set()
        t.join(5)
        assert len(acked) > 5, acked
        # the case that stalled: it stepped down (CheckQuorum, within about an election timeout)
        # and knows no leader; one that still leads is synced by a proposal (test_rejoin covers it)
        with one(inv, "master3") as m3:
            end = time.monotonic() + 30
            while m3.status(m3_ep, timeout=1).leader != 0:
                assert time.monotonic() < end, "master3 still names a leader 30 s after the loss"
                time.sleep(0.3)
        out, stop_step, took = _recover_on_master3(lab)
        detail = stop_step["detail"]
        assert "campaigned since it last had" in detail and "(became candidate at term" in detail, stop_step
        # the wait for its campaign (12.0-12.7 s here with RKE's 5 s; capped at 17 s) and the kill:
        # never docker's 30 s
        assert took < 20, (took, detail)
        with one(inv, "master3") as m3:
            have = {kv.key.decode() for kv in m3.range("/leader-stop/", "/leader-stop0", keys_only=True).kvs}
            assert len(m3.member_list(linearizable=True)) == 1
        lost = [k for k in acked if k not in have]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
        # applied and synced agree: the forced member kept the revision it had applied (#14009)
        verify = next(s for s in out["steps"] if s["id"].startswith("verify"))
        assert verify["state"] == "done", verify
    finally:
        stop.set()
        lifecycle.up(lab.cfg, say=print)  # other tests expect three voters


def test_follower_is_killed_once_its_server_closed(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with one(inv, "master1") as m1:
        me = m1.status(inv.client_url(inv.host("master1"))).member_id
    r = lab.etcdctl("move-leader", f"{me:x}")
    assert r.returncode == 0 or "already" in r.stderr, r.stderr
    # a quiet cluster whose last writes' commit master3 learnt only from heartbeats (commit-only
    # HardStates wait in its WAL's buffer): the case a kill before the server's close gets wrong
    with one(inv, "master3") as m3:
        for i in range(50):
            m3.put(f"/follower-stop/k{i:03d}", "v")
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        # at once, as the benchmark does: master3 names master1 for an election timeout (5-10 s)
        out, stop_step, _ = _recover_on_master3(lab)
        assert stop_step["detail"].startswith("stopped gracefully up to its server's close"), stop_step
        old = out["plan"]["steps"][3]["params"]["new_name"]  # the retired container
        code = sh(lab, "master3", f"docker inspect -f '{{{{.State.ExitCode}}}}' {old}").strip()
        # killed during its drain (137), or its drain was over before the log line reached the
        # watcher (one CI run: exit 0): either way the detail says which, and nothing was lost
        if code == "137":
            assert stop_step["detail"].endswith("instead of waiting out the peer listener's drain (0.5-1 s)")
        else:
            assert code == "0" and "exited by itself (code 0)" in stop_step["detail"], (code, stop_step)
        with one(inv, "master3") as m3:
            assert m3.range("/follower-stop/", "/follower-stop0", count_only=True).count == 50
        verify = next(s for s in out["steps"] if s["id"].startswith("verify"))
        assert verify["state"] == "done", verify
    finally:
        lifecycle.up(lab.cfg, say=print)  # other tests expect three voters
