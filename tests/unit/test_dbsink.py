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


@pytest.mark.parametrize("batch", [dbsink.BATCH, 4096, 33])  # chunks spanning buffers too
@pytest.mark.parametrize("sizes", [[32 * 1024], [7, 31, 32, 33, 4096], [1]])
def test_the_file_is_the_stream_and_the_trailer_is_checked(
    tmp_path: Path, sizes: list[int], batch: int
) -> None:
    db = os.urandom(300_000 if sizes != [1] else 3_000)
    sink = DbSink(tmp_path / "s.part", batch=batch, depth=2)
    for i, blob in enumerate(_stream(db, hashlib.sha256(db).digest(), sizes)):
        sink.put(memoryview(blob) if i % 2 else blob)  # the client passes slices of the messages
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


def test_a_full_disk_surfaces_at_a_put_naming_the_file() -> None:
    sink = DbSink(Path("/dev/full"), batch=4096, depth=2)  # every put fills a buffer: a write
    with pytest.raises(OSError, match="writing the snapshot to /dev/full: No space left"):
        for _ in range(100):
            sink.put(b"x" * 4096)
    sink.abort()  # after the failure: the thread stops, the fd is closed
    sink.abort()  # and again: idempotent
    assert not sink._writer.is_alive() and sink._fd == -1


def test_what_waits_for_the_writer_is_bounded_in_bytes(tmp_path: Path, monkeypatch) -> None:
    """A stalled writer holds the producer at depth buffers: put() blocks instead of queueing more."""
    import threading

    gate = threading.Event()
    real_write = dbsink._write_all
    monkeypatch.setattr(dbsink, "_write_all", lambda fd, data: (gate.wait(), real_write(fd, data)))
    sink = DbSink(tmp_path / "s.part", batch=1024, depth=3)
    done = []
    t = threading.Thread(target=lambda: [sink.put(b"y" * 1024) for _ in range(10)] and done.append(1))
    t.start()
    t.join(0.5)
    assert t.is_alive() and not done  # blocked: 1 buffer at the writer, 1 queued, 1 being filled
    assert sink.size <= 4 * 1024
    gate.set()
    t.join(5)
    assert done
    sink.put(hashlib.sha256(b"y" * 10 * 1024).digest())
    ok, _, _ = sink.finish()
    assert ok and (tmp_path / "s.part").stat().st_size == 10 * 1024 + 32
