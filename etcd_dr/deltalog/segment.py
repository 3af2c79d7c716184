"""One segment of the delta log: the events of a contiguous run of revisions, in one file.

Format (JSON Lines, UTF-8; keys and values base64 since etcd's are bytes):

    {"format": "etcd-dr-deltalog", "version": 1, "cluster": "lab", "first_revision": 1001, ...}
    {"rev": 1001, "at": 1764950000.123, "events": [{"t": "put", "k": "L2E=", "v": "MQ==", "pv": null,
                                                    "l": 0, "cr": 1001, "ver": 1}]}
    ...            one line per original revision (a txn's events together, in etcd's order)
    {"footer": true, "first_revision": 1001, "last_revision": 1877, "records": 877, "sha256": "..."}

The checksum is a footer, not a sidecar: the file is then complete in itself (one rename makes it
appear with its checksum, one copy ships both, a sidecar could be lost or stale apart from it), and
the footer's sha256 covers every byte before it. A segment is written as `<name>.part` (the open
segment: appended per watch batch and fdatasynced at most `sync_interval_s` later: a killed
watcher loses nothing it wrote, a machine that loses power at most that much),
then sealed: footer appended, fsynced, renamed to `<first>-<last>.seg`, directory fsynced.

`at` is when the watcher received the revision (etcd's events carry no time): `--to-time T` means
"the revisions received by T".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from etcd_dr.errors import EtcdDrError
from etcd_dr.localfs import fsync_dir

FORMAT = "etcd-dr-deltalog"
VERSION = 1
SUFFIX = ".seg"
OPEN_SUFFIX = ".seg.part"
_NAME = re.compile(r"^(\d{16})-(\d{16})\.seg$")
_OPEN_NAME = re.compile(r"^(\d{16})\.seg\.part$")


class SegmentError(EtcdDrError):
    """A segment is corrupt or not a segment; the message names the file and what is wrong."""


class Vanished(SegmentError):
    """The open segment was sealed (renamed) while it was being read: list the log again."""


class GapError(EtcdDrError):
    """The log misses revisions (or holds one twice) between two points; the message names them."""


@dataclass(frozen=True)
class Event:
    """One key changed at one revision: a put (value, lease) or a delete, with the value before."""

    type: str  # "put" | "delete"
    key: bytes
    value: bytes  # b"" for a delete
    prev_value: bytes | None  # None: the key did not exist before (or prev_kv was not asked)
    lease: int
    create_revision: int
    version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.type,
            "k": _b64(self.key),
            "v": _b64(self.value),
            "pv": None if self.prev_value is None else _b64(self.prev_value),
            "l": self.lease,
            "cr": self.create_revision,
            "ver": self.version,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        if d["t"] not in ("put", "delete"):
            raise ValueError(f"event type {d['t']!r}")
        return cls(
            d["t"],
            _unb64(d["k"]),
            _unb64(d["v"]),
            None if d["pv"] is None else _unb64(d["pv"]),
            int(d["l"]),
            int(d["cr"]),
            int(d["ver"]),
        )


@dataclass(frozen=True)
class Record:
    """Every event of one original revision (one etcd transaction), and when it was received."""

    revision: int
    at: float  # unix time the watcher received it
    events: tuple[Event, ...]

    def line(self) -> bytes:
        return self._line

    @cached_property
    def _line(self) -> bytes:  # encoded once: the watcher sizes a record, then writes it
        d = {"rev": self.revision, "at": round(self.at, 6), "events": [e.to_json() for e in self.events]}
        return (json.dumps(d, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> Record:
        d = json.loads(line)
        return cls(int(d["rev"]), float(d["at"]), tuple(Event.from_json(e) for e in d["events"]))


@dataclass(frozen=True)
class SegmentInfo:
    """A sealed segment as its name says (the checksum is checked when it is read)."""

    path: Path
    first: int
    last: int

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(first: int, last: int) -> str:
    return f"{first:016d}-{last:016d}{SUFFIX}"


def open_name(first: int) -> str:
    return f"{first:016d}{OPEN_SUFFIX}"


def parse_name(path: Path) -> SegmentInfo | None:
    m = _NAME.match(path.name)
    return SegmentInfo(path, int(m.group(1)), int(m.group(2))) if m else None


def parse_open_name(path: Path) -> int | None:
    m = _OPEN_NAME.match(path.name)
    return int(m.group(1)) if m else None


def header_line(cluster: str, first: int) -> bytes:
    d = {
        "format": FORMAT,
        "version": VERSION,
        "cluster": cluster,
        "first_revision": first,
        "opened": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return (json.dumps(d, separators=(",", ":")) + "\n").encode()


class SegmentWriter:
    """The open segment: `<dir>/<first>.seg.part`, appended per batch (written before append()
    returns, fdatasynced once sync_interval_s has passed: flush()), sealed by seal(). Records must
    come in revision order, one per revision, starting at `first`."""

    def __init__(
        self,
        dir: Path,
        cluster: str,
        first: int,
        *,
        opened_at: float | None = None,
        sync_interval_s: float = 0.0,
    ) -> None:
        self.dir = Path(dir)
        self.cluster = cluster
        self.first = first
        self.next = first  # the revision the next record must have
        self.path = self.dir / open_name(first)
        self.records = 0
        self.events = 0
        self.size = 0
        self.opened_at = opened_at if opened_at is not None else _now()
        self._hash = hashlib.sha256()
        self._fd: int | None = None
        self.sync_interval_s = sync_interval_s  # 0: fdatasync every append
        self._synced = time.monotonic()
        self._dirty = False

    @classmethod
    def create(cls, dir: Path, cluster: str, first: int, *, sync_interval_s: float = 0.0) -> SegmentWriter:
        w = cls(dir, cluster, first, sync_interval_s=sync_interval_s)
        w.dir.mkdir(parents=True, exist_ok=True)
        w._fd = os.open(w.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        w._write(header_line(cluster, first))
        os.fdatasync(w._fd)
        fsync_dir(w.dir)
        return w

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        buf = bytearray()
        for r in records:
            if r.revision != self.next:
                raise GapError(
                    f"{self.path.name}: record for revision {r.revision} where {self.next} comes next "
                    "(the log takes every revision once, in order)"
                )
            buf += r.line()
            self.next += 1
            self.events += len(r.events)
        self._write(bytes(buf))
        self.records += len(records)
        self._dirty = True
        self.flush(due_only=True)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def flush(self, *, due_only: bool = False) -> None:
        """fdatasync what was appended (written already: a killed process loses nothing of it; a
        machine that loses power loses at most sync_interval_s of it)."""
        if due_only and time.monotonic() - self._synced < self.sync_interval_s:
            return
        if self._dirty and self._fd is not None:
            os.fdatasync(self._fd)
            self._dirty = False
            self._synced = time.monotonic()

    @property
    def last(self) -> int:
        return self.next - 1

    def seal(self) -> SegmentInfo:
        """Footer (with the sha256 of every byte before it), fsync, rename to its final name."""
        if self.records == 0:
            raise SegmentError(f"{self.path}: an empty segment is not sealed")
        footer = {
            "footer": True,
            "first_revision": self.first,
            "last_revision": self.last,
            "records": self.records,
            "events": self.events,
            "sha256": self._hash.hexdigest(),
        }
        self._write((json.dumps(footer, separators=(",", ":")) + "\n").encode(), hashed=False)
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        dest = self.dir / segment_name(self.first, self.last)
        os.replace(self.path, dest)
        fsync_dir(self.dir)
        return SegmentInfo(dest, self.first, self.last)

    def close(self) -> None:
        """Close without sealing: the .part stays (a restart seals what it holds)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes, *, hashed: bool = True) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if hashed:
            self._hash.update(data)
        self.size += len(data)


