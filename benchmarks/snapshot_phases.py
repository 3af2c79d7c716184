"""Where a fully verified `etcd-dr snapshot` spends its time, phase by phase, at each db size.

Starts a one-member TLS etcd on 127.0.0.1 (as benchmarks/snapshot.py), fills it, and runs the full
`etcd-dr snapshot` in fresh child processes whose functions are wrapped with timestamps (one clock:
time.time() in the child, from the child's own exec). Phases: imports, observe, the stream, the
member's HashKV, `snapshot status`, the throwaway's certificates, `snapshot restore` (with etcd's
own log lines, and its fsyncs when --strace), the throwaway's start until it leads (with its log's
"became leader" line), HashKV on it, its stop, the scratch dir's removal, catalog and exit. A
benchmark: it prints figures and asserts nothing.

    .venv/bin/python benchmarks/snapshot_phases.py --sizes 110,1100 --rounds 3
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
import time
from pathlib import Path

from common import fill, launch
from snapshot import write_inventory

# The child: wrap the functions of the full path, run the CLI in-process, print the timeline as JSON.
CHILD = r"""
import json, os, sys, time
T = [("exec", float(os.environ["PHASES_T0"]), time.time())]
t = time.time()
import etcd_dr.cli, etcd_dr.cli.snapshot, etcd_dr.snapshots.service as svc, shutil, subprocess
LAZY = os.environ.get("PHASES_LAZY")
if not LAZY:  # else only the take's and the service's steps are timed: the rest imports as it would
    import etcd_dr.snapshots.verify, etcd_dr.snapshots.trial, etcd_dr.snapshots.etcdtool
    import etcd_dr.certs, etcd_dr.etcd.localcluster, etcd_dr.etcd.client
if os.environ.get("PHASES_NO_PREFETCH"):
    svc._prepare_verification_meanwhile = lambda versions: None
T.append(("imports" + ("" if LAZY else " (the verification's eagerly)"), t, time.time()))
logs = {}

def wrap(owner, name, label):
    f = getattr(owner, name)
    def w(*a, **k):
        t = time.time()
        try:
            return f(*a, **k)
        finally:
            T.append((label, t, time.time()))
    setattr(owner, name, w)

wrap(etcd_dr.cli.snapshot, "observe", "observe")
wrap(svc, "take_snapshot", "take (stream, fsync, rename)")
wrap(svc, "verify_taken", "verify (all of it)")
wrap(svc, "catalog_add", "catalog")
if not LAZY:
  v, tr, tool, lc = (etcd_dr.snapshots.verify, etcd_dr.snapshots.trial, etcd_dr.snapshots.etcdtool,
                     etcd_dr.etcd.localcluster)
  wrap(v, "binaries_for", "binaries_for")
  wrap(v, "snapshot_status", "snapshot status")
  wrap(etcd_dr.certs, "new_ca", "throwaway CA")
  wrap(etcd_dr.certs, "issue_cert", "throwaway cert")
  wrap(lc.LocalCluster, "_write_certs", "throwaway certs written")
  wrap(tr, "snapshot_restore", "snapshot restore")
  wrap(lc.LocalCluster, "start", "throwaway etcd exec")
  wrap(lc, "wait_for", "throwaway etcd until it leads")
  wrap(etcd_dr.etcd.client.EtcdClient, "hash_kv", "hash_kv")
  wrap(tr, "memory_of", "memory_of")
  wrap(lc.LocalCluster, "stop_all", "throwaway stop")

real_rmtree = shutil.rmtree
def rmtree(p, *a, **k):
    for f in sorted(__import__("pathlib").Path(p).glob("*.log")):
        logs[f.name] = f.read_text(errors="replace")
    t = time.time()
    try:
        return real_rmtree(p, *a, **k)
    finally:
        T.append(("scratch removed", t, time.time()))
shutil.rmtree = rmtree

real_run = subprocess.run
def run(argv, *a, **k):
    trace = os.environ.get("PHASES_STRACE") and "restore" in argv
    if trace:  # its syncs, with their durations, into its log (strace writes them to stderr)
        argv = ["strace", "-f", "-ttt", "-T", "-e", "trace=fsync,fdatasync,openat", *argv]
    p = real_run(argv, *a, **k)
    if "restore" in argv or "status" in argv:
        logs["snapshot restore" if "restore" in argv else "snapshot status"] = p.stderr or ""
    return p
if not LAZY:
    tool.subprocess = type("S", (), {"run": staticmethod(run), "TimeoutExpired": subprocess.TimeoutExpired})

