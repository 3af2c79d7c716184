"""The lab's alert chain without the lab: Debian's promtool and amtool accept the configs
etcd_dr.lab.alerting writes; a real Prometheus scrapes three members that do not answer (an
inventory of loopback addresses where nothing listens), the mixin's etcdInsufficientMembers fires,
and a real Alertmanager posts it, with the bearer token read from its file, to a webhook here; stop
ends both by PID."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from etcd_dr.errors import InputError
from etcd_dr.inventory import load_inventory
from etcd_dr.lab import alerting
from tests.console.conftest import alive, write_inventory

pytestmark = pytest.mark.skipif(
    not Path(alerting.PROMETHEUS).exists(), reason="Debian's prometheus not installed (scripts/install.sh)"
)

TOKEN = "alerting-test-token-7d2e"


def test_promtool_and_amtool_accept_the_configs(tmp_path: Path) -> None:
    inv = load_inventory(write_inventory(tmp_path / "inv", "alpha"))
    (tmp_path / "token").write_text(TOKEN)
    prom, am = alerting.write_configs(
        inv, tmp_path, alertmanager_port=9, receiver="http://127.0.0.1:9095", token_file=tmp_path / "token"
    )
    r = subprocess.run(["promtool", "check", "config", str(prom)], capture_output=True, text=True)
    assert r.returncode == 0 and "3 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["amtool", "check-config", str(am)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in (prom, am, tmp_path / "etcd-rules.yml"):
        assert TOKEN not in f.read_text()  # the token stays in its file
    rules = (tmp_path / "etcd-rules.yml").read_text()
    assert 'sum(up{job=~".*etcd.*"} == bool 1) without (instance) < ((count(up{job=~".*etcd.*"})' in rules


def test_the_metrics_rules_of_the_dr_itself_load() -> None:
    rules = Path(__file__).resolve().parents[2] / "deployments" / "etcd-dr-alerts.yml"
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_a_bad_receiver_url_is_refused_before_anything_starts(tmp_path: Path) -> None:
    inv = load_inventory(write_inventory(tmp_path / "inv", "alpha"))
    with pytest.raises(InputError, match="--receiver 'ftp://x': give the receiver's base URL"):
        alerting.start(inv, tmp_path / "a", receiver="ftp://x")
    assert not (tmp_path / "a").exists()


def test_insufficient_members_reaches_the_webhook_with_the_token(tmp_path: Path) -> None:
    got: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers["Content-Length"])
            got.append((self.headers.get("Authorization", ""), json.loads(self.rfile.read(n))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    inv = load_inventory(write_inventory(tmp_path / "inv", "alpha"))
    (tmp_path / "token").write_text(TOKEN + "\n")
    d = tmp_path / "alerting"
    t0 = time.monotonic()
    a = alerting.start(inv, d, receiver=f"http://127.0.0.1:{srv.server_port}", token_file=tmp_path / "token")
    started = time.monotonic() - t0
    try:
        for pid in (a.prometheus_pid, a.alertmanager_pid):
            assert alive(pid)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert TOKEN.encode() not in cmdline
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not got:
            time.sleep(0.2)
        assert got, (d / "alertmanager.log").read_text()[-2000:]
        auth, body = got[0]
        assert auth == f"Bearer {TOKEN}"
        assert body["version"] == "4" and body["status"] == "firing"
        names = {x["labels"]["alertname"] for x in body["alerts"]}
        assert "etcdInsufficientMembers" in names, body
        assert {x["labels"]["cluster"] for x in body["alerts"]} == {"alpha"}
        targets = httpx.get(f"{a.prometheus_url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert sorted(t["scrapeUrl"] for t in targets) == sorted(
            f"https://{h.address}:{inv.etcd.client_port}/metrics" for h in inv.voters
        )
        print(f"\nstarted in {started:.1f} s; webhook after {time.monotonic() - t0:.1f} s: {sorted(names)}")
        for f in d.glob("*.log"):
            assert TOKEN not in f.read_text()
    finally:
        pids = alerting.stop(d)
        srv.shutdown()
    assert sorted(pids) == sorted([a.prometheus_pid, a.alertmanager_pid])
    assert not alive(a.prometheus_pid) and not alive(a.alertmanager_pid)
    assert alerting.running(d) is None and alerting.stop(d) == []
