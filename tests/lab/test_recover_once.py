"""One recovery per cluster wherever it is started, and never on a stale picture (issues 8 and 15),
on the real lab: two operators with two copies of the inventory (two audit logs, two journals, two
local locks: only the cluster in common) recover at the same moment; an approval given after the
lost masters came back changes nothing and leaves nothing for the next incident to resume. (An
approval given after someone else recovered the cluster: tests/lab/test_recover_flow.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.plans import Plan
from etcd_dr.recovery.incident import plan_target
from etcd_dr.recovery.run import RecoverStatus, recover

from .conftest import Lab
from .test_faults import audit_events, inventory_copy, wait_voters
from .test_recover import sh

pytestmark = pytest.mark.lab


def containers(lab: Lab) -> list[str]:
    return sorted(sh(lab, "master3", "docker ps -a --format '{{.Names}}'").split())


def recover_argv(inventory: Path) -> list[str]:
    return [sys.executable, "-m", "etcd_dr.cli", "recover", "--yes", "--json", "-i", str(inventory)]


def test_two_operators_with_two_inventories_recover_once(running_lab: Lab, tmp_path: Path) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    a, b = tmp_path / "alice", tmp_path / "bob"
    a.mkdir(), b.mkdir()
    invs = [inventory_copy(lab, d, rehearsal=True) for d in (a, b)]
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        procs = [
            subprocess.Popen(recover_argv(i), env=lab.cli_env(), stdout=PIPE, stderr=PIPE, text=True)
            for i in invs
        ]
        outs = [json.loads(p.communicate(timeout=240)[0]) for p in procs]
        statuses = sorted(o["status"] for o in outs)
        # the loser meets the winner's lease on master3 (busy) or, had it come after the winner was
        # done, its fresh look finds the cluster recovered (stale); either way it did nothing
        assert statuses[1] == "recovered" and statuses[0] in ("busy", "stale"), [o["reason"] for o in outs]
        loser_dir = (a, b)[[o["status"] for o in outs].index(statuses[0])]
        loser = next(o for o in outs if o["status"] != "recovered")
        assert loser["steps"] == []
        assert (
            "master3 is leased to another recovery" in loser["reason"] or "changed since" in loser["reason"]
        )
        assert not [e for e in audit_events(loser_dir / "audit.jsonl", "step:etcd-stop")]
        assert not (loser_dir / f"recover-lab-{lab.cfg.prefix}.json").exists()
        names = containers(lab)
        assert len([n for n in names if n.startswith("etcd-forced-")]) == 1, names  # forced once
        # the lease is given back: nothing is left holding the cluster
        assert (
            sh(
                lab,
                "master3",
                f"ls /var/lib/etcd-dr/ | grep -c '^recover-lab-{lab.cfg.prefix}.lease$' || true",
            ).strip()
            == "0"
        )
    finally:
        lifecycle.up(lab.cfg, say=print)


def test_a_failed_approval_leaves_nothing_to_resume_for_the_next_incident(running_lab: Lab) -> None:
    """Issue 15: a recovery is approved only after the lost masters came back (quorum 3/3): it must
    change nothing and leave no journal; when a new incident later leaves master2 the only survivor,
    the plan is made for master2 afresh (the old run's plan, for master3, would have told the
    operator to kill master2's etcd: the only survivor)."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    journal = lab.cfg.dir / f"recover-lab-{lab.cfg.prefix}.json"
    before = containers(lab)

    def approve_after_they_came_back(plan: Plan) -> bool:
        assert plan_target(plan) == "master3", plan.reason
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "on").returncode == 0
        wait_voters(lab, 3)
        return True

    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        res = recover(inv, yes=False, plan_only=False, confirm=approve_after_they_came_back, say=print)
        assert res.status is RecoverStatus.STALE and res.outcome is None, res.reason
        assert "quorum is held again (quorum held: 3 of 3 voters healthy" in res.reason
        assert not journal.exists() and containers(lab) == before

        for h in ("master1", "master3"):  # the next incident: master2 survives
            assert lab.cli("power", h, "off").returncode == 0
        r = lab.etcd_dr("recover", "--plan", "--json", timeout=120)
        out = json.loads(r.stdout)
        assert r.returncode == 0 and not out["resumed"], out["reason"]
        assert "master2 has the highest raft index" in out["reason"]
        assert {s["host"] for s in out["plan"]["steps"]} == {None, "master2"}
    finally:
        lifecycle.up(lab.cfg, say=print)
