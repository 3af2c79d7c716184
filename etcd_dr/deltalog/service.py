"""The delta log on an inventory: where it lives and the watcher over the inventory's members, as
`etcd-dr backup stream` runs it.

The log lives in `<snapshots.dir>/deltalog/` on this machine (beside the catalog it starts from);
off-site copies go where the snapshots' go (`snapshots.offsite`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etcd_dr.audit import AuditLog
from etcd_dr.deltalog.log import DeltaLog
from etcd_dr.deltalog.offsite import ship_pending
from etcd_dr.deltalog.stream import (
    Streamer,
    StreamResult,
    StreamSettings,
    StreamStatus,
    read_gap,
    read_status,
)
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


@dataclass(frozen=True)
class LogSummary:
    """What `snapshot list` shows of the delta log: the runs it holds, the watcher's state, a gap."""

    dir: Path
    spans: tuple[tuple[int, int], ...]
    status: StreamStatus | None
    gap: dict[str, Any] | None

    def rolls_forward_to(self, revision: int) -> int | None:
        """The last revision a snapshot at `revision` can be brought to with the log (None: the log
        does not continue it)."""
        return next((b for a, b in self.spans if a <= revision + 1 and revision <= b), None)

    def line(self) -> str:
        held = ", ".join(f"{a}..{b}" for a, b in self.spans) or "nothing"
        state = f"; watcher {self.status.state} ({self.status.reason})" if self.status else ""
        gap = ""
        if self.gap:
            gap = f"; GAP after revision {self.gap.get('after_revision')}: {self.gap.get('reason')}"
        return f"delta log {self.dir}: revisions {held}{state}{gap}"

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "spans": [list(s) for s in self.spans],
            "status": self.status.to_json() if self.status else None,
            "gap": self.gap,
        }


def summary(inv: Inventory) -> LogSummary | None:
    """None where no delta log was ever written for the inventory."""
    d = log_dir_for(inv)
    if not d.is_dir():
        return None
    return LogSummary(d, tuple(DeltaLog(d).spans()), read_status(d), read_gap(d))