# -- reading -------------------------------------------------------------------------------------------


def read_segment(path: Path) -> Iterator[Record]:
    """The records of a sealed segment, after its checksum and span are checked; SegmentError
    names the file and what is wrong (nothing is yielded from a corrupt segment)."""
    path = Path(path)
    info = parse_name(path)
    if info is None:
        raise SegmentError(f"{path}: not a segment name (<first>-<last>{SUFFIX})")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SegmentError(f"{path}: cannot be read ({e.strerror})") from None
    body, sep, footer_line = data.rstrip(b"\n").rpartition(b"\n")
    if not sep:
        raise SegmentError(f"{path}: no footer (truncated?)")
    body += b"\n"
    try:
        footer = json.loads(footer_line)
    except ValueError:
        raise SegmentError(f"{path}: the last line is not a footer (truncated?)") from None
    if not isinstance(footer, dict) or not footer.get("footer"):
        raise SegmentError(f"{path}: the last line is not a footer (truncated?)")
    got = hashlib.sha256(body).hexdigest()
    if got != footer.get("sha256"):
        raise SegmentError(
            f"{path}: checksum mismatch (sha256 {got[:12]}..., footer says "
            f"{str(footer.get('sha256'))[:12]}...): the segment is corrupt; refused"
        )
    lines = body.splitlines()
    header = _header(path, lines[0])
    records = _records(path, lines[1:], header["first_revision"], torn_tail_ok=False)
    last = records[-1].revision if records else None
    if (header["first_revision"], last) != (info.first, info.last) or footer.get("last_revision") != last:
        raise SegmentError(
            f"{path}: holds revisions {header['first_revision']}..{last}, its name says "
            f"{info.first}..{info.last}, its footer "
            f"{footer.get('first_revision')}..{footer.get('last_revision')}"
        )
    yield from records


