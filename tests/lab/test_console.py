"""`etcd-dr server` on the lab: an Alertmanager notification (etcdInsufficientMembers for the lab's
cluster, master1 and master2 powered off) starts exactly one recover run through the automation; the
run pauses with the plan for approval (the lab's inventory does not say automatic_recovery); the
alert resolves and the waiting run is cancelled: its process gone, master3 untouched, no journal."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.console.conftest import TOKEN, start_console

from .conftest import Lab
from .test_faults import wait_voters
from .test_recover import sh
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
