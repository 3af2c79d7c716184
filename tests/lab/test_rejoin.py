"""`etcd-dr rejoin` on the real lab: after the masters-lost recovery (master3 forced into a one-member
cluster, master1 and master2 powered back on with their old data and restart-looping etcd), each
lost master is brought back one at a time: its old container stopped, renamed and kept with
restart=no, its data dir moved aside, added as a learner, caught up, promoted. Leaves three healthy
voters behind (the lab is rebuilt)."""

from __future__ import annotations

import json
import time

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, status, wait_voters
from .test_recover import one, sh

pytestmark = pytest.mark.lab
KEYS = 200


def _refused_divergent(lab: Lab, inv, host: str, out: dict) -> None:
    """etcd's force-new-cluster on a quiet cluster can drop a write the survivor had applied, so a
    member that replays the recovered log lacks it (etcd-io/etcd#14009; seen on this lab about one
    run in three, fence write or not). The rejoin must then refuse to promote and roll back cleanly:
    checked here, and the test is reported as an expected failure with the numbers, not hidden."""
    (res,) = out["hosts"]
    states = {s["action"]: s["status"] for s in res["steps"]}
    assert states["wait-caught-up"] == "failed" and states["promote"] == "not-run", res["steps"]
    assert "not promoted" in out["verdict"] and "rolled back" in out["verdict"], out["verdict"]
    with one(inv, "master3") as m:
        names = [x.name for x in m.member_list()]
    assert names == ["etcd-master3"], names  # the learner was removed again
    running = sh(lab, host, "docker ps --format '{{.Names}}'").split()
    assert "etcd" not in running, running  # no etcd left running on the divergent data
    assert sh(lab, host, "ls -d /var/lib/etcd.bak-* | wc -l").strip() != "0"
    pytest.xfail(f"etcd-io/etcd#14009 reproduced; rejoin refused and rolled back: {out['verdict'][:200]}")


def test_lost_masters_rejoin_after_recovery(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/rejoin-test/k{i:04d}", f"v{i}")
        # a quiet cluster: the follower's WAL holds the commit of the last write only in a buffer
        # (a commit-only HardState is not synced) until the next entry arrives; force-new-cluster
        # after a kill then discards the entry its store had applied, and a rejoined member replaying
        # that log differs (etcd-io/etcd#14009; rejoin refuses to promote it). One more write makes
        # the commit of every counted key durable on master3 before the power goes.
        c.put("/rejoin-fence", "x")
    with one(inv, "master3") as m3:
        end = time.monotonic() + 10
        while m3.range("/rejoin-fence", serializable=True, count_only=True).count < 1:
            assert time.monotonic() < end, "master3 never applied the fence write"
            time.sleep(0.05)
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "on").returncode == 0

        # refusals change nothing: the survivor is a voter member, node1 is no inventory voter
        r, _ = cli(lab, "rejoin", "--host", "master3")
        assert r.returncode == 2 and "master3 is a voter member of" in r.stdout, r.stdout + r.stderr
        r, _ = cli(lab, "rejoin", "--host", "node1")
        assert r.returncode == 2 and "node1 is not an etcd voter in the inventory" in r.stdout
        r, _ = cli(lab, "rejoin", "--host", "nosuch")
        assert r.returncode == 2 and "no host named 'nosuch' in the inventory" in r.stderr

        took = {}
        for h in ("master1", "master2"):
            r, took[h] = cli(lab, "rejoin", "--host", h, "--json", timeout=180)
            if r.returncode == 1 and "etcd-io/etcd#14009" in r.stdout:
                _refused_divergent(lab, inv, h, json.loads(r.stdout))
            assert r.returncode == 0, r.stderr + r.stdout
            out = json.loads(r.stdout)
            (res,) = out["hosts"]
            assert res["plan"]["kind"] == "rejoin"
            assert [(s["action"], s["status"]) for s in res["steps"]] == [
                ("issue-cert", "skipped"),  # its certificate is still valid
                ("set-aside-old-member", "done"),
                ("member-add-learner", "done"),
                ("start-etcd", "done"),
                ("wait-caught-up", "done"),
                ("promote", "done"),
            ], res["steps"]
            assert f"{h} is a voter again" in out["verdict"]
            assert "as on the leader at applied index" in res["steps"][4]["detail"]
            print(f"rejoin {h}: {took[h]:.2f} s wall, member add to caught up {res['join_s']} s")

        out = wait_voters(lab, 3)
        assert out["voters"] == 3 and out["member_list_source"] == "linearizable"
        for h in ("master1", "master2", "master3"):
            with one(inv, h) as m:
                got = m.range("/rejoin-test/", "/rejoin-test0", serializable=True, count_only=True).count
                assert got == KEYS, f"{h} has {got} of {KEYS} keys"

        # master1's old member kept aside: container renamed with restart=no, data dir moved
        names = sh(lab, "master1", "docker ps -a --format '{{.Names}}'").split()
        (old,) = [n for n in names if n.startswith("etcd-old-")]
        pol = sh(lab, "master1", f"docker inspect -f '{{{{.HostConfig.RestartPolicy.Name}}}}' {old}")
        assert pol.strip() == "no"
        (bak,) = sh(lab, "master1", "ls -d /var/lib/etcd.bak-*/member").split()
        assert sh(lab, "master1", f"test -d {bak}/snap && echo kept").strip() == "kept"

        # nothing left to rejoin
        r, _ = cli(lab, "rejoin", "--all")
        assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr
        assert status(lab)["voters"] == 3
    finally:
        lifecycle.up(lab.cfg, say=print)  # other tests expect the lab as built