def read_open(path: Path) -> tuple[list[Record], int]:
    """The complete records of an open segment (`.part`) and the byte length they end at: a line
    torn by a crash at the end is left out; a bad line before the end is corruption (SegmentError)."""
    path = Path(path)
    first = parse_open_name(path)
    if first is None:
        raise SegmentError(f"{path}: not an open segment name (<first>{OPEN_SUFFIX})")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Vanished(f"{path}: sealed while it was read") from None
    except OSError as e:
        raise SegmentError(f"{path}: cannot be read ({e.strerror})") from None
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline was never completed
    if not complete:
        return [], 0
    header = _header(path, complete[0])
    if header["first_revision"] != first:
        raise SegmentError(f"{path}: header says first revision {header['first_revision']}, its name {first}")
    records = _records(path, complete[1:], first, torn_tail_ok=True)
    end = sum(len(x) + 1 for x in complete[: 1 + len(records)])
    return records, end


def _header(path: Path, line: bytes) -> dict[str, Any]:
    try:
        h = json.loads(line)
    except ValueError:
        raise SegmentError(f"{path}: the first line is not a delta log header") from None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise SegmentError(f"{path}: the first line is not a delta log header")
    if h.get("version") != VERSION:
        raise SegmentError(f"{path}: format version {h.get('version')!r}, this etcd-dr reads {VERSION}")
    return h


def _records(path: Path, lines: Sequence[bytes], first: int, *, torn_tail_ok: bool) -> list[Record]:
    out: list[Record] = []
    for i, line in enumerate(lines):
        try:
            r = Record.from_line(line)
        except (ValueError, KeyError, TypeError) as e:
            if torn_tail_ok and i == len(lines) - 1:
                break  # the last line a crash cut short
            raise SegmentError(f"{path}: line {i + 2} is not a record ({e.__class__.__name__})") from None
        want = first + len(out)
        if r.revision != want:
            raise SegmentError(f"{path}: line {i + 2} holds revision {r.revision}, {want} was expected")
        out.append(r)
    return out


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _now() -> float:
    return time.time()
