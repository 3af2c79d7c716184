"""Verified etcd snapshots: take (from the healthiest member), verify (hash, etcd's own status, trial
restore + HashKV against the source member), catalog, retention, off-site copies.

    from etcd_dr.snapshots import Catalog, SnapshotRecord, Verdict
    newest = Catalog(inv.snapshot_settings().dir).newest(inv.cluster)   # verified only by default
"""

from etcd_dr.snapshots.catalog import Catalog
from etcd_dr.snapshots.record import OffsiteCopy, SnapshotRecord, Verdict

__all__ = ["Catalog", "OffsiteCopy", "SnapshotRecord", "Verdict"]
