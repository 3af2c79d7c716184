"""Restore time for a big snapshot plus many logged events: `snapshot roll-forward` (the restore of
the snapshot into a throwaway etcd, the replay, the check against the log, the new snapshot and its
verification) on a one-member TLS etcd on loopback filled with --mib MiB of 1 MiB values, then
--events small puts (16 writers) followed by `Streamer` (the watcher) from the verified snapshot.

A benchmark: it prints figures and asserts nothing about speed.

    .venv/bin/python benchmarks/pitr_restore.py --mib 1024 --events 100000
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import sys
import threading
import time
from pathlib import Path

from common import fill, launch
from snapshot import write_inventory

from etcd_dr.deltalog import DeltaLog
from etcd_dr.deltalog.replay import replay, scratch_parent
from etcd_dr.deltalog.service import log_dir_for, roll_forward, stream_cluster
from etcd_dr.etcd.localcluster import wait_for
from etcd_dr.inventory import load_inventory
from etcd_dr.snapshots import service
from etcd_dr.snapshots.trial import served_db
from etcd_dr.state import observe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="3.4")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument(
        "--windows", type=lambda v: [int(x) for x in v.split(",")], default=[],
        help="after the roll-forward, replay the same log again with each of these numbers of "
        "transactions in flight (a fresh restore each): the replay's speed side by side",
    )  # fmt: skip
    a = ap.parse_args()
    bins, root, cluster = launch(a.version)
    try:
        inv = load_inventory(write_inventory(cluster, root))
        took = fill(cluster, 0, a.mib)
        print(f"etcd {bins.version}: filled {a.mib} MiB in {took:.1f} s", flush=True)
        t0 = time.monotonic()
        rec, _ = service.snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
        print(
            f"snapshot {rec.size / 2**20:.0f} MiB, {rec.verdict}, {time.monotonic() - t0:.1f} s", flush=True
        )
        stop = threading.Event()
        t = threading.Thread(target=lambda: stream_cluster(inv, stop=stop), daemon=True)
        t.start()
        wait_for("the watcher", lambda: (log_dir_for(inv) / "status.json").exists(), 60)
        t0 = time.monotonic()
        with cluster.client(request_timeout=60.0) as c, cf.ThreadPoolExecutor(16) as pool:
            revs = list(pool.map(lambda i: c.put(f"/ev/{i % 5000:05d}", f"v{i}").revision, range(a.events)))
        last = max(revs)
        print(f"{a.events} puts in {time.monotonic() - t0:.1f} s; last revision {last}", flush=True)
        wait_for("the log", lambda: (DeltaLog(log_dir_for(inv)).last_revision() or 0) >= last, 600, 0.5)
        stop.set()
        t.join(60)
        t0 = time.monotonic()
        res = roll_forward(inv)
        total = time.monotonic() - t0
        r = res.replayed
        print(
            f"roll-forward: {total:.1f} s in all; replay {r.records} transactions, {r.events} events in "
            f"{r.duration_s:.1f} s = {r.events_per_s:.0f} events/s ({r.resent} sent again); {res.check}; "
            f"{res.record.verdict}",
            flush=True,
        )
        src = Path(rec.path)
        for window in a.windows:
            where = scratch_parent(src.stat().st_size, root)
            with served_db(bins, src, where, scratch_prefix=".replay-") as (rc, ep, _):
                d = replay(
                    rc, DeltaLog(log_dir_for(inv)).records(rec.revision + 1, last), endpoint=ep, window=window
                )
            print(
                f"replay again ({window} in flight, etcd data in {where}): {d.events} events in "
                f"{d.duration_s:.1f} s = {d.events_per_s:.0f} events/s ({d.resent} sent again)",
                flush=True,
            )
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
