"""`etcd-dr recover` then `etcd-dr rejoin` on the real lab: masters lost on a quiet cluster, master3
stopped gracefully and forced into a one-member cluster once, master1 and master2 powered back on
with their old data and restart-looping etcd; each lost master is brought back one at a time: its
old container stopped, renamed and kept with restart=no, its data dir moved aside, added as a
learner, caught up, promoted. Every key on every member at the end: the check that the recovery kept
what master3 had applied in a form that joining members replay whole (with a kill before
--force-new-cluster they did not: etcd-io/etcd#14009). Leaves three healthy voters behind."""

from __future__ import annotations

import json

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, status, wait_voters
from .test_recover import assert_steps_ran, one, sh

pytestmark = pytest.mark.lab
KEYS = 200


def test_lost_masters_rejoin_after_recovery(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/rejoin-test/k{i:04d}", f"v{i}")
    # no fence write, on purpose: a quiet cluster whose last write's commit master3 has not synced
    # is the case --force-new-cluster gets wrong after a kill (etcd-io/etcd#14009); and master3 leads,
    # the case where a graceful stop stalls and the recovery syncs the WAL another way
    with one(inv, "master3") as m3:
        me = m3.status(inv.client_url(inv.host("master3"))).member_id
    r = lab.etcdctl("move-leader", f"{me:x}")
    assert r.returncode == 0 or "already" in r.stderr, r.stderr
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
        assert out["path"] == "force-new-cluster" and out["status"] == "recovered"
        assert_steps_ran(out)
        # it led (the WAL synced by a proposal, then killed) or had stepped down already (stopped)
        detail = out["steps"][1]["detail"]
        print(f"stop:master3: {detail}")
        if detail.startswith("it led without a quorum"):
            # killed once the proposal's write reached its WAL, not after the proposal's timeout
            assert "an entry was proposed and its WAL written" in detail, detail
        with one(inv, "master3") as m3:
            assert m3.range("/rejoin-test/", "/rejoin-test0", count_only=True).count == KEYS
        args = sh(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd")
        assert "--force-new-cluster" not in args
        print(f"recover timings: {out['timings']}")
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "on").returncode == 0

        # refusals change nothing: the survivor is a voter member, node1 is no inventory voter
        r, _ = cli(lab, "rejoin", "--host", "master3")
        assert r.returncode == 2 and "master3 is a voter member of" in r.stdout, r.stdout + r.stderr
        r, _ = cli(lab, "rejoin", "--host", "node1")
        assert r.returncode == 2 and "node1 is not an etcd voter or learner in the inventory" in r.stdout
        r, _ = cli(lab, "rejoin", "--host", "nosuch")
        assert r.returncode == 2 and "no host named 'nosuch' in the inventory" in r.stderr

        took = {}
        for h in ("master1", "master2"):
            r, took[h] = cli(lab, "rejoin", "--host", h, "--json", timeout=180)
            assert r.returncode == 0, r.stderr + r.stdout
            out = json.loads(r.stdout)
            (res,) = out["hosts"]
            assert res["plan"]["kind"] == "rejoin"
            # its old member was read when set aside: it held nothing the cluster lacks
            (rep,) = out["diverged"]
            assert rep["host"] == h and rep["status"] == "none", rep
            assert rep["data_dir"].startswith(f"{inv.etcd.data_dir}.bak-"), rep
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
