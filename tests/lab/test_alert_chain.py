"""The whole alert chain on the lab, nothing sent by hand: Debian's Prometheus scrapes the lab's three
etcd members (https, client-cert auth) with the etcd mixin's rules (`for:` shortened), Debian's
Alertmanager posts to `etcd-dr server`'s receiver with the bearer token from a file. master1 and
master2 powered off -> etcdInsufficientMembers fires -> one incident -> exactly one recover run,
paused for approval; approved through the Prefect API as the form would -> the cluster is recovered
(status: quorum, master3 accepts writes), and Alertmanager's repeats still give that one run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import alerting, lifecycle
from tests.console.conftest import TOKEN, alive, start_console

from .conftest import Lab
from .test_faults import wait_voters
from .test_recover import one
from .test_status import status

pytestmark = pytest.mark.lab
T = TypeVar("T")


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def _until(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := check()) is not None:
            return v
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_prometheus_and_alertmanager_start_one_recovery_that_an_approval_completes(
    running_lab: Lab, tmp_path: Path
) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    cluster = f"lab-{lab.cfg.prefix}"
    inv_dir = tmp_path / "inventories"
    inv_dir.mkdir()
    (inv_dir / "lab").symlink_to(lab.cfg.dir)  # the lab's inventory.yaml with its keys beside it
    inv = load_inventory(lab.cfg.inventory_path)
    c = start_console(tmp_path, inv_dir)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    a = alerting.start(inv, tmp_path / "alerting", receiver=c.receiver, token_file=token)
    prom = a.prometheus_url
    try:

        def query(q: str) -> list[dict]:
            r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=5)
            return r.json()["data"]["result"]

        # the three members scraped over TLS (up 1), their metrics there, nothing firing yet
        _until("3 members up", lambda: True if len(query('up{job="etcd"} == 1')) == 3 else None, 60)
        assert {x["metric"]["cluster"] for x in query("etcd_server_has_leader == 1")} == {cluster}
        assert httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"] == []

        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        off = time.time()

        def firing() -> float | None:
            for x in httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"]:
                if x["labels"]["alertname"] == "etcdInsufficientMembers" and x["state"] == "firing":
                    assert x["labels"]["cluster"] == cluster
                    return time.time()
            return None

        fired = _until("etcdInsufficientMembers firing", firing, 120)
        incidents = c.data / "receiver-incidents.json"

        def received() -> float | None:
            try:
                return json.loads(incidents.read_text())[cluster]["opened"]
            except (OSError, ValueError, KeyError):
                return None

        webhook = _until("the receiver opened an incident", received, 120)

        def runs() -> list[dict]:
            return [x for x in c.flow_runs("recover") if x["parameters"].get("cluster") == cluster]

        def paused() -> dict | None:
            rs = runs()
            assert len(rs) <= 1, rs
            return rs[0] if rs and rs[0]["state"]["type"] == "PAUSED" else None

        run = _until("the recover run paused for approval", paused, 240, every=0.5)
        assert run["parameters"]["approve"] is False and run["parameters"]["incident"]
        created, started, paused_at = (
            _ts(run["created"]),
            _ts(run["start_time"]),
            _ts(run["state"]["timestamp"]),
        )
        # Alertmanager keeps sending (group_interval 5 s; more alerts join the group): still one run
        time.sleep(12)
        assert len(runs()) == 1, runs()
        assert lab.etcd_dr("status", "--json").returncode == 1  # nothing changed while it waits

        approved = time.monotonic()
        answer = {"approve": True, "cluster": cluster, "approver": "alert-chain-test"}
        c.post(f"/flow_runs/{run['id']}/resume", {"run_input": answer})

        def done() -> dict | None:
            r = c.get(f"/flow_runs/{run['id']}")
            return r if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None  # type: ignore[index]

        end = _until("the recover run finished", done, 300, every=0.5)
        assert end["state"]["type"] == "COMPLETED", (end["state"], "\n".join(c.lines[-30:]))
        completed_s = time.monotonic() - approved
        rc, out, _ = status(lab)
        assert rc == 0 and out["quorum"] is True, out["verdict"]
        with one(inv, "master3") as m3:
            m3.put("/alert-chain/after", "accepted")
            assert len(m3.member_list(linearizable=True)) == 1
        time.sleep(6)  # Alertmanager's next send for the still-firing group: the same incident
        assert len(runs()) == 1, runs()
        print(
            f"\npower off -> firing in Prometheus {fired - off:.1f} s -> webhook received "
            f"{webhook - off:.1f} s -> run created {created - off:.1f} s -> started {started - off:.1f} s "
            f"-> paused {paused_at - off:.1f} s; approved -> completed {completed_s:.1f} s; "
            f"status: {out['verdict']}"
        )
    finally:
        alerting.stop(tmp_path / "alerting")
        c.stop()
        lifecycle.up(lab.cfg, say=print)  # other tests expect the lab's three voters


def test_lab_up_alerting_starts_both_and_lab_down_stops_them(running_lab: Lab) -> None:
    """As a person would try it: `etcd-dr lab up --alerting` prints where the UIs are, Prometheus
    scrapes the three members; `etcd-dr lab down` ends both processes (by their PIDs)."""
    lab = running_lab
    t0 = time.monotonic()
    r = lab.cli("up", "--alerting", timeout=300)
    assert r.returncode == 0, r.stderr
    up_s = time.monotonic() - t0
    prom = re.search(r"^Prometheus: (http://127\.0\.0\.1:\d+) .*PID (\d+)\)$", r.stdout, re.M)
    am = re.search(r"^Alertmanager: (http://127\.0\.0\.1:\d+) \(PID (\d+)\) -> (\S+)$", r.stdout, re.M)
    assert prom and am, r.stdout
    assert am[3] == "http://127.0.0.1:9095/alerts/alertmanager"
    token = lab.cfg.dir / "alerting" / "token"
    assert f"--alert-token-file {token}" in r.stdout and token.read_text().strip() not in r.stdout
    assert token.stat().st_mode & 0o077 == 0
    try:
        q = f"{prom[1]}/api/v1/query"

        def three_up() -> bool | None:
            res = httpx.get(q, params={"query": 'up{job="etcd"} == 1'}, timeout=5).json()["data"]["result"]
            return True if len(res) == 3 else None

        _until("3 members up", three_up, 60)
        assert httpx.get(f"{am[1]}/-/ready", timeout=5).status_code == 200
        pids = [int(prom[2]), int(am[2])]
        assert all(alive(p) for p in pids)
    finally:
        d = lab.cli("down")
    assert d.returncode == 0, d.stderr
    assert "alerting stopped" in d.stdout + d.stderr
    assert not any(alive(p) for p in pids)
    print(f"\nlab up --alerting {up_s:.1f} s")
    lifecycle.up(lab.cfg, say=print)  # other tests expect the lab up
