"""The leader's stop waits for its WAL files to change after a proposal (etcd_dr.recovery.steps:
_WAL_MARK, then _WAL_WRITTEN under `timeout`), run here with the local shell on a real directory."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from etcd_dr.recovery.steps import _WAL_MARK, _WAL_WRITTEN


def _mark(wal: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", _WAL_MARK, "wal", str(wal)], capture_output=True, text=True)


def _wait(wal: Path, mark: str, within: float) -> tuple[int, float]:
    t0 = time.monotonic()
    r = subprocess.run(["timeout", f"{within:g}", "sh", "-c", _WAL_WRITTEN, "wal", str(wal), mark])
    return r.returncode, time.monotonic() - t0


def test_a_write_to_the_last_segment_ends_the_wait(tmp_path: Path) -> None:
    wal = tmp_path / "member" / "wal"
    wal.mkdir(parents=True)
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"\0" * 4096)
    (wal / "0000000000000001-0000000000000010.wal").write_bytes(b"\0" * 4096)
    mark = _mark(wal)
    assert mark.returncode == 0 and mark.stdout.count("\n") == 2, mark
    time.sleep(0.02)  # past the file system's timestamp granularity

    def append() -> None:
        time.sleep(0.2)
        with open(wal / "0000000000000001-0000000000000010.wal", "r+b") as f:  # preallocated: same size
            f.write(b"entry")

    t = threading.Thread(target=append)
    t.start()
    rc, took = _wait(wal, mark.stdout.strip(), 3)
    t.join()
    assert rc == 0 and 0.15 < took < 1.5, (rc, took)


def test_a_new_segment_ends_the_wait(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"x")
    mark = _mark(wal).stdout.strip()
    (wal / "0000000000000001-0000000000000002.wal").write_bytes(b"y")  # a cut
    assert _wait(wal, mark, 3)[0] == 0


def test_no_write_runs_out_the_timeout_and_no_wal_gives_no_mark(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"x")
    rc, took = _wait(wal, _mark(wal).stdout.strip(), 0.3)
    assert rc == 124 and took >= 0.3  # timeout's exit: the step then waits the proposal out
    empty = tmp_path / "elsewhere"  # a member with its own --wal-dir has none in member/wal
    empty.mkdir()
    r = _mark(empty)
    assert r.returncode != 0 and not r.stdout.strip()
