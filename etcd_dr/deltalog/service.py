"""The delta log on an inventory: where it lives and the watcher over the inventory's members, as
`etcd-dr backup stream` runs it.

The log lives in `<snapshots.dir>/deltalog/` on this machine (beside the catalog it starts from);
off-site copies go where the snapshots' go (`snapshots.offsite`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcd_dr.audit import AuditLog
from etcd_dr.deltalog.log import DeltaLog
from etcd_dr.deltalog.offsite import ship_pending
from etcd_dr.deltalog.replay import (
    DEFAULT_LEASE_TTL_S,
    ReplayError,
    RollForward,
    check_against_log,
    choose_target,
    replay,
    scratch_parent,
)
from etcd_dr.deltalog.stream import (
    Streamer,
    StreamResult,
    StreamSettings,
    StreamStatus,
    read_gap,
    read_status,
)
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.localfs import write_json_atomic
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

    @property
    def log(self) -> DeltaLog:
        return DeltaLog(self.dir)

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


def _source(inv: Inventory, snapshot_id: str | None, to_revision: int | None, to_time: float | None) -> Any:
    """The snapshot to roll forward: the one named, else the newest verified one at or before the
    target (by revision, then by when it was taken)."""
    cat = Catalog(inv.snapshot_settings().dir)
    if snapshot_id is not None:
        rec = cat.get(snapshot_id)
        if not rec.verified:
            raise InputError(
                f"snapshot {snapshot_id} is {rec.verdict}: only a verified snapshot is rolled forward"
            )
        return rec
    recs = [r for r in cat.records(inv.cluster) if r.verified]
    if to_revision is not None:
        recs = [r for r in recs if r.revision <= to_revision]
    if to_time is not None:
        recs = [r for r in recs if r.created.timestamp() <= to_time]
    if not recs:
        raise InputError(
            f"no verified snapshot of cluster {inv.cluster} in {cat.path} at or before the point asked "
            "for: take one (etcd-dr snapshot); the delta log starts after a snapshot"
        )
    return max(recs, key=lambda r: (r.revision, r.created))


def roll_forward(
    inv: Inventory,
    *,
    snapshot_id: str | None = None,
    to_revision: int | None = None,
    to_time: float | None = None,
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
) -> RollForward:
    """A verified snapshot brought forward through the delta log to a point, verified, cataloged."""
    from etcd_dr.snapshots.etcdtool import binaries_for
    from etcd_dr.snapshots.record import SnapshotRecord, Verdict
    from etcd_dr.snapshots.service import catalog_add
    from etcd_dr.snapshots.trial import served_db
    from etcd_dr.snapshots.verify import Expected, verify_snapshot

    t0 = time.monotonic()
    src = _source(inv, snapshot_id, to_revision, to_time)
    log = DeltaLog(log_dir_for(inv))
    target = choose_target(log, src.revision, to_revision=to_revision, to_time=to_time)
    if target.revision == src.revision:
        raise InputError(
            f"nothing to roll forward: {target.reason}; snapshot {src.id} (revision {src.revision}) is "
            "that point already: restore it as it is"
        )
    snap_dir = inv.snapshot_settings().dir
    at = datetime.fromtimestamp(target.at or time.time(), UTC)
    new_id = f"{inv.cluster}-{at:%Y%m%dT%H%M%S%fZ}-deltalog-{target.revision}"
    dest = snap_dir / f"{new_id}.db"
    if dest.exists():  # the same point, rolled forward before: never written over
        raise InputError(
            f"{dest} exists: revision {target.revision} was rolled forward before (catalog id {new_id}); "
            "restore that one, or move it aside to make it again"
        )
    bins = binaries_for(src.version)
    scratch = scratch_parent(Path(src.path).stat().st_size, snap_dir)
    with served_db(bins, Path(src.path), scratch, scratch_prefix=".rollforward-") as (c, ep, _):
        done = replay(c, log.records(src.revision + 1, target.revision), lease_ttl_s=lease_ttl_s, endpoint=ep)
        check = check_against_log(c, log, src.revision, target.revision)
        h = c.hash_kv(ep, target.revision, timeout=600.0)
        taken = c.snapshot(ep, dest)
    v = verify_snapshot(
        dest,
        version=src.version,
        expected=Expected(
            member="the replayed store",
            sha256=taken.sha256,
            revision=target.revision,
            kv_hash=h.hash,
            compact_revision=h.compact_revision,
        ),
    )
    if v.verdict is not Verdict.VERIFIED:
        raise ReplayError(
            f"the rolled-forward snapshot {dest} did not verify ({v.verdict}: {v.reason}); not cataloged"
        )
    spans = f"{src.revision + 1}..{target.revision}"
    record = catalog_add(
        inv,
        SnapshotRecord(
            id=new_id,
            cluster=inv.cluster,
            member="deltalog",
            endpoint="",
            revision=target.revision,
            raft_index=src.raft_index,  # unknown for a replayed store: the source's, a lower bound
            size=taken.size,
            sha256=taken.sha256,
            created=at,  # when its last revision was received: the catalog sorts by the data held
            verified=True,
            verdict=Verdict.VERIFIED,
            reason=f"rolled forward from {src.id} to {target.reason}; {check}; {v.reason}",
            path=dest.absolute(),
            version=src.version,
            revision_source="deltalog",
            source_reason=f"snapshot {src.id} (revision {src.revision}) + delta log revisions {spans} "
            f"({done.records} transactions, {done.events} events)",
            kv_hash=h.hash,
            compact_revision=h.compact_revision,
        ),
    )
    return RollForward(src.id, src.revision, target, done, check, dest, record, time.monotonic() - t0)


@dataclass(frozen=True)
class Pruned:
    segment: str
    reason: str
    ok: bool
    error: str = ""


def prune_segments(inv: Inventory, *, dry_run: bool = False) -> list[Pruned]:
    """Retention of the delta log, with the snapshots': a sealed segment whose revisions all lie
    at or before the oldest verified snapshot kept rolls nothing forward any more; it goes (file,
    off-site copy, manifest entry), each deletion an audit record. Run after the snapshots' prune."""
    from etcd_dr.deltalog.offsite import MANIFEST, copies
    from etcd_dr.snapshots.offsite import delete_copy

    d = log_dir_for(inv)
    kept = [r for r in Catalog(inv.snapshot_settings().dir).records(inv.cluster) if r.verified]
    if not kept or not d.is_dir():
        return []
    oldest = min(kept, key=lambda r: r.revision)
    made = copies(d)
    out: list[Pruned] = []
    audit = audit_log_for(inv)
    for seg in DeltaLog(d).segments():
        if seg.last > oldest.revision:
            continue
        why = (
            f"revisions {seg.first}..{seg.last}, all at or before the oldest verified snapshot kept, "
            f"{oldest.id} (revision {oldest.revision})"
        )
        if dry_run:
            out.append(Pruned(seg.name, why, True))
            continue
        try:
            if seg.name in made:
                delete_copy(made[seg.name], inv.snapshot_settings().offsite)
                del made[seg.name]
                body = {n: c.to_json() for n, c in sorted(made.items())}
                write_json_atomic(d / MANIFEST, {"version": 1, "copies": body})
            seg.path.unlink(missing_ok=True)
        except (OSError, EtcdDrError) as e:
            err = getattr(e, "strerror", None) or str(e)
            out.append(Pruned(seg.name, why, False, err))
            if audit is not None:
                audit.event(host=LOCAL, action="deltalog-delete", outcome="failed", reason=f"{why}; {err}")
            continue
        out.append(Pruned(seg.name, why, True))
        if audit is not None:
            audit.event(host=LOCAL, action="deltalog-delete", outcome="ok", reason=why, segment=seg.name)
    return out
