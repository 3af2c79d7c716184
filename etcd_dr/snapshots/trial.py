"""A db file served by a throwaway single-member TLS etcd on loopback: the trial restore that the
snapshot verification hashes, and that `etcd-dr diverged` reads an old member's keys from.

    with served_db(bins, Path("db"), Path("/tmp"), skip_hash_check=True) as (client, endpoint, pid):
        client.range(b"\\0", b"\\0", serializable=True)

The scratch dir (ours alone) and the process (killed by the PID it was started with) are gone
afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from etcd_dr.etcd.client import EtcdClient
from etcd_dr.etcdbin import EtcdBinaries
from etcd_dr.snapshots.etcdtool import snapshot_restore
from etcd_dr.units import human_bytes

RESTORE_START_TIMEOUT = 60.0
# The throwaway is a one-member cluster on a restored data dir: etcd fast-forwards its election ticks
# ("started as single-node") and campaigns 1 to election/heartbeat ticks later, alone, so short ticks
# cost nothing in safety. With the members' 100/1000 ms it led 0.1-1.0 s after its store was loaded;
# with 10/50 ms, 10-50 ms (22 ms in one run); with 1/5 ms, 1-5 ms (README "Measured"). etcd wants
# election >= 5 x heartbeat; a 1 ms tick wakes its raft loop 1,000 times a second, nothing for a
# member with no peers that lives for the verification.
THROWAWAY_HEARTBEAT_MS = 1
THROWAWAY_ELECTION_MS = 5


class Served(NamedTuple):
    client: EtcdClient
    endpoint: str
    pid: int  # the throwaway etcd's


class Memory(NamedTuple):
    """A process's resident memory split the way it matters for sizing: `anon` is what it needs
    (heap, Go runtime); `file` is pages of files it maps (bbolt maps the whole db), which the kernel
    drops and reads again under memory pressure."""

    anon: int
    file: int

    def sentence(self) -> str:
        return (
            f"resident {human_bytes(self.anon + self.file)}: {human_bytes(self.file)} of it the db's "
            f"mapped file pages (reclaimable), {human_bytes(self.anon)} its own memory"
        )


def memory_of(pid: int) -> Memory | None:
    """RssAnon and RssFile of a live process (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in text.splitlines() if ":" in ln)
          if k in ("RssAnon", "RssFile")}  # fmt: skip
    return Memory(kb["RssAnon"], kb["RssFile"]) if len(kb) == 2 else None


@contextlib.contextmanager
def served_db(
    bins: EtcdBinaries,
    path: Path,
    scratch_parent: Path,
    *,
    skip_hash_check: bool = False,
    request_timeout: float = 120.0,
    start_timeout: float = RESTORE_START_TIMEOUT,
    scratch_prefix: str = ".trial-",
) -> Iterator[Served]:
    """Restore `path` (a snapshot, or with skip_hash_check a member's `member/snap/db`) into a scratch
    dir under scratch_parent and serve it; yields (a client of it, its endpoint, its pid) once it leads.
    Raises ToolError when the restore fails, TimeoutError/RuntimeError when etcd does not serve it."""
    from etcd_dr.certs import issue_cert, new_ca
    from etcd_dr.etcd.localcluster import LocalCluster, wait_for

    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix, dir=scratch_parent))
    ca = new_ca("etcd-dr-trial")
    cluster = LocalCluster(
        bins,
        scratch,
        ca,
        issue_cert(ca, "etcd-dr-trial", ips=("127.0.0.1",)),
        issue_cert(ca, "etcd-dr-trial-client", server=False),
        heartbeat_ms=THROWAWAY_HEARTBEAT_MS,
        election_ms=THROWAWAY_ELECTION_MS,
        durable=False,  # deleted below: its fsyncs would only push a doomed copy to disk
    )
    try:
        cluster._write_certs()
        node = cluster.new_node("trial")
        snapshot_restore(
            bins,
            path,
            node.data_dir,
            name=node.name,
            peer_url=node.peer_url,
            skip_hash_check=skip_hash_check,
            durable=False,
        )
        cluster.nodes = [node]
        cluster.start(node, f"{node.name}={node.peer_url}", "new")
        with cluster.client(request_timeout=request_timeout) as c:

            def ready() -> bool:
                if not node.running:
                    raise RuntimeError(f"throwaway etcd exited: {cluster.log_tail(node, 3)}")
                return c.status(node.client_url, timeout=1.0).leader != 0

            wait_for("throwaway etcd on the restored db", ready, start_timeout, 0.02)
            assert node.proc is not None
            yield Served(c, node.client_url, node.proc.pid)
    finally:
        cluster.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
