"""Prefect side: the inventory block keeps keys secret and hands the core a usable Inventory; what a
flow logs is redacted before Prefect ships it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from blocks.inventory import ClusterInventory
from etcd_dr.certs import issue_cert, new_ca


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


def test_inventory_block_materializes_private_files_and_hides_keys(tmp_path: Path) -> None:
    path, ssh_key, etcd_key = _write_inventory(tmp_path)
    block = ClusterInventory.from_inventory_file(path)
    shown = repr(block) + block.model_dump_json()
    assert ssh_key.decode() not in shown and etcd_key.decode() not in shown
    with block.materialize() as inv:
        d = inv.ssh.key_file.parent
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        for f in (inv.ssh.key_file, inv.etcd.client.key, inv.etcd.client.cert):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert inv.ssh.key_file.read_bytes() == ssh_key
        assert inv.etcd.client.key.read_bytes() == etcd_key
        assert [h.name for h in inv.voters] == ["master1"]
    assert not d.exists()


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
