"""`etcd-dr server` as an operator starts it: every deployment of every cluster exists with its
schedule (read back through the Prefect API), the cluster is a choice in every run form, the
concurrency limits and automations are there; SIGTERM stops it with no process left behind and the
schedules as they were. Bad input starts nothing."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.console.conftest import REPO, alive, descendants, free_port, start_console, write_inventory

pytestmark = pytest.mark.server  # each starts `etcd-dr server`: not in the quick loop

SCHEDULED = {  # deployment -> (interval seconds or cron, clusters)
    "status": (300.0, {"alpha", "beta"}),
    "check": (3600.0, {"alpha", "beta"}),
    "snapshot": (21600.0, {"alpha", "beta"}),
    "hosts-clock": ("47 5 * * *", {"alpha", "beta"}),
    "rehearse": ("17 4 * * 0", {"alpha"}),  # rehearsal: true only
}


def test_server_serves_every_deployment_with_its_schedule_and_stops_cleanly(tmp_path: Path) -> None:
    t0 = time.monotonic()
    c = start_console(tmp_path, {"alpha": {"rehearsal": True}, "beta": {}})
    started_s = time.monotonic() - t0
    try:
        deps = c.deployments()
        assert set(deps) == {
            "status", "check", "snapshot", "hosts-clock", "rehearse", "recover", "add-learner", "rejoin",
            "restore-kubernetes", "kubelet-cleanup", "cert-renew",
        }  # fmt: skip
        for name, (every, clusters) in SCHEDULED.items():
            scheds = deps[name]["schedules"]
            got = {s["parameters"]["cluster"]: s for s in scheds}
            assert set(got) == clusters, (name, scheds)
            for s in got.values():
                assert s["active"], s
                sched = s["schedule"]
                assert sched.get("interval", sched.get("cron")) == every, (name, sched)
        on_demand = ("recover", "add-learner", "rejoin", "restore-kubernetes", "kubelet-cleanup")
        on_demand += ("cert-renew",)
        for name in on_demand:
            assert deps[name]["schedules"] == [], name
        for name, d in deps.items():  # the cluster is a choice of the served ones, described
            prop = d["parameter_openapi_schema"]["properties"]["cluster"]
            want = ["alpha"] if name == "rehearse" else ["alpha", "beta"]
            assert prop["enum"] == want and prop["description"], (name, prop)
            assert d["enforce_parameter_schema"], name
            assert all(p.get("description") for p in d["parameter_openapi_schema"]["properties"].values()), (
                name
            )
        limits = {x["name"]: x for x in c.post("/v2/concurrency_limits/filter")}  # type: ignore[union-attr]
        assert {n: (x["limit"], x["active"]) for n, x in limits.items() if n.startswith("recover-")} == {
            "recover-alpha": (1, True),
            "recover-beta": (1, True),
        }
        autos = {a["name"]: a for a in c.post("/automations/filter")}  # type: ignore[union-attr]
        assert set(autos) == {"etcd-dr recover alpha", "etcd-dr recover beta"}
        act = autos["etcd-dr recover beta"]["actions"][0]
        assert act["deployment_id"] == deps["recover"]["id"]
        assert act["parameters"]["cluster"] == "beta" and act["parameters"]["approve"] is False
        # a name outside the choice is refused by the server before any run exists
        r = c.post_raw(
            f"/deployments/{deps['status']['id']}/create_flow_run", {"parameters": {"cluster": "gamma"}}
        )
        assert r.status_code == 409 and "gamma" in r.text, r.text

        # a run in flight when the signal comes: a recovery waiting for alpha's slot, taken here (and
        # never given back: the server goes away)
        assert c.post("/v2/concurrency_limits/increment", {"names": ["recover-alpha"], "slots": 1})
        run = c.post(f"/deployments/{deps['recover']['id']}/create_flow_run",
                     {"parameters": {"cluster": "alpha", "slot_wait_s": 600}})["id"]  # type: ignore[index]  # fmt: skip
        t = time.monotonic()
        while c.get(f"/flow_runs/{run}")["state"]["type"] != "RUNNING" and time.monotonic() - t < 120:  # type: ignore[index]
            time.sleep(0.5)
        assert c.get(f"/flow_runs/{run}")["state"]["type"] == "RUNNING"  # type: ignore[index]
        tree = descendants(c.proc.pid)
        assert len(tree) >= 2, tree  # the Prefect server and the run's process at least
        t1 = time.monotonic()
        assert c.stop(signal.SIGTERM) == 0, "\n".join(c.lines)
        stop_s = time.monotonic() - t1
        time.sleep(0.5)
        left = [p for p in tree if alive(p)]
        assert not left, f"processes left behind: {left}"
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
    assert "stopping" in c.lines and "stopped" in c.lines, "\n".join(c.lines[-40:])
    # schedules left as they were: not paused on shutdown
    con = sqlite3.connect(c.data / "prefect.db")
    rows = con.execute("SELECT d.name, d.paused, s.active FROM deployment d JOIN deployment_schedule s "
                       "ON s.deployment_id = d.id").fetchall()  # fmt: skip
    con.close()
    assert rows and all(not paused and active for _, paused, active in rows), rows
    print(f"\nstarted in {started_s:.1f} s, stopped in {stop_s:.1f} s, {len(tree)} processes below it")


def test_bad_input_starts_nothing(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    write_inventory(inv / "one", "same")
    write_inventory(inv / "two", "same")
    bad = inv / "broken.yaml"
    bad.write_text("cluster: x\nhosts: []\n")
    out = subprocess.run(
        [str(REPO / ".venv/bin/etcd-dr"), "server", "--inventories", str(inv), "--data", str(tmp_path / "d"),
         "--no-receiver"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out
    assert "cluster 'same' is also" in out.stderr and "broken.yaml" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()  # nothing started, nothing written
    out = subprocess.run(
        [str(REPO / ".venv/bin/etcd-dr"), "server", "--inventories", str(inv / "one"), "--data",
         str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2 and "no alert token" in out.stderr, out
    with socket.socket() as busy:  # a port in use: refused before anything starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [str(REPO / ".venv/bin/etcd-dr"), "server", "--inventories", str(inv / "one"), "--data",
             str(tmp_path / "d"), "--no-receiver", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 2 and f"--port {port}: cannot listen" in out.stderr, out
    assert not (tmp_path / "d").exists()


def test_sigterm_while_starting_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM before the server is up (the Prefect server started, not yet answering or just
    answering): exit 130, the Prefect server stopped, no process left."""
    import os

    write_inventory(tmp_path / "inv" / "a", "a")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    p = subprocess.Popen(
        [str(REPO / ".venv/bin/etcd-dr"), "server", "--inventories", str(tmp_path / "inv"), "--data",
         str(tmp_path / "d"), "--no-receiver", "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while not descendants(p.pid) and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        tree = descendants(p.pid)
        assert tree, "no Prefect server started"
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 130
        time.sleep(0.5)
        assert not [x for x in tree if alive(x)], tree
    finally:
        if p.poll() is None:
            p.kill()


def test_the_prefect_server_asks_for_the_api_auth_when_given(tmp_path: Path) -> None:
    """--api-auth-file: the Prefect server answers 401 without it; the served runner and the
    receiver's events still work (they send it), so an alert still starts its run."""
    import httpx

    from tests.console.conftest import TOKEN

    (tmp_path / "auth").write_text("etcd-dr:s3cret-pass\n")
    c = start_console(
        tmp_path, {"alpha": {"automatic_recovery": True}}, "--api-auth-file", str(tmp_path / "auth")
    )
    try:
        r = httpx.post(f"{c.api}/deployments/filter", json={}, timeout=10)
        assert r.status_code == 401, r.text
        c.auth = ("etcd-dr", "s3cret-pass")
        assert "recover" in c.deployments()
        alert = {
            "status": "firing",
            "labels": {"alertname": "etcdNoLeader", "cluster": "alpha"},
            "fingerprint": "a",
        }
        note = {"version": "4", "status": "firing", "alerts": [alert]}
        r = httpx.post(
            f"{c.receiver}/alerts/alertmanager", json=note, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 200 and r.json()["incidents"], r.text
        t0 = time.monotonic()
        while not c.flow_runs("recover") and time.monotonic() - t0 < 60:
            time.sleep(0.5)
        assert len(c.flow_runs("recover")) == 1
        assert not any("s3cret-pass" in line for line in c.lines)
    finally:
        assert c.stop() == 0
