"""The snapshot flow on a real Prefect server (prefect_harness) and a real etcd: the record is
verified and cataloged, the artifact carries it, the audit records carry the flow run id."""

from __future__ import annotations

import asyncio
import json

import pytest

from etcd_dr.snapshots import Catalog
from flows.snapshot import snapshot_flow
from tests.snapshots.conftest import Env

pytestmark = pytest.mark.etcd


def test_snapshot_flow(env: Env, prefect_harness) -> None:
    if env.cluster.bins.major_minor != "3.5":
        pytest.skip("one etcd line is enough for the flow wiring")
    with env.cluster.client() as c:
        c.put("/flow/k", "v")
    out = snapshot_flow(inventory_path=str(env.inventory_path))
    assert out["verdict"] == "verified", out["reason"]
    assert Catalog(env.snapdir).newest("loop").id == out["id"]

    from prefect.client.orchestration import get_client

    async def artifact() -> str:
        async with get_client() as client:
            arts = await client.read_artifacts()
            return next(a for a in arts if a.key == "etcd-snapshot-loop").data

    md = asyncio.run(artifact())
    assert out["id"] in md and "**verified**" in md
    audit = [json.loads(x) for x in (env.dir / "audit.jsonl").read_text().splitlines()]
    takes = [x for x in audit if x["action"] == "snapshot-take"]
    assert takes and takes[-1]["flow_run_id"]


def test_flows_from_another_cwd_share_the_clis_state(
    env: Env, prefect_harness, tmp_path_factory, monkeypatch
) -> None:
    """A worker runs flows from its own directory: with a block, the audit log, the snapshot catalog
    and the recovery journal are still the ones the CLI finds beside the inventory file."""
    import subprocess
    import sys

    import yaml

    from blocks.inventory import ClusterInventory
    from etcd_dr.inventory import load_inventory
    from etcd_dr.recovery.run import journal_path
    from flows.status import status_flow

    if env.cluster.bins.major_minor != "3.5":
        pytest.skip("one etcd line is enough for the flow wiring")
    data = yaml.safe_load(env.inventory_path.read_text())
    del data["snapshots"]  # the default catalog: snapshots/ in the state dir
    env.inventory_path.write_text(yaml.safe_dump(data))
    ClusterInventory.from_inventory_file(env.inventory_path).save("cwd-test", overwrite=True)
    worker_cwd = tmp_path_factory.mktemp("worker-cwd")
    monkeypatch.chdir(worker_cwd)

    out = snapshot_flow(inventory_block="cwd-test", prune=False)
    status_flow(inventory_block="cwd-test", check_ssh=False)

    assert out["verdict"] == "verified", out["reason"]
    assert list(worker_cwd.iterdir()) == []  # nothing in the worker's directory
    cli = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "snapshot", "list", "-i", str(env.inventory_path), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("cli-cwd"),
        check=True,
    )
    assert out["id"] in cli.stdout  # the CLI sees the flow's snapshot (recover --plan would too)
    assert Catalog(env.dir / "snapshots").newest("loop").id == out["id"]
    audit = [json.loads(x) for x in (env.dir / "audit.jsonl").read_text().splitlines()]
    actions = {x["action"] for x in audit if x.get("flow_run_id")}
    assert "snapshot-take" in actions
    with ClusterInventory.load("cwd-test").materialize() as inv:
        cli_journal = journal_path(load_inventory(env.inventory_path))
        assert journal_path(inv) == cli_journal == env.dir / "recover-loop.json"


def test_backup_stream_flow_logs_every_revision_after_the_snapshot(env: Env, prefect_harness) -> None:
    from etcd_dr.deltalog import DeltaLog
    from etcd_dr.deltalog.service import log_dir_for
    from flows.backup_stream import backup_stream_flow

    if env.cluster.bins.major_minor != "3.5":
        pytest.skip("one etcd line is enough for the flow wiring")
    snap = snapshot_flow(inventory_path=str(env.inventory_path))
    with env.cluster.client() as c:
        end = 0
        for i in range(5):
            end = c.put(f"/flow/s{i}", "v").revision
    out = backup_stream_flow(inventory_path=str(env.inventory_path), until_revision=end, max_seconds=30)
    assert out["state"] == "stopped" and out["start_revision"] == snap["revision"] + 1
    log = DeltaLog(log_dir_for(env.inv))
    assert [r.revision for r in log.records(snap["revision"] + 1)] == list(
        range(snap["revision"] + 1, end + 1)
    )
