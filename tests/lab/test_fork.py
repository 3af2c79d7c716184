"""A fork made on purpose on the real lab, and seen everywhere it shows: master1 and master2 powered
off, `recover --yes --method restore` turns master3's own db into a new cluster (a new cluster id),
master1 and master2 powered back on elect a leader in their old cluster. Both sides accept writes.
`status` exits 3 naming both sides, `check` fails on it, `rejoin --all --plan` and `recover --plan`
refuse. (Before: "quorum held: 3 of 3 voters healthy, leader master1", exit 0, nothing to rejoin.)
Rebuilds the lab at the end: the tests after it expect three healthy voters."""

from __future__ import annotations

import json
import time

import pytest

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_recover import one

pytestmark = pytest.mark.lab
KEYS = 100


def _leaders(inv: Inventory) -> dict[str, EndpointStatus]:
    """The members that say they lead, as each reports it."""
    out = {}
    for h in ("master1", "master2", "master3"):
        try:
            with one(inv, h) as c:
                st = c.status(inv.client_url(inv.host(h)))
        except EtcdDrError:
            continue
        if st.is_leader:
            out[h] = st
    return out


def _both_sides_lead(inv: Inventory, timeout: float = 60) -> tuple[str, EndpointStatus, EndpointStatus]:
    """Until master3 leads its new cluster and master1 or master2 the old one: (old leader, its
    status, master3's)."""
    end = time.monotonic() + timeout
    while True:
        lead = _leaders(inv)
        old = next((h for h in ("master1", "master2") if h in lead), None)
        if old and "master3" in lead and lead[old].cluster_id != lead["master3"].cluster_id:
            return old, lead[old], lead["master3"]
        assert time.monotonic() < end, f"no fork within {timeout:g} s: leaders {sorted(lead)}"
        time.sleep(0.5)


def test_a_fork_is_named_by_status_and_check_and_refused(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        for i in range(KEYS):
            c.put(f"/fork-test/k{i:04d}", f"v{i}")
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", "--method", "restore", timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        assert json.loads(r.stdout)["path"] == "voter-restore"
        t0 = time.monotonic()
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "on").returncode == 0
        old, old_st, new_st = _both_sides_lead(inv)
        print(f"both sides lead {time.monotonic() - t0:.1f} s after power on ({old} and master3)")
        # both accept writes: a real fork, not a picture of one
        with one(inv, old) as c:
            c.put("/fork-test/old-side", "written")
        with one(inv, "master3") as c:
            c.put("/fork-test/new-side", "written")

        r, took = cli(lab, "status", "--json", "--no-ssh")
        assert r.returncode == 3, r.stdout + r.stderr
        out = json.loads(r.stdout)
        print(f"status on the fork: {took:.2f} s; {out['verdict']}")
        assert (
            out["forked"] and out["health"] == "forked" and out["quorum"] is False and out["leader"] is None
        )
        sides = {c["leader"]: c for c in out["clusters"]}
        assert set(sides) == {old, "master3"}
        assert sides[old]["cluster_id"] == f"{old_st.cluster_id:x}"
        assert sides["master3"]["cluster_id"] == f"{new_st.cluster_id:x}"
        assert sides[old]["cluster_id"] != sides["master3"]["cluster_id"]
        assert {"master1", "master2"} <= set(sides[old]["members"]) and sides["master3"]["members"] == [
            "master3"
        ]
        assert out["verdict"].startswith("forked: the members form 2 clusters: ")
        assert f"cluster {new_st.cluster_id:x}, leader master3" in out["verdict"]
        assert f"cluster {old_st.cluster_id:x}, leader {old}" in out["verdict"]

        r, _ = cli(lab, "status")  # the table, with SSH, and what to do
        assert r.returncode == 3 and "what to do: both sides accept writes" in r.stdout, r.stdout + r.stderr

        r, took = cli(lab, "check", "--json", timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        fork = next(x for x in json.loads(r.stdout)["results"] if x["check"] == "fork")
        assert not fork["ok"] and fork["critical"]
        assert f"leader {old}" in fork["detail"] and "leader master3" in fork["detail"]
        assert "etcd-dr rejoin" in fork["hint"]
        print(f"check on the fork: {took:.2f} s")

        r, _ = cli(lab, "rejoin", "--all", "--plan")
        assert r.returncode == 1, r.stdout + r.stderr
        assert (
            r.stdout.startswith("REFUSED (unsafe): rejoin plan for cluster ")
            and "forked: the members form" in r.stdout
        )
        assert "nothing to do" not in r.stdout

        r, _ = cli(lab, "recover", "--plan", "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        plan = json.loads(r.stdout)
        reason = plan.get("reason") or plan["plan"]["reason"]
        assert reason.startswith("forked: the members form 2 clusters") and "stop etcd on the side" in reason
    finally:
        lifecycle.up(lab.cfg, say=print)  # other tests (test_lab's) expect the lab as built


def test_a_fork_with_one_cluster_id_is_named_too(running_lab: Lab) -> None:
    """--force-new-cluster keeps the cluster id. master3 is forced after master1 and master2 lose
    power; they come back while master3 cannot reach them or be reached (blackhole routes inside
    master3), so no one tells them they were removed: they elect in the old cluster, master3 leads
    the forced one, same id. `status` names the fork by the two leaders' own member lists. Healed,
    the old side is told it was removed and stops."""
    from .test_fencing import cut_off

    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", "--method", "force-new-cluster", timeout=180)
        assert r.returncode == 0 and json.loads(r.stdout)["path"] == "force-new-cluster", r.stderr + r.stdout
        with cut_off(lab, ("master3",), ("master1", "master2"), this_machine=False):
            t0 = time.monotonic()
            for h in ("master1", "master2"):
                assert lab.cli("power", h, "on").returncode == 0
            end = time.monotonic() + 60
            while True:
                lead = _leaders(inv)
                old = next((h for h in ("master1", "master2") if h in lead), None)
                if old and "master3" in lead:
                    break
                assert time.monotonic() < end, f"no second leader within 60 s: leaders {sorted(lead)}"
                time.sleep(0.5)
            print(f"same-id fork: both sides lead {time.monotonic() - t0:.1f} s after power on")
            assert lead[old].cluster_id == lead["master3"].cluster_id  # one id, two clusters

            r, took = cli(lab, "status", "--json", "--no-ssh")
            assert r.returncode == 3, r.stdout + r.stderr
            out = json.loads(r.stdout)
            print(f"status on the same-id fork: {took:.2f} s; {out['verdict']}")
            sides = {c["leader"]: c for c in out["clusters"]}
            assert out["forked"] and set(sides) == {old, "master3"}, out["verdict"]
            assert sides[old]["cluster_id"] == sides["master3"]["cluster_id"]
            assert sides["master3"]["members"] == ["master3"]
        # healed: the old side hears from the forced member that it was removed
        t1 = time.monotonic()
        end = t1 + 60
        while True:
            lead = _leaders(inv)
            if set(lead) == {"master3"}:
                break
            assert time.monotonic() < end, f"the old side still leads 60 s after the heal: {sorted(lead)}"
            time.sleep(0.5)
        print(f"healed: only master3 leads {time.monotonic() - t1:.1f} s later")
    finally:
        lifecycle.up(lab.cfg, say=print)  # other tests expect the lab as built
