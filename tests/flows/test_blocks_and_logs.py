"""Prefect side: the inventory block keeps keys secret and hands the core a usable Inventory; what a
flow logs is redacted before Prefect ships it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from blocks.inventory import ClusterInventory
from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.errors import InputError
from etcd_dr.executor import SSHExecutor
from etcd_dr.inventory import InMemoryFile


def _write_inventory(d: Path) -> tuple[Path, bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    (d / "id").write_bytes(key)
    (d / "known_hosts").write_text("10.9.0.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0000000000000000000000\n")
    ca = new_ca()
    client = issue_cert(ca, "etcd-dr", server=False)
    (d / "ca.pem").write_bytes(ca.cert_pem)
    (d / "client.pem").write_bytes(client.cert_pem)
    (d / "client-key.pem").write_bytes(client.key_pem)
    inv = {
        "cluster": "blk",
        "ssh": {"key_file": "id", "known_hosts": "known_hosts"},
        "etcd": {
            "runtime": "docker",
            "client": {"ca_cert": "ca.pem", "cert": "client.pem", "key": "client-key.pem"},
        },
        "hosts": [{"name": "master1", "address": "10.9.0.11", "roles": ["etcd", "controlplane"]}],
    }
    path = d / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path, key, client.key_pem


def test_inventory_block_holds_keys_in_memory_and_resolves_paths_beside_the_inventory(
    tmp_path: Path, tmp_path_factory, monkeypatch
) -> None:
    path, ssh_key, etcd_key = _write_inventory(tmp_path)
    text = path.read_text().replace("cluster: blk", "audit_log: audit.jsonl\ncluster: blk")
    path.write_text(text)
    block = ClusterInventory.from_inventory_file(path)
    assert block.base_dir == str(tmp_path)
    shown = repr(block) + block.model_dump_json()
    assert ssh_key.decode() not in shown and etcd_key.decode() not in shown
    elsewhere = tmp_path_factory.mktemp("worker-cwd")
    monkeypatch.chdir(elsewhere)  # a worker runs flows from wherever it was started
    before = set(Path(tempfile.gettempdir()).iterdir())
    with block.materialize() as inv:
        assert isinstance(inv.ssh.key_file, InMemoryFile) and bytes(inv.ssh.key_file) == ssh_key
        assert isinstance(inv.etcd.client.key, InMemoryFile) and bytes(inv.etcd.client.key) == etcd_key
        assert ssh_key.decode() not in repr(inv) and etcd_key.decode() not in repr(inv)
        assert set(Path(tempfile.gettempdir()).iterdir()) == before  # no credential file written
        assert inv.audit_log == tmp_path / "audit.jsonl"
        assert inv.state_path() == tmp_path and inv.snapshot_settings().dir == tmp_path / "snapshots"
        assert [h.name for h in inv.voters] == ["master1"]
        # the executor and the etcd client take the material as it is
        assert SSHExecutor(inv.voters[0], inv.ssh)._key() is not None
    assert list(elsewhere.iterdir()) == []


def test_a_block_without_base_dir_refuses_relative_state_paths(tmp_path: Path) -> None:
    path, _, _ = _write_inventory(tmp_path)
    block = ClusterInventory.from_inventory_file(path)
    block.base_dir = None
    block.inventory_yaml = "audit_log: audit.jsonl\n" + block.inventory_yaml
    why = r"^audit_log: 'audit.jsonl' is relative and the block has no base_dir"
    with pytest.raises(InputError, match=why), block.materialize():
        pass
    block.inventory_yaml = block.inventory_yaml.replace("audit.jsonl", str(tmp_path / "abs.jsonl"))
    with block.materialize() as inv:
        assert inv.state_path() == tmp_path


def test_a_block_is_refused_when_the_model_refuses_its_inventory(tmp_path: Path) -> None:
    path, _, _ = _write_inventory(tmp_path)
    good = ClusterInventory.from_inventory_file(path, ssh_key=False)  # key_file: the worker's, unchecked
    parts = {k: getattr(good, k) for k in ("base_dir", "ssh", "etcd_ca_cert", "etcd_cert", "etcd_key")}
    bad = good.inventory_yaml.replace("10.9.0.11", "10.9.0").replace("runtime: docker", "runtime: podman")
    with pytest.raises(ValidationError) as ei:
        ClusterInventory(inventory_yaml=bad, **parts)
    msg = str(ei.value)
    assert "hosts[0].address: '10.9.0' is not an IP address or host name" in msg
    assert "etcd.runtime: 'podman' is not a runtime; use one of docker, process" in msg
    assert "PRIVATE" not in msg  # the block's keys never in the message
    assert ClusterInventory(inventory_yaml=good.inventory_yaml, **parts).inventory_yaml == good.inventory_yaml


_HOLDER = """
import sys, time
from blocks.inventory import ClusterInventory
block = ClusterInventory.from_inventory_file(sys.argv[1])
with block.materialize() as inv:
    assert bytes(inv.ssh.key_file) == open(sys.argv[2], "rb").read()
    print("materialized", flush=True)
    time.sleep(60)
