"""Where the snapshot stream's chunks go: a file written, hashed and synced on a thread of its own, so
the thread that receives from gRPC does nothing else, and the periodic fdatasync (which used to stop
the receiving loop for each 64 MiB flushed) overlaps with receiving.

etcd sends the db in 32 KiB messages and appends the db's sha256 as the stream's last 32 bytes. The
sink hashes all but the last 32 bytes seen so far (those may be that trailer) and fdatasyncs every
16 MiB on the writer thread, so dirty pages never pile up and the final fsync is short.

Memory: the chunks are copied into a fixed pool of `depth` buffers of `batch` bytes (4 x 1 MiB),
allocated once: what waits for the writer is bounded in bytes, not in items, and the 32 KiB chunks
are freed as soon as they are copied, on the thread that allocated them. Holding the chunks until
the writer thread freed them (the sink before this one) left glibc's heap fragmented: 20 MB of free
but unreturned heap beside 10-27 MB in use at the peak (mallinfo2, a 1.3 GB db; README "Measured").
The copy costs ~0.1 s of CPU per GB; one write per 1 MiB replaces the writev of 32 chunks."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path

SHA256_LEN = 32
BATCH = 1 << 20  # bytes per buffer: one write each
# fdatasync on the writer thread every this many bytes: what the final fsync still flushes. At 64 MiB
# it took 42-44 ms of a 130 MB snapshot, at 16 MiB 12-14 ms, with the stream no slower (README
# "Measured"); etcdctl fsyncs the whole file once at the end (~90 ms at 130 MB).
SYNC_EVERY = 16 << 20
DEPTH = 4  # buffers in the pool: at most 4 MiB waits for the writer (8: 4-8 MB more peak RSS)


class DbSink:
    """A snapshot file being written: put() each chunk (the receiving thread), then finish() or
    abort(). Single producer. put() blocks while every buffer waits for the writer (backpressure:
    gRPC's flow control then holds etcd). Errors of the writer (a full disk) surface at the next
    put() or at finish(), naming the file."""

    def __init__(self, path: Path, *, batch: int = BATCH, depth: int = DEPTH) -> None:
        if depth < 2 or batch < SHA256_LEN:
            raise ValueError(f"DbSink: depth {depth} < 2 or batch {batch} < {SHA256_LEN}")
        self.path = path
        self.size = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # bytearray(n) of 1 MiB is its own mmap, zero pages untouched until written: no heap churn
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(depth - 1):
            self._free.put(bytearray(batch))
        self._buf = bytearray(batch)
        self._view = memoryview(self._buf)
        self._off = 0
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._hash = hashlib.sha256()
        self._tail = b""  # the last 32 bytes seen: etcd's sha256 once the stream ends
        self._writer = threading.Thread(target=self._write_buffers, name=f"dbsink {path.name}", daemon=True)
        self._writer.start()

    def put(self, blob: bytes | bytearray | memoryview) -> None:
        """Copy a chunk (bytes or a memoryview of a message) into the pool."""
        if self._error is not None:
            raise self._failed()
        src = memoryview(blob).cast("B")
        self.size += len(src)
        while src:
            n = min(len(src), len(self._view) - self._off)
            self._view[self._off : self._off + n] = src[:n]
            self._off += n
            src = src[n:]
            if self._off == len(self._view):
                self._send()
                if self._error is not None:
                    raise self._failed()

    def finish(self) -> tuple[bool, hashlib._Hash, bytes]:
        """Flush, fsync and close. Returns (the trailer matched the db's sha256, the hash of the db
        bytes, the 32-byte trailer)."""
        try:
            if self._off:
                self._full.put((self._buf, self._off))
            self._full.put(None)
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
        self._full.put(None)  # unbounded: never blocks, and the writer drains what is before it
        self._writer.join()
        self._close()

    def _send(self) -> None:
        self._full.put((self._buf, self._off))
        self._buf = self._free.get()  # blocks while the writer holds every other buffer
        self._view = memoryview(self._buf)
        self._off = 0

    # -- the writer thread --

    def _write_buffers(self) -> None:
        since_sync = 0
        while (item := self._full.get()) is not None:
            buf, n = item
            if self._error is None:
                try:
                    data = memoryview(buf)[:n]
                    _write_all(self._fd, data)
                    self._digest(data)
                    since_sync += n
                    if since_sync >= SYNC_EVERY:
                        os.fdatasync(self._fd)
                        since_sync = 0
                except BaseException as e:  # reported to the producer
                    self._error = e
            self._free.put(buf)  # also after an error: the producer must not block on the pool

    def _digest(self, data: memoryview) -> None:
        # hash all but the last 32 bytes seen so far: those may be etcd's checksum
        if len(data) >= SHA256_LEN:
            self._hash.update(self._tail)
            self._hash.update(data[:-SHA256_LEN])
            self._tail = bytes(data[-SHA256_LEN:])  # a copy: the buffer is reused
        else:
            buf = self._tail + data.tobytes()
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


def _write_all(fd: int, data: memoryview) -> None:
    while data:  # a short write (a full disk returns an error instead, as a rule)
        n = os.write(fd, data)
        data = data[n:]
