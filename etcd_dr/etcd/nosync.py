"""Run a throwaway etcd tool without fsync: the trial restore's `snapshot restore` and the throwaway
etcd that serves it write a copy of the db that is deleted seconds later, so its durability is worth
nothing, while its fsyncs cost the most of anything after the stream at 1.3 GB (README "Measured":
the restore's fdatasync pushes the whole copy to disk, and the removal then frees written extents).

Neither restore tool has a switch for it (3.4 `etcdctl snapshot restore`, 3.5 `etcdutl snapshot
restore`); only the 3.5 server has `--unsafe-no-fsync`. So one mechanism for both lines and both
tools: a small launcher (this interpreter without site, ~10 ms) installs a seccomp filter under which
fsync, fdatasync, sync_file_range, syncfs and sync return 0 without doing anything, and then execs
the tool (same PID: the caller kills and reaps what it started). The copy stays in the page cache as
dirty pages that the kernel writes back on its own terms (its dirty limits bound them) or, mostly,
never: the scratch dir is removed first. Where the filter cannot be installed (another architecture,
no seccomp), the tool runs as it is and only takes longer. Never for anything that must survive.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# (AUDIT_ARCH_*, syscall numbers of fsync, fdatasync, sync, sync_file_range, syncfs) per machine.
SYNC_SYSCALLS = {
    "x86_64": (0xC000003E, (74, 75, 162, 277, 306)),
    "aarch64": (0xC00000B7, (82, 83, 81, 84, 267)),
}

# The launcher: argv[1] is the program, argv[1:] its argv. Classic BPF over seccomp_data (nr at
# offset 0, arch at 4): another arch -> allow; a sync syscall -> SECCOMP_RET_ERRNO with errno 0
# (returns 0, does nothing); anything else -> allow.
_LAUNCHER = r"""
import ctypes, os, struct, sys
def nosync(table):
    arch, nrs = table[os.uname().machine]
    n = len(nrs)
    prog = [(0x20, 0, 0, 4), (0x15, 0, n + 1, arch), (0x20, 0, 0, 0)]
    prog += [(0x15, n - i, 0, nr) for i, nr in enumerate(nrs)]
    prog += [(0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x00050000)]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    # PR_SET_NO_NEW_PRIVS (38) first: an unprivileged process may install a filter only then
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
try:
    nosync(%r)
except Exception as e:
    sys.stderr.write(f"etcd-dr: fsync left on ({e.__class__.__name__}: {e})\n")
try:
    os.execv(sys.argv[1], sys.argv[1:])
except OSError as e:
    sys.stderr.write(f"etcd-dr: cannot run {sys.argv[1]}: {e.strerror}\n")
    sys.exit(127)
"""


def without_sync(argv: Sequence[str]) -> list[str]:
    """argv run by the launcher: the same program, same PID, its syncs (and its children's) no-ops."""
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER % (SYNC_SYSCALLS,), *argv]
