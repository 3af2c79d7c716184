"""The delta log's cost and speed, side by side in one run, on a 3-member TLS etcd on loopback:

  writer    one client writing puts back to back for --seconds, with and without the watcher
            (`Streamer`, the code `etcd-dr backup stream` runs, in its own process as in
            production), alternating --rounds times: puts/s and the p50/p99 latency of a put
  replay    the revisions the watcher logged, replayed into the snapshot taken before the first
            round (restored and served by a throwaway etcd, as `snapshot roll-forward` does): events/s,
            and the check against the log

A benchmark: it prints figures and asserts nothing about speed.

    .venv/bin/python benchmarks/pitr.py --etcd 3.4 --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.deltalog import DeltaLog
from etcd_dr.deltalog.replay import WINDOW, check_against_log, replay, scratch_parent
from etcd_dr.etcd.localcluster import LocalCluster, wait_for
from etcd_dr.etcdbin import ensure_binaries
from etcd_dr.snapshots.trial import served_db

CHILD = """
import sys
from pathlib import Path
from etcd_dr.deltalog.stream import Streamer
from etcd_dr.etcd import EtcdClient
d, snap, *eps = sys.argv[1:]
p = Path(d)
c = EtcdClient(eps, ca_cert=p / "ca.pem", cert=p / "c.pem", key=p / "c-key.pem")
Streamer(c, eps, p / "log", "bench", snapshot_revision=lambda: int(snap)).run()
"""


def write_round(c, seconds: float, tag: str) -> tuple[int, list[float], int]:
    lat: list[float] = []
    end = time.monotonic() + seconds
    i = rev = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        rev = c.put(f"/bench/{tag}/{i % 1000:04d}", f"{tag}-{i}-" + "x" * 200).revision
        lat.append(time.perf_counter() - t0)
        i += 1
    return i, lat, rev


def _status(work: Path) -> int | None:
    from etcd_dr.deltalog.stream import read_status

    try:
        st = read_status(work / "log")
    except Exception:
        return None
    return st.last_revision if st is not None and st.state == "streaming" else None


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--etcd", default="3.4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument(
        "--windows", type=lambda v: [int(x) for x in v.split(",")], default=[1, WINDOW],
        help="replay with each of these numbers of transactions in flight (default: 1 and %(default)s)",
    )  # fmt: skip
    a = ap.parse_args()
    bins = ensure_binaries(a.etcd)
    root = Path(tempfile.mkdtemp(prefix="etcd-dr-bench-pitr-"))
    ca = new_ca()
    cluster = LocalCluster.launch(
        bins,
        root,
        ca,
        issue_cert(ca, "etcd-member", ips=("127.0.0.1",)),
        issue_cert(ca, "bench-client", server=False),
        size=3,
    )
    work = root / "work"
    work.mkdir()
    for name, data in (("ca.pem", ca.cert_pem), ("c.pem", cluster.client_pair.cert_pem),
                       ("c-key.pem", cluster.client_pair.key_pem)):  # fmt: skip
        (work / name).write_bytes(data)
    try:
        with cluster.client(request_timeout=30.0) as c:
            c.put("/bench/start", "0")
            snap = c.snapshot(cluster.endpoints[0], work / "start.db")
            start = snap.revision_exact
            assert start is not None, "writes landed while the start snapshot streamed"
            rows: dict[str, list[tuple[int, list[float]]]] = {"without": [], "with": []}
            last = start
            for r in range(a.rounds):
                n, lat, last = write_round(c, a.seconds, f"without{r}")  # no watcher process at all
                rows["without"].append((n, lat))
                # the watcher resumes from the log on disk, catches up, then the round is timed
                child = subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(work), str(start), *cluster.endpoints]
                )
                try:
                    wait_for("the watcher caught up", lambda at=last: (_status(work) or 0) >= at, 60)
                    n, lat, last = write_round(c, a.seconds, f"with{r}")
                    rows["with"].append((n, lat))
                    wait_for("the log at the end", lambda at=last: (_status(work) or 0) >= at, 60)
                finally:
                    child.terminate()  # SIGTERM: it seals its open segment
                    child.wait(30)
        print(
            f"etcd {bins.version}, 3 members on loopback, {a.rounds} x {a.seconds:g} s per mode, one writer"
        )
        for mode, rs in rows.items():
            rates = [n / a.seconds for n, _ in rs]
            lat = [x for _, ls in rs for x in ls]
            print(
                f"  {mode:8s} watcher: {statistics.median(rates):7.0f} puts/s median "
                f"(rounds {', '.join(f'{x:.0f}' for x in rates)})"
                f"  p50 {pct(lat, 0.5) * 1e3:5.2f} ms  p99 {pct(lat, 0.99) * 1e3:5.2f} ms"
            )
        log = DeltaLog(work / "log")
        segs = log.segments()
        print(
            f"  log: revisions {log.spans()}, {len(segs)} sealed segments, "
            f"{sum(s.path.stat().st_size for s in segs) / 1e6:.1f} MB"
        )
        for where in (work, scratch_parent((work / "start.db").stat().st_size, work)):
            for window in a.windows:
                with served_db(bins, work / "start.db", where, scratch_prefix=".replay-") as (rc, ep, _):
                    done = replay(rc, log.records(start + 1, last), endpoint=ep, window=window)
                    t0 = time.monotonic()
                    check = check_against_log(rc, log, start, last)
                    took = time.monotonic() - t0
                print(
                    f"  replay (etcd data in {where}, {window} in flight): {done.records} transactions, "
                    f"{done.events} events in {done.duration_s:.2f} s = {done.events_per_s:.0f} events/s "
                    f"({done.resent} sent again); check against the log {took:.2f} s ({check})"
                )
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
