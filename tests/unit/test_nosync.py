"""The throwaway's launcher (etcd_dr.etcd.nosync): the program runs under the filter with its own
argv, as the same process, and its fsyncs return success."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etcd_dr.etcd.nosync import SYNC_SYSCALLS, without_sync

# fsync and fdatasync on a real file, then what the kernel says about the process
PROBE = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, b"x" * 4096)
os.fsync(fd)
os.fdatasync(fd)
os.close(fd)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(os.getpid(), status["Seccomp"].strip(), status["Seccomp_filters"].strip(), sys.argv[2])
"""


@pytest.mark.skipif(os.uname().machine not in SYNC_SYSCALLS, reason="no filter for this machine")
def test_the_program_runs_filtered_with_its_argv_as_the_same_process(tmp_path: Path) -> None:
    bare = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "g"), "-"], capture_output=True, text=True, timeout=30
    )
    filters_before = int(bare.stdout.split()[2])
    p = subprocess.Popen(
        without_sync([sys.executable, "-c", PROBE, str(tmp_path / "f"), "--flag=x y"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    pid, mode, filters, arg = out.split(maxsplit=3)
    assert int(pid) == p.pid  # exec'd in place: the caller kills and reaps what it started
    assert mode == "2" and int(filters) == filters_before + 1  # SECCOMP_MODE_FILTER, ours on top
    assert arg.strip() == "--flag=x y"
    assert (tmp_path / "f").stat().st_size == 4096  # writes still happen; only the syncs are no-ops
    assert err == ""


def test_a_program_that_cannot_run_is_named_with_exit_127(tmp_path: Path) -> None:
    p = subprocess.run(without_sync([str(tmp_path / "missing")]), capture_output=True, text=True, timeout=30)
    assert p.returncode == 127
    assert f"cannot run {tmp_path / 'missing'}" in p.stderr
