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
import shutil
import statistics
import sys

from common import ETCDCTL_ENV, etcdctl_snapshot_argv, fill, launch, run_child, summary

# argv: endpoint, pki dir, dest ("-" = only a Status call: the interpreter + gRPC baseline).
CHILD = """
import json, os, sys, time
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
sys.stdout.flush()
os._exit(0)  # as `etcd-dr snapshot` leaves (etcd_dr.cli.run): without the interpreter's teardown
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="3.4")
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    bins, root, cluster = launch(args.version)
    try:
        pki = root / "pki"
        ep = cluster.endpoints[0]
        fill(cluster, 0, args.mb)
        with cluster.client() as c:
            db = c.status(ep).db_size
        print(f"etcd {bins.version}, db {db / 1e6:.0f} MB, {args.rounds} rounds each, alternating")

        ctl = etcdctl_snapshot_argv(bins, ep, pki)
        res: dict[str, list[tuple[float, int]]] = {"etcdctl": [], "client": []}
        calls: list[float] = []
        for _ in range(args.rounds):
            dest = root / "ctl.db"
            w, rss, _ = run_child([*ctl, str(dest)], ETCDCTL_ENV)
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
            print(summary(name, rows))
        print(f"client   inside snapshot() median {statistics.median(calls):.2f} s")
        print(f"baseline (python + grpc + one Status call) peak RSS {base_rss / 1e6:.0f} MB")
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
