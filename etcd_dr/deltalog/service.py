"""The delta log on an inventory: where it lives and the watcher over the inventory's members, as
`etcd-dr backup stream` runs it.

The log lives in `<snapshots.dir>/deltalog/` on this machine (beside the catalog it starts from);
off-site copies go where the snapshots' go (`snapshots.offsite`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from etcd_dr.audit import AuditLog
from etcd_dr.deltalog.offsite import ship_pending
from etcd_dr.deltalog.stream import Streamer, StreamResult, StreamSettings
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.snapshots.catalog import Catalog
from etcd_dr.state import client_for

LOCAL = "localhost"  # the audit host of what happens on this machine


def log_dir_for(inv: Inventory) -> Path:
    return inv.snapshot_settings().dir / "deltalog"


def newest_snapshot_revision(inv: Inventory) -> int | None:
    rec = Catalog(inv.snapshot_settings().dir).newest(inv.cluster)
    return rec.revision if rec is not None else None


def stream_cluster(
    inv: Inventory,
    *,
    settings: StreamSettings | None = None,
    stop: threading.Event | None = None,
    until_revision: int | None = None,
    max_seconds: float | None = None,
    offsite: bool = True,
) -> StreamResult:
    """Run the watcher until stopped (or a limit): voters first, then learners."""
    d = log_dir_for(inv)
    off = inv.snapshot_settings().offsite if offsite else None
    audit: AuditLog | None = audit_log_for(inv)

    def record(**kw: object) -> None:
        if audit is not None:
            audit.event(host=LOCAL, **kw)  # type: ignore[arg-type]

    hosts = [*inv.voters, *(h for h in inv.etcd_hosts if not h.is_voter)]
    endpoints = [inv.client_url(h) for h in hosts]
    client = client_for(inv, endpoints)
    try:
        streamer = Streamer(
            client,
            endpoints,
            d,
            inv.cluster,
            snapshot_revision=lambda: newest_snapshot_revision(inv),
            ship=(lambda: ship_pending(d, inv.cluster, off)) if off is not None else None,
            settings=settings or StreamSettings(),
            stop=stop,
            audit=record,
        )
        result = streamer.run(until_revision=until_revision, max_seconds=max_seconds)
    finally:
        client.close()
    record(
        action="deltalog-stream",
        outcome="ok" if result.ok else "failed",
        reason=result.reason,
        start_revision=result.start_revision,
        last_revision=result.last_revision,
        records=result.records,
    )
    return result