t = time.time()
code = etcd_dr.cli.main(sys.argv[1:])
T.append(("main()", t, time.time()))
print(json.dumps({"code": code, "timeline": T, "logs": logs}))
"""


def etcd_log_times(text: str) -> dict[str, float]:
    """First timestamp (epoch s) of the lines of a zap JSON log that matter here."""
    marks = {
        "restoring snapshot": "restore: begins",
        "restored snapshot": "restore: done",
        "opened backend db": "etcd: backend opened",
        "starting an etcd server": "etcd: starting",
        "became leader": "etcd: became leader",
        "elected leader": "etcd: elected",
        "published local member": "etcd: published",
        "ready to serve client requests": "etcd: serving",
        "serving client traffic securely": "etcd: serving",
        "recovered store from snapshot": "etcd: store recovered",
        "restored mvcc store": "etcd: mvcc restored",
        "added member": "etcd: member added",
    }
    out: dict[str, float] = {}
    for line in text.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        msg = str(d.get("msg", ""))
        for needle, label in marks.items():
            if needle in msg and label not in out:
                ts = d.get("ts")
                if isinstance(ts, str):
                    out[label] = _iso(ts)
                elif isinstance(ts, (int, float)):
                    out[label] = float(ts)
    return out


# strace -ttt -T: "[pid N] 1796531862.454927 fdatasync(8) = 0 <0.796179>" (the stamp is its start) or,
# interrupted by another thread's line, "... <... fdatasync resumed>) = 0 <0.796179>" (its end)
_SLOW_SYNC = re.compile(r"^(?:\[pid\s+\d+\] )?(\d+\.\d+) (<\.\.\. )?(fsync|fdatasync)\b.*<(\d+\.\d+)>$", re.M)


def slow_syncs(text: str, t0: float) -> list[tuple[str, float, float]]:
    out = []
    for m in _SLOW_SYNC.finditer(text):
        stamp, dur = float(m[1]) - t0, float(m[4])
        if dur >= 0.01:
            out.append((f"  [strace] {m[3]}", stamp - dur if m[2] else stamp, stamp if m[2] else stamp + dur))
    return out


def _iso(ts: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="3.4")
    ap.add_argument("--sizes", default="110,1100", help="db sizes in MB (cumulative fills), ascending")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lazy", action="store_true", help="time only the steps: imports as the CLI does")
    ap.add_argument(
        "--ab-prefetch", action="store_true", help="every other round without the verification's prefetch"
    )
    ap.add_argument("--keep-logs", metavar="FILE", help="the last round's tool and etcd logs, as JSON")
    ap.add_argument("--strace", action="store_true", help="the restore's syncs over 10 ms, from strace")
    args = ap.parse_args()
    bins, root, cluster = launch(args.version)
    try:
        inv = write_inventory(cluster, root)
        filled = 0
        for mb in (int(x) for x in args.sizes.split(",")):
            secs = fill(cluster, filled, mb - filled)
            filled = mb
            with cluster.client() as c:
                db = c.status(cluster.endpoints[0]).db_size
            print(f"etcd {bins.version}: db {db / 1e6:.0f} MB (filled in {secs:.1f} s)", flush=True)
            rows: dict[str, list[float]] = {}
            for i in range(args.rounds):
                t0 = time.time()
                off = args.ab_prefetch and i % 2 == 1
                env = {
                    **os.environ,
                    "PHASES_T0": repr(t0),
                    "PHASES_STRACE": "1" if args.strace else "",
                    "PHASES_LAZY": "1" if args.lazy else "",
                    "PHASES_NO_PREFETCH": "1" if off else "",
                }
                argv = ["snapshot", "-i", str(inv), "--json", "--no-prune", "--progress", "never"]
                p = subprocess.run(
                    [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, check=False
                )
                wall = time.time() - t0
                if p.returncode != 0:
                    raise SystemExit(f"child exited {p.returncode}: {p.stderr[-1500:]}")
                res = json.loads(p.stdout.strip().splitlines()[-1])
                if args.keep_logs:
                    Path(args.keep_logs).write_text(json.dumps(res["logs"], indent=1))
                rec = json.loads("\n".join(p.stdout.strip().splitlines()[:-1]))
                Path(rec["path"]).unlink()
                print(f"-- round: wall {wall:.3f} s, verdict {rec['verdict']}")
                events = [(lbl, a - t0, b - t0) for lbl, a, b in res["timeline"]]
                for name, text in res["logs"].items():
                    events += slow_syncs(text, t0)
                    for lbl, ts in etcd_log_times(text).items():
                        events.append((f"  [{name}] {lbl}", ts - t0, ts - t0))
                counts: dict[str, int] = {}
                for lbl, a, b in sorted(events, key=lambda e: (e[1], e[2])):
                    n = counts[lbl] = counts.get(lbl, 0) + 1
                    key = lbl if n == 1 else f"{lbl} #{n}"
                    key += " [no prefetch]" if off else ""
                    rows.setdefault(key + " (start)", []).append(a)
                    rows.setdefault(key + " (dur)", []).append(b - a)
                    print(f"  {a:7.3f} -> {b:7.3f}  {b - a:7.3f}  {key}")
                rows.setdefault("wall" + (" [no prefetch]" if off else ""), []).append(wall)
            print(f"medians over {args.rounds} rounds, db {db / 1e6:.0f} MB:")
            for k, vals in rows.items():
                print(f"  {statistics.median(vals):8.3f}  {k}")
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
