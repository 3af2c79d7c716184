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
