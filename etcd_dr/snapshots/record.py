"""What the catalog stores about one snapshot: a frozen record, JSON in and out."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class Verdict(enum.StrEnum):
    """A snapshot's verification outcome. UNVERIFIED is not CORRUPT: it means a check could not be
    made (member unreachable or compacted past the revision, no binaries), never that the file is bad."""

    VERIFIED = "verified"  # hash, etcd's status and a trial restore all agree with the source member
    CORRUPT = "corrupt"  # a check proved the file wrong (hash, revision or restore)
    UNVERIFIED = "unverified"  # nothing proved it wrong, but not every check could be made


@dataclass(frozen=True)
class OffsiteCopy:
    """One copy of a snapshot in another place, with the hash read back from there."""

    kind: str  # "dir" | "s3"
    location: str  # a path, or s3://bucket/key (never credentials)
    sha256: str  # of the bytes read back from the copy
    verified: bool  # sha256 equals the snapshot's
    copied: datetime
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "copied": _iso(self.copied)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OffsiteCopy:
        return cls(**{**d, "copied": _parse(d["copied"])})


@dataclass(frozen=True)
class SnapshotRecord:
    id: str  # <cluster>-<YYYYmmddTHHMMSSffffffZ>-<member>: sorts by time, unique per take
    cluster: str
    member: str  # the inventory host (or etcd member name) it was streamed from
    endpoint: str
    revision: int  # the MVCC revision the snapshot holds
    raft_index: int  # the source member's raft index when it was chosen
    size: int  # bytes in the file (etcd's trailing sha256 included)
    sha256: str  # of the whole file
    created: datetime  # UTC, tz-aware
    verified: bool  # verdict is VERIFIED
    verdict: Verdict
    reason: str  # one sentence: why this verdict
    path: Path
    member_id: str = ""  # hex, as etcdctl prints it
    version: str = ""  # the source member's etcd version
    revision_source: str = ""  # how the revision is known: "stream", "bracket" or "snapshot-status"
    source_reason: str = ""  # why this member was chosen
    kv_hash: int | None = None  # HashKV at `revision` of the restored snapshot (None before verify)
    compact_revision: int | None = None  # the compact revision that hash was taken at
    offsite: tuple[OffsiteCopy, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["created"] = _iso(self.created)
        d["verdict"] = str(self.verdict)
        d["path"] = str(self.path)
        d["offsite"] = [c.to_json() for c in self.offsite]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SnapshotRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # a newer writer's extra fields are ignored
        return cls(
            **{
                **d,
                "created": _parse(d["created"]),
                "verdict": Verdict(d["verdict"]),
                "path": Path(d["path"]),
                "offsite": tuple(OffsiteCopy.from_json(c) for c in d.get("offsite", ())),
            }
        )

    def with_verdict(self, verdict: Verdict, reason: str, **changes: Any) -> SnapshotRecord:
        return dataclasses.replace(
            self, verdict=verdict, verified=verdict is Verdict.VERIFIED, reason=reason, **changes
        )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(s: str) -> datetime:
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)
