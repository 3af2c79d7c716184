"""Take a snapshot: stream it over gRPC from the chosen member into the snapshot directory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcd_dr.etcd.client import EtcdClient, SnapshotResult
from etcd_dr.snapshots.progress import Progress
from etcd_dr.snapshots.source import SourceChoice


@dataclass(frozen=True)
class Taken:
    id: str
    cluster: str
    source: SourceChoice
    result: SnapshotResult
    created: datetime
    revision: int
    revision_source: str  # "stream" | "bracket" | "snapshot-status"

    @property
    def path(self) -> Path:
        return self.result.path


def snapshot_id(cluster: str, member: str, created: datetime) -> str:
    return f"{cluster}-{created.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{member}"


def take_snapshot(
    client: EtcdClient,
    source: SourceChoice,
    dest_dir: Path,
    cluster: str,
    *,
    db_size_hint: int | None = None,
    show_progress: bool = True,
    now: datetime | None = None,
) -> Taken:
    """Stream `source`'s db into `dest_dir/<id>.db`. The client writes `<file>.part`, fsyncs and
    renames, so a crash leaves no half snapshot under the final name; memory stays flat."""
    created = now or datetime.now(UTC)
    sid = snapshot_id(cluster, source.name, created)
    dest_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(f"snapshot {source.name}", db_size_hint if show_progress else None)
    try:
        result = client.snapshot(source.endpoint, dest_dir / f"{sid}.db", progress=bar)
    finally:
        bar.done()
    revision, how = _exact_revision(result, source.version)
    return Taken(sid, cluster, source, result, created, revision, how)


def _exact_revision(result: SnapshotResult, version: str) -> tuple[int, str]:
    if result.revision:
        return result.revision, "stream"
    lo, hi = result.revision_bracket
    if lo == hi:
        return lo, "bracket"
    # Writes landed while streaming, so the member's revision before and after only bracket the
    # snapshot's. etcd takes the snapshot inside one bbolt read transaction, so the file holds exactly
    # the store as of one revision: `snapshot status` reads it back from the file itself (the highest
    # revision in its key bucket). It must fall in the bracket; verify() checks that agreement too.
    from etcd_dr.snapshots.etcdtool import binaries_for, snapshot_status

    st = snapshot_status(binaries_for(version), result.path)
    return st.store_revision, "snapshot-status"
