"""The delta log on this machine: a directory of sealed segments and at most one open one.

    log = DeltaLog(dir)
    log.spans()                      # [(1001, 5230)]: the runs of revisions it holds without a gap
    for rec in log.records(1001, 2000):   # in revision order, each revision once; GapError otherwise
        ...

Listing reads file names only; reading a segment checks its checksum (SegmentError names the file).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from etcd_dr.deltalog.segment import (
    GapError,
    Record,
    SegmentError,
    SegmentInfo,
    Vanished,
    parse_name,
    parse_open_name,
    read_open,
    read_segment,
    segment_name,
)

STATUS_FILE = "status.json"
GAP_FILE = "gap.json"
_RETRIES = 5  # listings of a log a watcher is sealing segments of


class DeltaLog:
    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)

    def __repr__(self) -> str:
        return f"DeltaLog({str(self.dir)!r})"

    # -- listing --

    def _listing(self) -> tuple[list[SegmentInfo], Path | None]:
        """Sealed segments (by first revision) and the open one, from ONE directory listing: a
        segment sealed by a running watcher shows under one name or the other, never neither."""
        if not self.dir.is_dir():
            return [], None
        names = list(self.dir.iterdir())
        sealed = sorted(
            (i for p in names if (i := parse_name(p)) is not None), key=lambda i: (i.first, i.last)
        )
        parts = sorted(p for p in names if parse_open_name(p) is not None)
        if len(parts) > 1:
            listed = ", ".join(p.name for p in parts)
            raise SegmentError(f"{self.dir}: {len(parts)} open segments ({listed}); one watcher writes a log")
        return sealed, parts[0] if parts else None

    def segments(self) -> list[SegmentInfo]:
        """Sealed segments, by first revision (names only: nothing is read)."""
        return self._listing()[0]

    def open_segment(self) -> Path | None:
        """The open segment (`<first>.seg.part`), if any. Two are an error: one watcher per log."""
        return self._listing()[1]

    def open_records(self) -> list[Record]:
        return self._current()[1]

    def _current(self) -> tuple[list[SegmentInfo], list[Record]]:
        """Sealed segments and the open segment's records, consistent with each other."""
        for _ in range(_RETRIES):
            sealed, part = self._listing()
            try:
                return sealed, (read_open(part)[0] if part is not None else [])
            except Vanished:
                continue  # the watcher sealed it meanwhile: its records are in a segment now
        raise SegmentError(f"{self.dir}: the open segment kept changing while it was read")

    def spans(self, *, include_open: bool = True) -> list[tuple[int, int]]:
        """The runs of consecutive revisions held, e.g. [(1001, 5230), (9001, 9400)] after a gap."""
        sealed, recs = self._current() if include_open else (self.segments(), [])
        ranges = [(s.first, s.last) for s in sealed]
        if recs:
            ranges.append((recs[0].revision, recs[-1].revision))
        out: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if out and first <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], last))
            else:
                out.append((first, last))
        return out

    def last_revision(self, *, include_open: bool = True) -> int | None:
        spans = self.spans(include_open=include_open)
        return spans[-1][1] if spans else None

    # -- reading --

    def records(self, start: int, end: int | None = None, *, include_open: bool = True) -> Iterator[Record]:
        """Records start..end (inclusive; end None: to the last on record), each revision exactly
        once and in order. GapError names the revisions missing (or held twice) when the log cannot
        give them all; SegmentError names a corrupt segment. Segments are read one at a time; a
        segment sealed by a running watcher while this reads is found again under its new name."""
        want = start
        for _ in range(_RETRIES):
            try:
                for r in self._records(want, end, include_open):
                    yield r
                    want = r.revision + 1
                return
            except Vanished:
                continue
        raise SegmentError(f"{self.dir}: the open segment kept changing while it was read")

    def _records(self, start: int, end: int | None, include_open: bool) -> Iterator[Record]:
        sealed, part = self._listing()
        sources = [(s.first, s.last, s.path, False) for s in sealed]
        part = part if include_open else None
        if part is not None:
            first = parse_open_name(part)
            assert first is not None
            sources.append((first, first, part, True))  # its last is known only once read
        sources.sort(key=lambda s: s[0])
        want = start
        for first, last, path, is_open in sources:
            if not is_open and last < want:
                continue
            if end is not None and want > end:
                return
            if first > want:
                raise GapError(
                    f"{self.dir}: revisions {want}..{first - 1} are not in the delta log "
                    f"(the next segment, {path.name}, starts at {first})"
                )
            recs = read_open(path)[0] if is_open else read_segment(path)
            for r in recs:
                if r.revision < want:
                    if first < start:
                        continue  # before the start asked for, in the first segment
                    raise GapError(f"{self.dir}: revision {r.revision} is held twice ({path.name} again)")
                if end is not None and r.revision > end:
                    return
                yield r
                want = r.revision + 1
        if end is not None and want <= end:
            last = want - 1
            raise GapError(
                f"{self.dir}: revisions {want}..{end} are not in the delta log (it ends at {last})"
            )

    # -- the open segment after a crash --

    def seal_open(self) -> SegmentInfo | None:
        """Seal what a killed watcher left in its open segment: the complete records kept (a torn
        last line cut off), footer with checksum, renamed. A `.part` holding no record is removed
        (it holds no event). Returns the sealed segment, or None."""
        part = self.open_segment()
        if part is None:
            return None
        records, end = read_open(part)
        if not records:
            part.unlink()
            return None
        with open(part, "r+b") as f:
            f.truncate(end)
            f.seek(0)
            body = f.read()
            footer = {
                "footer": True,
                "first_revision": records[0].revision,
                "last_revision": records[-1].revision,
                "records": len(records),
                "events": sum(len(r.events) for r in records),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
            f.write((json.dumps(footer, separators=(",", ":")) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        dest = self.dir / segment_name(records[0].revision, records[-1].revision)
        os.replace(part, dest)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return SegmentInfo(dest, records[0].revision, records[-1].revision)
