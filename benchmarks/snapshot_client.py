"""Snapshot speed and memory: etcd-dr's gRPC client vs `etcdctl snapshot save`.

Starts a one-member TLS etcd on 127.0.0.1 (ports 23000-23999), fills it to about --mb MB, then
alternates the two snapshotters --rounds times each, every run in its own process, and prints the
median wall time and peak RSS (per child, from wait4). The client's child also reports the time
spent inside EtcdClient.snapshot (without interpreter start and imports). Needs /usr/bin/time
(Debian package `time`).

    .venv/bin/python benchmarks/snapshot_client.py --version 3.4 --mb 200 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.etcd.localcluster import LocalCluster
from etcd_dr.etcdbin import ensure_binaries

# argv: endpoint, pki dir, dest ("-" = only a Status call: the interpreter + gRPC baseline).
CHILD = """
import json, sys, time
from pathlib import Path
from etcd_dr.etcd import EtcdClient
ep, pki, dest = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
c = EtcdClient([ep], ca_cert=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client-key.pem")
t0 = time.monotonic()
if dest == "-":
    c.status(ep)
    print(json.dumps({"call_s": time.monotonic() - t0, "ok": True}))
else:
    r = c.snapshot(ep, Path(dest))
    print(json.dumps({"call_s": time.monotonic() - t0, "size": r.size, "ok": r.db_sha256_ok}))
c.close()
"""


def run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one child process.

    Peak RSS comes from /usr/bin/time: wait4 on a child forked from this (large) interpreter would
    report at least the parent's RSS, as the child holds its pages between fork and exec."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "RSSKB=%M", *argv], capture_output=True, env=env, check=False)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-500:]}")
    m = re.search(rb"RSSKB=(\d+)", p.stderr)
    if not m:
        raise SystemExit("/usr/bin/time printed no RSS")
    return wall, int(m.group(1)) * 1024, p.stdout.decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="3.4")
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    bins = ensure_binaries(args.version)
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
    try:
        pki = root / "pki"
        (pki / "client.pem").write_bytes(cluster.client_pair.cert_pem)
        (pki / "client-key.pem").write_bytes(cluster.client_pair.key_pem)
        ep = cluster.endpoints[0]
        value = os.urandom(1 << 20)  # random: bbolt stores it as is, so the db grows by ~1 MB a put
        with cluster.client(request_timeout=30.0) as c:
            for i in range(args.mb):
                c.put(f"/bench/{i:06d}", value)
            db = c.status(ep).db_size
        print(f"etcd {bins.version}, db {db / 1e6:.0f} MB, {args.rounds} rounds each, alternating")

        env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
        ctl = [
            str(bins.etcdctl),
            f"--endpoints={ep}",
            f"--cacert={pki / 'ca.pem'}",
            f"--cert={pki / 'client.pem'}",
            f"--key={pki / 'client-key.pem'}",
            "snapshot",
            "save",
        ]
        res: dict[str, list[tuple[float, int]]] = {"etcdctl": [], "client": []}
        calls: list[float] = []
        for _ in range(args.rounds):
            dest = root / "ctl.db"
            w, rss, _ = run_child([*ctl, str(dest)], env)
            res["etcdctl"].append((w, rss))
            dest.unlink()
            dest = root / "ours.db"
            w, rss, out = run_child([sys.executable, "-c", CHILD, ep, str(pki), str(dest)])
            info = json.loads(out)
            assert info["ok"], "sha256 check failed"
            res["client"].append((w, rss))
            calls.append(info["call_s"])
            dest.unlink()
        _, base_rss, _ = run_child([sys.executable, "-c", CHILD, ep, str(pki), "-"])
        for name, rows in res.items():
            walls = [r[0] for r in rows]
            rss = [r[1] for r in rows]
            med = statistics.median(walls)
            print(
                f"{name:8s} wall median {med:.2f} s (min {min(walls):.2f}, max {max(walls):.2f})"
                f"  peak RSS median {statistics.median(rss) / 1e6:.0f} MB"
            )
        print(f"client   inside snapshot() median {statistics.median(calls):.2f} s")
        print(f"baseline (python + grpc + one Status call) peak RSS {base_rss / 1e6:.0f} MB")
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
