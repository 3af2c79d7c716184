"""The snapshot catalog: one JSON file in the snapshot directory, one record per snapshot.

`<dir>/catalog.json` is `{"version": 1, "records": [...]}` (records as SnapshotRecord.to_json()). Every
change takes an exclusive flock on `<dir>/.catalog.lock`, re-reads the file, and replaces it
atomically (temp file, fsync, rename, fsync the directory): a reader sees the old or the new
catalog, never half of one, and concurrent writers (a scheduled run and an operator) do not lose
each other's records.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.localfs import write_json_atomic
from etcd_dr.snapshots.record import SnapshotRecord

CATALOG_FILE = "catalog.json"
LOCK_FILE = ".catalog.lock"
FORMAT_VERSION = 1


class CatalogError(EtcdDrError):
    """The catalog file cannot be read or written."""


class Catalog:
    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self.path = self.dir / CATALOG_FILE

    def __repr__(self) -> str:
        return f"Catalog({str(self.dir)!r})"

    # -- reading --

    def records(self, cluster: str | None = None) -> list[SnapshotRecord]:
        """All records (of one cluster), oldest first."""
        recs = self._read()
        if cluster is not None:
            recs = [r for r in recs if r.cluster == cluster]
        return sorted(recs, key=lambda r: (r.created, r.id))

    def newest(self, cluster: str, verified_only: bool = True) -> SnapshotRecord | None:
        recs = [r for r in self.records(cluster) if r.verified or not verified_only]
        return recs[-1] if recs else None

    def get(self, id: str) -> SnapshotRecord:
        for r in self._read():
            if r.id == id:
                return r
        raise InputError(f"no snapshot with id {id!r} in {self.path}")

    def find_path(self, path: Path) -> SnapshotRecord | None:
        p = Path(path).absolute()
        return next((r for r in self._read() if Path(r.path).absolute() == p), None)

    # -- writing --

    def add(self, record: SnapshotRecord) -> None:
        def change(recs: list[SnapshotRecord]) -> list[SnapshotRecord]:
            if any(r.id == record.id for r in recs):
                raise CatalogError(f"{self.path}: a snapshot with id {record.id!r} is already cataloged")
            return [*recs, record]

        self._change(change)

    def update(self, record: SnapshotRecord) -> None:
        def change(recs: list[SnapshotRecord]) -> list[SnapshotRecord]:
            if not any(r.id == record.id for r in recs):
                raise CatalogError(f"{self.path}: no snapshot with id {record.id!r} to update")
            return [record if r.id == record.id else r for r in recs]

        self._change(change)

    def remove(self, id: str) -> None:
        self._change(lambda recs: [r for r in recs if r.id != id])

    # -- machinery --

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _change(self, fn: Callable[[list[SnapshotRecord]], list[SnapshotRecord]]) -> None:
        with self._locked():
            recs = fn(self._read())
            body = {"version": FORMAT_VERSION, "records": [r.to_json() for r in recs]}
            write_json_atomic(self.path, body, sync_dir=True)

    def _read(self) -> list[SnapshotRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise CatalogError(f"{self.path}: cannot be read ({e.strerror})") from None
        try:
            body = json.loads(text)
            if body.get("version") != FORMAT_VERSION:
                raise CatalogError(f"{self.path}: format version {body.get('version')!r}, expected 1")
            return [SnapshotRecord.from_json(r) for r in body["records"]]
        except (ValueError, KeyError, TypeError) as e:
            raise CatalogError(f"{self.path}: not a valid catalog ({e.__class__.__name__}: {e})") from None
