"""The README's recipe for the recover deployment, run as written: scripts/prefect-recover.sh from
a clean temporary directory starts a Prefect server on loopback, the work pool, the block, `prefect
deploy`, a worker and a plan-only run against an inventory whose hosts answer nothing. The run must
reach a final state that is not Crashed (without ETCD_DR_HOME every run crashed: FileNotFoundError
for flows/recover.py), and its audit records land beside the inventory, not in the worker's cwd."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from etcd_dr.certs import issue_cert, new_ca

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prefect-recover.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inventory(d: Path) -> Path:
    """Three voters on loopback addresses where nothing listens (SSH and etcd refuse at once)."""
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    (d / "id").write_bytes(key)
    os.chmod(d / "id", 0o600)
    (d / "known_hosts").write_text("")
    ca = new_ca()
    client = issue_cert(ca, "etcd-dr", server=False)
    (d / "ca.pem").write_bytes(ca.cert_pem)
    (d / "client.pem").write_bytes(client.cert_pem)
    (d / "client-key.pem").write_bytes(client.key_pem)
    port, ssh_port = _free_port(), _free_port()
    inv = {
        "cluster": "recipe",
        "audit_log": "audit.jsonl",
        "ssh": {"key_file": "id", "known_hosts": "known_hosts", "port": ssh_port, "connect_timeout": 1},
        "etcd": {
            "runtime": "docker",
            "client_port": port,
            "peer_port": port + 1 if port < 65535 else port - 1,
            "client": {"ca_cert": "ca.pem", "cert": "client.pem", "key": "client-key.pem"},
            "dial_timeout": 1,
            "request_timeout": 2,
        },
        "hosts": [
            {"name": f"master{i}", "address": f"127.0.0.{10 + i}", "roles": ["etcd", "controlplane"]}
            for i in (1, 2, 3)
        ],
    }
    path = d / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _stop(pidfile: Path) -> None:
    """Stop a process group the script started (setsid: the PID leads its own group)."""
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        t = time.monotonic() + wait
        while time.monotonic() < t:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_readme_shows_the_script() -> None:
    """The README's commands are the script's: every command line of it appears there verbatim."""
    readme = (REPO / "README.md").read_text()
    lines = [ln for ln in SCRIPT.read_text().splitlines() if ln.strip() and not ln.startswith("#!")]
    missing = [ln for ln in lines if ln not in readme]
    assert not missing, missing


def test_recipe_runs_the_recover_deployment(tmp_path: Path) -> None:
    work = tmp_path / "clean"  # a clean directory: nothing of the repository's
    work.mkdir()
    invdir = tmp_path / "inv"
    invdir.mkdir()
    inv = _inventory(invdir)
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ETCD_DR_", "VIRTUAL_ENV"))}
    env.update(
        PREFECT_HOME=str(home),  # nothing of the user's profile
        INVENTORY=str(inv),
        BLOCK="recipe-test",
        PORT=str(port),
        PREFECT_WORKER_QUERY_SECONDS="2",  # test only: the worker looks for runs every 2 s, not 10
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    import prefect  # the template tests/conftest.py makes is per Prefect version

    template = REPO / ".cache" / f"prefect-template-{prefect.__version__}.db"
    if template.exists():  # test only: a migrated database starts in seconds, a fresh one in ~13 s
        shutil.copyfile(template, home / "prefect.db")
    run_dir = work / "etcd-dr-prefect"
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT)], cwd=work, env=env, capture_output=True, text=True, timeout=420
        )
        took = time.monotonic() - t0
        out = proc.stdout + proc.stderr
        api = f"http://127.0.0.1:{port}/api"
        with httpx.Client(timeout=10) as http:
            runs = http.post(f"{api}/flow_runs/filter", json={}).json()
        assert len(runs) == 1, out[-3000:]
        state = runs[0]["state"]
        print(f"recipe: {took:.1f} s, run {state['type']}: {state['message']}")
        assert state["type"] in ("COMPLETED", "FAILED"), (state, out[-3000:])  # final, and not CRASHED
        # the core ran and said why, and its audit log is the CLI's (beside the inventory)
        audit = [json.loads(x) for x in (invdir / "audit.jsonl").read_text().splitlines()]
        rec = [a for a in audit if a["action"] == "recover" and a.get("flow_run_id") == runs[0]["id"]]
        assert rec and rec[-1]["reason"], audit[-3:]
        if state["type"] == "FAILED":
            assert rec[-1]["reason"] in state["message"]
        assert not (work / "audit.jsonl").exists()
    finally:
        _stop(run_dir / "worker.pid")
        _stop(run_dir / "server.pid")
