"""A resume that notices what changed, on the lab: `restore-kubernetes` fails at `rke up` (rke taken
off node2) with master3's etcd already moved onto ssl_old; then the recovered etcd stops (its
quorum lost: a change the plan did not make). The same command refuses to resume (status stale,
nothing run, the journal moved aside) saying what changed; with etcd back it decides afresh and
finishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import kube, lifecycle

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_restore_kubernetes import objects_back, on, restore

pytestmark = pytest.mark.lab


def test_a_resume_after_the_recovered_etcd_stopped_is_refused_then_decided_afresh(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    expected = kube.load_counts(lab.cfg)
    journal = lab.cfg.dir / f"kubernetes-{load_inventory(lab.cfg.inventory_path).cluster}.json"
    try:
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", timeout=240)
        assert r.returncode == 0, r.stderr + r.stdout
        on(lab, "node2", "mv /usr/local/bin/rke /usr/local/bin/rke.away")
        rc, out, _ = restore(lab, "--yes")
        assert rc == 1 and out["status"] == "failed", out["reason"]
        basis = json.loads(journal.read_text())["basis"]
        assert basis["quorum"] is True and list(basis["voters"]) == ["master3"], basis

        on(lab, "master3", "docker stop -t 5 etcd")  # the recovered etcd goes away under the plan
        on(lab, "node2", "mv /usr/local/bin/rke.away /usr/local/bin/rke")
        rc, out, wall = restore(lab, "--yes")
        look = out["timings"].get("observe", 0)
        print(f"stale resume refused in {wall:.1f} s (look {look:.2f} s): {out['reason']}")
        assert rc == 1 and out["status"] == "stale" and out["resumed"], out["reason"]
        assert out["reason"].startswith("the cluster changed since this plan was made: quorum is lost now (")
        assert "steps it had begun: etcd-on-ssl-old:master3, rke-up" in out["reason"]
        assert (
            "run `etcd-dr restore-kubernetes` again to decide from what the cluster is now" in out["reason"]
        )
        assert out["steps"] == [] and not journal.exists()
        closed = Path(out["journal"])
        assert closed.name.endswith(".closed.json") and json.loads(closed.read_text())["plan"]  # kept

        on(lab, "master3", "docker start etcd")
        wait_voters(lab, 1)
        rc, out, wall = restore(lab, "--yes")
        print(f"decided afresh: {wall:.1f} s")
        assert rc == 0 and out["status"] == "restored" and not out["resumed"], out["reason"]
        objects_back(out, expected)
    finally:
        on(lab, "node2", "test -e /usr/local/bin/rke.away && mv /usr/local/bin/rke.away /usr/local/bin/rke")
        on(lab, "master3", "docker start etcd")
        lifecycle.up(lab.cfg, say=print)
