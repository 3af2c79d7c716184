"""The DR's own metrics: a cluster's catalog and last rehearsal, the runs the Prefect server holds,
rendered as Prometheus text; and the alert rules in deployments/ speak only of metrics that exist."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import yaml

from console.clusters import load_clusters
from console.metrics import HELP, cluster_samples, record_rehearsal, render, run_samples
from etcd_dr.inventory import load_inventory
from etcd_dr.snapshots.record import SnapshotRecord, Verdict
from etcd_dr.snapshots.service import catalog_for
from tests.unit.inventory_sample import VALID, write_invdir

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)


def _record(inv_cluster: str, created: datetime, verified: bool, rev: int) -> SnapshotRecord:
    return SnapshotRecord(
        id=f"{inv_cluster}-{created:%Y%m%dT%H%M%S}-m1", cluster=inv_cluster, member="master1",
        endpoint="https://x:2379", revision=rev, raft_index=rev, size=10, sha256="0" * 64, created=created,
        verified=verified, verdict=Verdict.VERIFIED if verified else Verdict.UNVERIFIED, reason="r",
        path=Path("/x.db"),
    )  # fmt: skip


def test_catalog_and_rehearsal_per_cluster(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    write_invdir(tmp_path / "prod")
    (tmp_path / "prod" / "inventory.yaml").write_text(VALID.replace("cluster: lab", "cluster: prod"))
    cl = load_clusters(tmp_path)["prod"]
    text = render(cluster_samples(cl, NOW.timestamp()))
    assert 'etcd_dr_snapshot_verified{cluster="prod"} 0' in text
    assert "age_seconds" not in text and "rehearsal" not in text  # unknown: absent, not zero

    inv = load_inventory(cl.path)
    cat = catalog_for(inv)
    cat.add(_record("prod", NOW - timedelta(hours=7), True, 100))
    cat.add(_record("prod", NOW - timedelta(hours=1), False, 120))  # newer, not verified: not counted
    record_rehearsal(inv, True, {"scenario": "masters-lost", "rto_s": 12.2, "rpo_writes": 0})
    text = render(cluster_samples(cl, NOW.timestamp()))
    assert 'etcd_dr_snapshot_verified{cluster="prod"} 1' in text
    assert 'etcd_dr_snapshot_verified_age_seconds{cluster="prod"} 25200' in text
    assert 'etcd_dr_snapshot_verified_revision{cluster="prod"} 100' in text
    assert (
        'etcd_dr_rehearsal_ok{cluster="prod"} 1' in text
        and 'etcd_dr_rehearsal_rto_seconds{cluster="prod"} 12.2' in text
    )
    assert "# TYPE etcd_dr_rehearsal_rpo_writes gauge" in text
    record_rehearsal(inv, False, None)
    assert 'etcd_dr_rehearsal_ok{cluster="prod"} 0' in render(cluster_samples(cl, NOW.timestamp()))


def _run(cluster: str, state: str, end: datetime) -> SimpleNamespace:
    st = SimpleNamespace(
        type=SimpleNamespace(value=state.upper()),
        is_final=lambda: True,
        is_failed=lambda: state == "failed",
        is_crashed=lambda: state == "crashed",
        is_completed=lambda: state == "completed",
    )
    return SimpleNamespace(parameters={"cluster": cluster}, state=st, end_time=end)


def test_readiness_and_recoveries_from_the_runs() -> None:
    checks = [_run("a", "failed", NOW - timedelta(hours=2)), _run("a", "completed", NOW - timedelta(hours=1)),
              _run("b", "failed", NOW), _run("zz", "failed", NOW)]  # fmt: skip
    recovers = [_run("a", "completed", NOW), _run("a", "cancelled", NOW), _run("a", "cancelled", NOW)]
    text = render(run_samples(["a", "b"], checks, recovers))
    assert 'etcd_dr_readiness_ok{cluster="a"} 1' in text and 'etcd_dr_readiness_ok{cluster="b"} 0' in text
    assert 'etcd_dr_readiness_failures{cluster="a"} 1' in text and "zz" not in text
    assert 'etcd_dr_recoveries{cluster="a",state="cancelled"} 2' in text


def test_the_alert_rules_use_metrics_that_exist() -> None:
    rules = yaml.safe_load((REPO / "deployments/etcd-dr-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\b(etcd_dr_[a-z_]+)", e)}
    assert used and used <= set(HELP), used - set(HELP)
