"""The snapshot file's writer thread: bytes, etcd's trailing sha256 and errors, without etcd."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from etcd_dr.etcd import dbsink
from etcd_dr.etcd.dbsink import DbSink


def _stream(db: bytes, trailer: bytes, sizes: list[int]) -> list[bytes]:
    data, out, i = db + trailer, [], 0
    for n in sizes * (len(db) // max(1, sum(sizes)) + 2):
        if i >= len(data):
            break
        out.append(data[i : i + n])
        i += n
    if i < len(data):
        out.append(data[i:])
    return out


@pytest.mark.parametrize("sizes", [[32 * 1024], [7, 31, 32, 33, 4096], [1]])
def test_the_file_is_the_stream_and_the_trailer_is_checked(tmp_path: Path, sizes: list[int]) -> None:
    db = os.urandom(300_000 if sizes != [1] else 3_000)
    sink = DbSink(tmp_path / "s.part")
    for blob in _stream(db, hashlib.sha256(db).digest(), sizes):
        sink.put(blob)
    ok, db_hash, tail = sink.finish()
    assert ok and tail == hashlib.sha256(db).digest() and db_hash.digest() == tail
    assert (tmp_path / "s.part").read_bytes() == db + tail and sink.size == len(db) + 32


def test_a_wrong_trailer_is_not_ok(tmp_path: Path) -> None:
    db = os.urandom(100_000)
    sink = DbSink(tmp_path / "s.part")
    for blob in _stream(db, b"\0" * 32, [32 * 1024]):
        sink.put(blob)
    ok, _, _ = sink.finish()
    assert not ok


def test_a_full_disk_surfaces_naming_the_file(monkeypatch) -> None:
    monkeypatch.setattr(dbsink, "BATCH", 1)  # every put is a write
    sink = DbSink(Path("/dev/full"))
    with pytest.raises(OSError, match="writing the snapshot to /dev/full: No space left"):
        for _ in range(100):
            sink.put(b"x" * 4096)
        sink.finish()
    sink.abort()  # idempotent after the failure: the thread is gone, the fd closed
