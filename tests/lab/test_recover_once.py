"""One recovery per cluster wherever it is started, and never on a stale picture (issues 8 and 15),
on the real lab: two operators with two copies of the inventory (two audit logs, two journals, two
local locks: only the cluster in common) recover at the same moment. (An approval given after
someone else recovered the cluster: tests/lab/test_recover_flow.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from etcd_dr.lab import lifecycle

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
