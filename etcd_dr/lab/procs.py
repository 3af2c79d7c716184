"""Processes as the root namespace sees them: liveness that is not fooled by zombies (this machine
reaps orphans late), start times that prove a PID still names the process we started, and the
processes inside a network namespace. Nothing here kills by name: only by PID, after proof."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may hold spaces and parentheses: the fields after it start after the last ')'
    return raw[raw.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    f = _stat_fields(pid)
    return int(f[19]) if f else None


def alive(pid: int, ticks: int | None = None) -> bool:
    """pid exists, is not a zombie and, when ticks is given, is the process that started then."""
    f = _stat_fields(pid)
    if not f or f[0] in ("Z", "X"):
        return False
    return ticks is None or int(f[19]) == ticks


def netns_inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(ns_file: Path) -> list[int]:
    """PIDs whose network namespace is the one bound at ns_file (what `ip netns pids` does)."""
    want = netns_inode(ns_file)
    if want is None:
        return []
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{d}/ns/net")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if (st.st_dev, st.st_ino) == want:
            out.append(int(d))
    return out


def ns_pids(pid: int) -> list[int]:
    """The NSpid line of /proc/PID/status: the PID in each nested PID namespace, outermost first."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return []


def find_ns_init(ns_file: Path) -> int | None:
    """The PID (root namespace) of the process in the netns that is PID 1 of a child PID namespace."""
    for p in pids_in_netns(ns_file):
        nsp = ns_pids(p)
        if len(nsp) == 2 and nsp[1] == 1:
            return p
    return None


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> list[int]:
    """Send sig to each PID (already proven to be ours). Returns the ones that were signalled."""
    done = []
    for p in pids:
        try:
            os.kill(p, sig)
            done.append(p)
        except ProcessLookupError:
            pass
    return done


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of pids is alive; returns those still alive at the deadline."""
    left = list(pids)
    end = time.monotonic() + timeout
    while left:
        left = [p for p in left if alive(p)]
        if not left or time.monotonic() > end:
            break
        time.sleep(0.01)
    return left
