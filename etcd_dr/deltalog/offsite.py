"""Sealed segments copied off-site like the snapshots (etcd_dr.snapshots.offsite: a directory or S3,
each copy read back and hashed), to `<cluster>/deltalog/<segment>` beside them. What was copied is
`offsite.json` in the log dir (segment name -> the copy, replaced atomically); a segment without a
verified copy there is pending and tried again at the next seal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.deltalog.log import DeltaLog
from etcd_dr.errors import EtcdDrError
from etcd_dr.inventory import OffsiteSettings
from etcd_dr.localfs import write_json_atomic
from etcd_dr.snapshots import offsite as off
from etcd_dr.snapshots.record import OffsiteCopy

MANIFEST = "offsite.json"


@dataclass(frozen=True)
class SegmentFile:
    """A sealed segment as the off-site copy sees it (etcd_dr.snapshots.offsite.Shippable)."""

    cluster: str  # "<cluster>/deltalog": the copies land beside the cluster's snapshots
    path: Path
    sha256: str
    revision: int  # its last revision


def copies(log_dir: Path) -> dict[str, OffsiteCopy]:
    try:
        body = json.loads((Path(log_dir) / MANIFEST).read_text())
    except FileNotFoundError:
        return {}
    return {name: OffsiteCopy.from_json(c) for name, c in body.get("copies", {}).items()}


def ship_pending(
    log_dir: Path, cluster: str, settings: OffsiteSettings, env: Mapping[str, str] | None = None
) -> int:
    """Copy every sealed segment without a verified copy; returns how many are still pending.
    Raises OffsiteError (the first failure) after trying them all."""
    log_dir = Path(log_dir)
    done = copies(log_dir)
    first_error: EtcdDrError | None = None
    pending = 0
    for seg in DeltaLog(log_dir).segments():
        if seg.name in done and done[seg.name].verified:
            continue
        f = SegmentFile(f"{cluster}/deltalog", seg.path, _sha256(seg.path), seg.last)
        try:
            c = off.copy_offsite(f, settings, env)
        except EtcdDrError as e:
            first_error = first_error or e
            pending += 1
            continue
        done[seg.name] = c
        pending += 0 if c.verified else 1
        write_json_atomic(
            log_dir / MANIFEST, {"version": 1, "copies": {n: x.to_json() for n, x in sorted(done.items())}}
        )
    if first_error is not None:
        raise first_error
    return pending


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()
