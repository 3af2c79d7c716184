"""`etcd-dr server` on the lab: an Alertmanager notification (etcdInsufficientMembers for the lab's
cluster, master1 and master2 powered off) starts exactly one recover run through the automation; the
run pauses with the plan for approval (the lab's inventory does not say automatic_recovery); the
alert resolves and the waiting run is cancelled: its process gone, master3 untouched, no journal.
With automatic_recovery: true in the inventory, the alert alone recovers the cluster."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle
from tests.console.conftest import TOKEN, start_console

from .conftest import Lab
from .test_faults import inventory_copy, wait_voters
from .test_recover import one, sh
from .test_recover_flow import PICTURE

pytestmark = pytest.mark.lab

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def notification(cluster: str, status: str) -> bytes:
    a = {"status": status, "labels": {"alertname": "etcdInsufficientMembers", "cluster": cluster,
         "job": "etcd"}, "annotations": {"description": "etcd cluster has insufficient members"},
         "startsAt": "2026-12-05T19:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom",
         "fingerprint": "lab-insufficient"}  # fmt: skip
    return json.dumps({"version": "4", "status": status, "receiver": "etcd-dr", "groupKey": "{}:{}",
                       "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://am", "alerts": [a]}).encode()  # fmt: skip


def _ts(s: str | None) -> float | None:
    return datetime.fromisoformat(s).timestamp() if s else None


def test_an_alert_starts_one_recovery_that_waits_and_its_resolution_cancels_it(
    running_lab: Lab, tmp_path: Path
) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    cluster = f"lab-{lab.cfg.prefix}"
    inv = tmp_path / "inventories"
    inv.mkdir()
    (inv / "lab").symlink_to(lab.cfg.dir)  # the lab's inventory.yaml, its keys and state beside it
    c = start_console(tmp_path, inv)
    url = f"{c.receiver}/alerts/alertmanager"
    before = sh(lab, "master3", PICTURE)
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    try:
        sent = time.time()
        for _ in range(3):  # Alertmanager's repeats: still one incident
            r = httpx.post(url, content=notification(cluster, "firing"), headers=BEARER, timeout=30)
            assert r.status_code == 200, r.text
        runs = [x for x in c.flow_runs("recover") if x["parameters"].get("cluster") == cluster]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = [x for x in c.flow_runs("recover") if x["parameters"].get("cluster") == cluster]
            if runs and runs[0]["state"]["type"] == "PAUSED":
                break
            assert not runs or runs[0]["state"]["type"] in ("SCHEDULED", "PENDING", "RUNNING"), runs[0][
                "state"
            ]
            time.sleep(0.5)
        assert len(runs) == 1, runs
        run = runs[0]
        assert run["state"]["type"] == "PAUSED", run["state"]
        assert run["parameters"]["approve"] is False and run["parameters"]["incident"]
        paused_s = _ts(run["state"]["timestamp"]) - sent  # type: ignore[operator]
        started_s = _ts(run["start_time"]) - sent  # type: ignore[operator]

        r = httpx.post(url, content=notification(cluster, "resolved"), headers=BEARER, timeout=30)
        assert r.json()["incidents"][0]["change"] == "resolved", r.text
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            state = c.get(f"/flow_runs/{run['id']}")["state"]  # type: ignore[index]
            if state["type"] == "CANCELLED":
                break
            time.sleep(0.5)
        assert state["type"] == "CANCELLED", state
        cancelled_s = time.monotonic() - t0
        assert len([x for x in c.flow_runs("recover") if x["parameters"].get("cluster") == cluster]) == 1
        assert sh(lab, "master3", PICTURE) == before  # nothing stopped, forced or moved
        assert not (lab.cfg.dir / f"recover-{cluster}.json").exists()
        print(f"\nwebhook -> run started {started_s:.1f} s, -> paused for approval {paused_s:.1f} s; "
              f"resolved -> cancelled {cancelled_s:.1f} s")  # fmt: skip
    finally:
        for h in ("master1", "master2"):
            lab.cli("power", h, "on")
        assert c.stop() == 0
    wait_voters(lab, 3)


def test_an_alert_recovers_by_itself_when_the_inventory_says_automatic(
    running_lab: Lab, tmp_path: Path
) -> None:
    """The lab's inventory with automatic_recovery: true: the alert's run executes without a pause
    (fencing on the lab power driver's evidence) and master3 accepts writes again; the figure is the
    issue's benchmark, webhook received to writes accepted."""
    lab = running_lab
    wait_voters(lab, 3)
    d = tmp_path / "inventories" / "lab"
    d.mkdir(parents=True)
    path = inventory_copy(lab, d, rehearsal=False)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "automatic_recovery": True}))
    inv = load_inventory(path)
    c = start_console(tmp_path, tmp_path / "inventories")
    url = f"{c.receiver}/alerts/alertmanager"
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    try:
        sent = time.time()
        r = httpx.post(url, content=notification(inv.cluster, "firing"), headers=BEARER, timeout=30)
        (opened,) = r.json()["incidents"]
        accepted = None
        with one(inv, "master3") as client:
            while time.time() - sent < 240 and accepted is None:
                try:
                    client.put("console-probe", str(time.time()), timeout=1)
                    accepted = time.time() - sent
                except Exception:
                    time.sleep(0.2)
        assert accepted is not None, "\n".join(c.lines[-30:])
        run = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            runs = [
                x for x in c.flow_runs("recover") if x["parameters"].get("incident") == opened["incident"]
            ]
            if runs and runs[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                run = runs[0]
                break
            time.sleep(0.5)
        assert run and run["state"]["type"] == "COMPLETED", run and run["state"]
        assert run["parameters"]["approve"] is True
        started_s = _ts(run["start_time"]) - sent  # type: ignore[operator]
        done_s = _ts(run["end_time"]) - sent  # type: ignore[operator]
        print(f"\nautomatic: webhook -> run started {started_s:.1f} s, -> first write accepted "
              f"{accepted:.1f} s, -> run completed {done_s:.1f} s")  # fmt: skip
    finally:
        c.stop()
        lifecycle.up(lab.cfg, say=print)  # other tests expect the lab's three voters
