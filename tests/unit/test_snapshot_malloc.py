"""`etcd-dr snapshot` take keeps glibc to one malloc arena (issue 14: gRPC's threads' arenas kept
20-30 MB of free heap at the peak). Counted with malloc_info in a fresh process: threads that
allocate get arenas of their own by default, one with the setting."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import ctypes, os, sys, tempfile, threading
if sys.argv[1] == "one":
    from etcd_dr.cli.snapshot import _one_malloc_arena
    _one_malloc_arena()
keep = []
def work():  # objects over 512 bytes come from malloc, in the thread's arena
    keep.append([b"x" * 1000 + bytes([i % 256]) for i in range(200)])
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
fd, path = tempfile.mkstemp()
os.close(fd)
fp = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, fp)
libc.fclose(fp)
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def _arenas(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_one_malloc_arena_where_threads_would_have_more() -> None:
    assert _arenas("default") > 1  # the test can tell: without the setting, threads get arenas
    assert _arenas("one") == 1
