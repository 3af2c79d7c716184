"""`etcd-dr server` started for real (the command, as a subprocess) on free loopback ports, with
inventories whose hosts answer nothing (loopback addresses where nothing listens: SSH and etcd
refuse at once), and a thin REST reader of its Prefect API."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from etcd_dr.certs import issue_cert, new_ca

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-4f1c9a"  # a test's own token
CACHE = REPO / ".cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_inventory(d: Path, cluster: str, **extra: object) -> Path:
    d.mkdir(parents=True, exist_ok=True)
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
    port, ssh_port = free_port(), free_port()
    inv = {
        "cluster": cluster,
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
        **extra,
    }
    path = d / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


@dataclass
class Console:
    proc: subprocess.Popen
    data: Path
    api: str
    receiver: str
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    auth: tuple[str, str] | None = None  # the Prefect server's basic auth, when it asks for one

    def get(self, path: str) -> object:
        for _ in range(10):
            r = httpx.get(f"{self.api}{path}", timeout=10, auth=self.auth)
            if r.status_code != 503:
                break
            time.sleep(1)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict | None = None) -> object:
        for _ in range(10):  # SQLite under a loaded machine: Prefect answers 503 "database is locked"
            r = httpx.post(f"{self.api}{path}", json=body or {}, timeout=10, auth=self.auth)
            if r.status_code != 503:
                break
            time.sleep(1)
        r.raise_for_status()
        return r.json()

    def post_raw(self, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.api}{path}", json=body or {}, timeout=10, auth=self.auth)

    def deployments(self) -> dict[str, dict]:
        return {d["name"]: d for d in self.post("/deployments/filter")}  # type: ignore[union-attr]

    def flow_runs(self, deployment: str) -> list[dict]:
        dep = self.deployments()[deployment]
        return self.post(  # type: ignore[return-value]
            "/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}, "limit": 200}
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 180) -> int:
        # A clean stop cancels runs in flight (Prefect gives each 30 s to end), then stops the Prefect
        # server: 4-6 s with a run waiting for its slot on a quiet machine; over 60 s in one CI run
        # with two labs on the other worker, when such a run still waited out Prefect's 30 s.
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"etcd-dr server still running {timeout:g} s after signal {sig}; its last lines:\n"
                + "\n".join(self.lines[-30:])
            ) from None
        if self.pump is not None:
            self.pump.join(10)  # every line it printed, read
        return rc


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.add(k)
            todo.append(k)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_console(tmp: Path, clusters: dict[str, dict] | Path, *extra: str, ready_s: float = 150) -> Console:
    """`etcd-dr server` on free ports: `clusters` is an inventories directory, or the clusters to
    write one for (name -> extra inventory fields)."""
    if isinstance(clusters, Path):
        inv = clusters
    else:
        inv = tmp / "inventories"
        for name, fields in clusters.items():
            write_inventory(inv / name, name, **fields)
    data = tmp / "data"
    data.mkdir()
    # a migrated database, when the flow tests made one (tests/conftest.py): saves the migrations
    template = next(iter(sorted(CACHE.glob("prefect-template-*.db"))), None)
    if template is not None:
        shutil.copyfile(template, data / "prefect.db")
    port, rport = free_port(), free_port()
    env = {**os.environ, "ETCD_DR_ALERT_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    for k in [k for k in env if k.startswith("PREFECT_")]:
        del env[k]  # the command sets its own; a test session's settings must not leak in
    argv = [str(REPO / ".venv/bin/etcd-dr"), "server", "--inventories", str(inv), "--data", str(data),
            "--port", str(port), "--receiver-port", str(rport), *extra]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    c = Console(proc, data, f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{rport}")
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            c.lines.append(line.rstrip())
            q.put(line)
        q.put(None)

    c.pump = threading.Thread(target=pump, daemon=True)
    c.pump.start()
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError("etcd-dr server exited:\n" + "\n".join(c.lines))
        if line.startswith("UI: "):
            return c
    c.stop(signal.SIGKILL)
    raise AssertionError("etcd-dr server not ready:\n" + "\n".join(c.lines))


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    """One server for a module: alpha (automatic recovery, rehearsals allowed) and beta."""
    c = start_console(
        tmp_path_factory.mktemp("console"),
        {"alpha": {"automatic_recovery": True, "rehearsal": True}, "beta": {}},
    )
    try:
        yield c
    finally:
        c.stop()
