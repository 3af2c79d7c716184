"""Where the snapshot stream's chunks go: a file written, hashed and synced on a thread of its own, so
the thread that receives from gRPC does nothing else, and the periodic fdatasync (which used to stop
the receiving loop for each 64 MiB flushed) overlaps with receiving.

etcd sends the db in 32 KiB messages and appends the db's sha256 as the stream's last 32 bytes. The
sink hashes all but the last 32 bytes seen so far (those may be that trailer), writes chunks in
batches of about 1 MiB with one writev, and fdatasyncs every 64 MiB on the writer thread, so dirty
pages never pile up and the final fsync is short. Memory stays bounded: at most `depth` batches
wait in the queue."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from pathlib import Path

SHA256_LEN = 32
BATCH = 1 << 20  # bytes per writev
SYNC_EVERY = 64 << 20  # fdatasync on the writer thread every this many bytes
DEPTH = 8  # batches that may wait for the writer: about 8 MiB at most
_IOV_MAX = 1024  # writev's vector limit (Linux)


class DbSink:
    """A snapshot file being written: put() each chunk (the receiving thread), then finish() or
    abort(). Single producer. Errors of the writer (a full disk) surface at the next put() or at
    finish(), naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._batch: list[bytes] = []
        self._batched = 0
        self._q: queue.Queue[list[bytes] | None] = queue.Queue(DEPTH)
        self._error: BaseException | None = None
        self._hash = hashlib.sha256()
        self._tail = b""  # the last 32 bytes seen: etcd's sha256 once the stream ends
        self._writer = threading.Thread(target=self._write_batches, name=f"dbsink {path.name}", daemon=True)
        self._writer.start()

    def put(self, blob: bytes) -> None:
        if self._error is not None:
            raise self._failed()
        self._batch.append(blob)
        self._batched += len(blob)
        self.size += len(blob)
        if self._batched >= BATCH or len(self._batch) >= _IOV_MAX:
            self._send()

    def finish(self) -> tuple[bool, hashlib._Hash, bytes]:
        """Flush, fsync and close. Returns (the trailer matched the db's sha256, the hash of the db
        bytes, the 32-byte trailer)."""
        try:
            self._send()
            self._q.put(None)
            self._writer.join()
            if self._error is not None:
                raise self._failed()
            os.fsync(self._fd)
        finally:
            self._close()
        ok = self.size > SHA256_LEN and self._hash.digest() == self._tail
        return ok, self._hash, self._tail

    def abort(self) -> None:
        """Stop the writer and close the file (the caller removes it)."""
        self._error = self._error or _Aborted()
        while True:  # make room for the stop signal: the writer may be gone already
            try:
                self._q.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._q.get_nowait()
        self._writer.join()
        self._close()

    # -- the writer thread --

    def _send(self) -> None:
        if self._batch:
            batch, self._batch, self._batched = self._batch, [], 0
            self._q.put(batch)

    def _write_batches(self) -> None:
        since_sync = 0
        while (batch := self._q.get()) is not None:
            if self._error is not None:
                continue  # drain: the producer stops at its next put()
            try:
                n = sum(len(b) for b in batch)
                done = os.writev(self._fd, batch)
                if done < n:  # a short write (a full disk returns an error instead, as a rule)
                    _write_all(self._fd, b"".join(batch)[done:])
                for b in batch:
                    self._digest(b)
                since_sync += n
                if since_sync >= SYNC_EVERY:
                    os.fdatasync(self._fd)
                    since_sync = 0
            except BaseException as e:  # reported to the producer
                self._error = e

    def _digest(self, blob: bytes) -> None:
        # hash all but the last 32 bytes seen so far: those may be etcd's checksum
        if len(blob) >= SHA256_LEN:
            self._hash.update(self._tail)
            self._hash.update(memoryview(blob)[:-SHA256_LEN])
            self._tail = blob[-SHA256_LEN:]
        else:
            buf = self._tail + blob
            self._hash.update(buf[:-SHA256_LEN])
            self._tail = buf[-SHA256_LEN:]

    def _failed(self) -> OSError:
        e = self._error
        if isinstance(e, OSError):
            return OSError(e.errno, f"writing the snapshot to {self.path}: {e.strerror}")
        return OSError(f"writing the snapshot to {self.path}: {e}")

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Aborted(Exception):
    pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