"""


def test_a_sigkilled_run_leaves_no_key_on_disk(tmp_path: Path, tmp_path_factory) -> None:
    """A process that materializes a block and is SIGKILLed: no key file anywhere it could write
    (its temp dir, its cwd, the inventory's directory beyond the inventory's own key files)."""
    invdir = tmp_path_factory.mktemp("inv")
    path, ssh_key, etcd_key = _write_inventory(invdir)
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(repo)}
    started = time.time() - 1  # a file the process wrote has a later mtime (1 s: coarse timestamps)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(invdir / "id")],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "materialized"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    originals = {invdir / "id", invdir / "client-key.pem"}
    # os.walk, not rglob: other processes (a lab being built) add and remove files in /tmp meanwhile
    files = (
        Path(d) / n
        for root in (tmp, cwd, invdir, Path(tempfile.gettempdir()))
        for d, _, ns in os.walk(root)
        for n in ns
    )
    for f in files:
        if f in originals or not f.is_file() or f.is_symlink():
            continue
        # only what changed since the process started: not the GBs of snapshots and labs in /tmp
        with contextlib.suppress(OSError):
            if f.stat().st_mtime < started:
                continue
            data = f.read_bytes()
            assert ssh_key not in data and etcd_key not in data, f
    assert not list(Path(tempfile.gettempdir()).glob("etcd-dr-cred-*"))


def test_the_server_hands_a_stored_ssh_key_to_any_caller(prefect_harness, tmp_path: Path) -> None:
    """What the README says about Prefect OSS: block documents with include_secrets=true return the
    SSH key to a caller with no credentials at all; without it the field is masked."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    path, ssh_key, _ = _write_inventory(tmp_path)
    block_id = ClusterInventory.from_inventory_file(path).save("exposure-test", overwrite=True)
    api = PREFECT_API_URL.value()
    with httpx.Client(timeout=10) as http:  # no Authorization header
        masked = http.get(f"{api}/block_documents/{block_id}").json()
        full = http.get(f"{api}/block_documents/{block_id}", params={"include_secrets": "true"}).json()
    body = ssh_key.decode().splitlines()[1]
    assert body not in json.dumps(masked)
    assert body in json.dumps(full)  # the private key, in clear
    # and the recommended way keeps it off the server
    ClusterInventory.from_inventory_file(path, ssh_key=False).save("exposure-test", overwrite=True)
    with httpx.Client(timeout=10) as http:
        full = http.get(f"{api}/block_documents/{block_id}", params={"include_secrets": "true"}).json()
    assert body not in json.dumps(full)


def test_flow_logs_are_redacted(prefect_harness) -> None:
    import asyncio

    from prefect import flow, get_run_logger
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from etcd_dr.audit import register_secret
    from flows.common import audited_run

    pem = issue_cert(new_ca(), "x").key_pem.decode()
    token = "tok-" + os.urandom(8).hex()
    register_secret(token)

    @flow
    def leaky() -> str:
        with audited_run() as run_id:
            get_run_logger().info("connecting with %s and key\n%s", token, pem)
            get_run_logger().warning("again: %s", token)
            return str(run_id)

    run_id = leaky()

    async def logs() -> list[str]:
        await APILogHandler.aflush()  # logs are shipped in the background
        async with get_client() as c:
            rows = await c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            assert await c.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            return [r.message for r in rows]

    text = "\n".join(asyncio.run(logs()))
    assert "connecting with ***" in text and "again: ***" in text
    assert token not in text
    body = pem.splitlines()[1]
    assert body not in text
