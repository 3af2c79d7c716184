"""What the benchmarks share: a one-member TLS etcd on loopback, a fast fill, and timing one fresh
child process with its peak RSS.

Peak RSS is read with /usr/bin/time (Debian package `time`), not wait4 from this process: a child
forked from a large Python parent starts with the parent's pages and would report at least them.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.etcd.localcluster import LocalCluster
from etcd_dr.etcdbin import EtcdBinaries, ensure_binaries


def launch(version: str) -> tuple[EtcdBinaries, Path, LocalCluster]:
    """A one-member TLS etcd of this version on 127.0.0.1, in a fresh temp dir, with the client's
    PEM files written to <root>/pki (ca.pem, client.pem, client-key.pem) for etcdctl."""
    bins = ensure_binaries(version)
    root = Path(tempfile.mkdtemp(prefix="etcd-dr-bench-"))
    ca = new_ca()
    cluster = LocalCluster.launch(
        bins,
        root,
        ca,
        issue_cert(ca, "etcd-member", ips=("127.0.0.1",)),
        issue_cert(ca, "bench-client", server=False),
        size=1,
    )
    pki = root / "pki"
    pki.mkdir(exist_ok=True)
    (pki / "ca.pem").write_bytes(ca.cert_pem)
    (pki / "client.pem").write_bytes(cluster.client_pair.cert_pem)
    (pki / "client-key.pem").write_bytes(cluster.client_pair.key_pem)
    return bins, root, cluster


def etcdctl_snapshot_argv(bins: EtcdBinaries, endpoint: str, pki: Path) -> list[str]:
    return [
        str(bins.etcdctl),
        f"--endpoints={endpoint}",
        f"--cacert={pki / 'ca.pem'}",
        f"--cert={pki / 'client.pem'}",
        f"--key={pki / 'client-key.pem'}",
        "snapshot",
        "save",
    ]


ETCDCTL_ENV = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}


def fill(cluster: LocalCluster, start: int, count: int, threads: int = 8) -> float:
    """Put `count` random 1 MiB values (bbolt stores them as is: the db grows ~1 MB a put)."""
    value = os.urandom(1 << 20)
    t0 = time.monotonic()
    with cluster.client(request_timeout=60.0) as c, cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: c.put(f"/bench/{i:06d}", value), range(start, start + count)))
    return time.monotonic() - t0


def run_child(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one fresh child process, via /usr/bin/time."""
    t0 = time.monotonic()
    p = subprocess.run(
        ["/usr/bin/time", "-f", "RSSKB=%M", *argv], capture_output=True, env=env, cwd=cwd, check=False
    )
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[:4]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-800:]}")
    m = re.search(rb"RSSKB=(\d+)", p.stderr)
    if not m:
        raise SystemExit("/usr/bin/time printed no RSS")
    return wall, int(m.group(1)) * 1024, p.stdout.decode()


def summary(name: str, rows: list[tuple[float, int]]) -> str:
    walls = [r[0] for r in rows]
    rss = [r[1] for r in rows]
    return (
        f"  {name:8s} wall median {statistics.median(walls):6.2f} s "
        f"(min {min(walls):.2f}, max {max(walls):.2f})"
        f"  peak RSS median {statistics.median(rss) / 1e6:6.1f} MB (max {max(rss) / 1e6:.1f})"
    )
