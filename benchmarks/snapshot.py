"""`etcd-dr snapshot` vs `etcdctl snapshot save`: wall time and peak RSS, at ~100 MB and >= 1 GiB.

Starts a one-member TLS etcd on 127.0.0.1 (LocalCluster, ports 23000-23999), fills it with 1 MiB
random values by parallel puts (the fill time is printed), writes an inventory for it, and then, at
each size, alternates fresh processes of

  etcdctl   `etcdctl snapshot save FILE`
  take      `etcd-dr snapshot --no-verify` (stream + trailing-sha256 check + fsync + catalog)
  full      `etcd-dr snapshot` (also: sha256 re-read, `snapshot status`, trial restore into a
            throwaway etcd + HashKV at the snapshot's revision on both), fewer rounds
  before    with --baseline REF: `take` (and `full`, as full-before) of that git ref's etcd-dr (git
            archive, this venv), in the same rounds
  client    with --floor: a process that imports only etcd-dr's gRPC client and streams the
            snapshot with it (benchmarks/snapshot_client.py's child), leaving as `take` does: what
            a Python snapshotter costs at least, with no inventory, catalog or audit

and prints medians. Peak RSS comes from /usr/bin/time (Debian package `time`): wait4 on a child
forked from this big interpreter would report at least the parent's RSS. For `full` it includes the
throwaway etcd (a reaped descendant), whose RSS counts the db pages it maps. A benchmark: it prints
figures and asserts nothing about speed.

    .venv/bin/python benchmarks/snapshot.py --sizes 110,1100 --rounds 5 --full-rounds 3
    .venv/bin/python benchmarks/snapshot.py --sizes 110 --rounds 5 --full-rounds 0 --baseline main
    .venv/bin/python benchmarks/snapshot.py --sizes 110 --rounds 8 --full-rounds 8 --floor
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import ETCDCTL_ENV, etcdctl_snapshot_argv, fill, launch, run_child, summary
from snapshot_client import CHILD as CLIENT_ONLY

from etcd_dr.etcd.localcluster import LocalCluster

ETCD_DR = [sys.executable, "-m", "etcd_dr.cli", "snapshot"]
TAKE = ["--json", "--no-verify", "--no-offsite", "--no-prune", "--progress", "never"]
HERE = Path(__file__).resolve().parent


def baseline_tree(ref: str) -> Path:
    """That git ref's tree in a temp dir (`git archive`), run with this venv's packages."""
    d = Path(tempfile.mkdtemp(prefix="etcd-dr-baseline-"))
    git = ["git", "-C", str(HERE.parent), "archive", ref]
    archive = subprocess.run(git, capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {ref}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive.stdout, check=True)
    # compiled as scripts/install.sh compiles this tree: the rows then compare code, not whether
    # Python compiles it from source at every start (PYTHONDONTWRITEBYTECODE)
    compile_tree = [sys.executable, "-m", "compileall", "-q", str(d / "etcd_dr")]
    subprocess.run(compile_tree, stdout=subprocess.DEVNULL, check=True)
    return d


def write_inventory(cluster: LocalCluster, d: Path) -> Path:
    (d / "keys").mkdir(parents=True, exist_ok=True)
    (d / "keys/id").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")  # never used: no SSH here
    (d / "keys/known_hosts").write_text("")
    for name, data in (
        ("ca.pem", cluster.ca.cert_pem),
        ("client.pem", cluster.client_pair.cert_pem),
        ("client-key.pem", cluster.client_pair.key_pem),
    ):
        (d / name).write_bytes(data)
    node = cluster.nodes[0]
    inv = {
        "cluster": "bench",
        "ssh": {"key_file": "keys/id", "known_hosts": "keys/known_hosts"},
        "etcd": {
            "runtime": "process",
            "client_port": node.client_port,
            "peer_port": node.peer_port,
            "client": {"ca_cert": "ca.pem", "cert": "client.pem", "key": "client-key.pem"},
        },
        "snapshots": {"dir": "snapshots"},
        "hosts": [{"name": "m1", "address": "127.0.0.1", "roles": ["etcd"]}],
    }
    path = d / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="3.4")
    ap.add_argument("--sizes", default="110,1100", help="db sizes in MB (cumulative fills), ascending")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--full-rounds", type=int, default=3)
    ap.add_argument("--baseline", metavar="REF", help="also `take` with this git ref's etcd-dr (e.g. main)")
    ap.add_argument(
        "--floor", action="store_true", help="also a process that imports only the gRPC client and streams"
    )
    args = ap.parse_args()
    base = baseline_tree(args.baseline) if args.baseline else None
    # `python -m` puts its cwd first on sys.path, PYTHONPATH goes ahead of this tree's editable install
    base_env = {**os.environ, "PYTHONPATH": str(base)} if base else None

    bins, root, cluster = launch(args.version)
    try:
        inv = write_inventory(cluster, root)
        snapdir = root / "snapshots"
        pki = root / "pki"
        ep = cluster.endpoints[0]
        ctl = etcdctl_snapshot_argv(bins, ep, pki)
        filled = 0
        for mb in (int(x) for x in args.sizes.split(",")):
            secs = fill(cluster, filled, mb - filled)
            with cluster.client() as c:
                db = c.status(ep).db_size
            print(
                f"etcd {bins.version}: filled {mb - filled} MB in {secs:.1f} s; db {db / 1e6:.0f} MB",
                flush=True,
            )
            filled = mb
            res: dict[str, list[tuple[float, int]]] = {
                "etcdctl": [], "client": [], "take": [], "before": [], "full": [], "full-before": []
            }  # fmt: skip
            full_detail: list[str] = []
            for i in range(args.rounds):
                dest = root / "ctl.db"
                w, rss, _ = run_child([*ctl, str(dest)], ETCDCTL_ENV)
                res["etcdctl"].append((w, rss))
                dest.unlink()
                if args.floor:
                    w, rss, _ = run_child([sys.executable, "-c", CLIENT_ONLY, ep, str(pki), str(dest)])
                    res["client"].append((w, rss))
                    dest.unlink()
                # this tree and the baseline take turns at going first after etcdctl
                takes = [("take", None, None), *([("before", base_env, base)] if base else [])]
                for name, env, cwd in takes[:: 1 if i % 2 == 0 else -1]:
                    w, rss, out = run_child([*ETCD_DR, "-i", str(inv), *TAKE], env, cwd=cwd)
                    res[name].append((w, rss))
                    Path(json.loads(out)["path"]).unlink()
                fulls = [("full", None, None), *([("full-before", base_env, base)] if base else [])]
                for name, env, cwd in fulls[:: 1 if i % 2 == 0 else -1] if i < args.full_rounds else ():
                    w, rss, out = run_child(
                        [*ETCD_DR, "-i", str(inv), "--json", "--no-prune", "--progress", "never"],
                        env,
                        cwd=cwd,
                    )
                    rec = json.loads(out)
                    if rec["verdict"] != "verified":
                        raise SystemExit(f"not verified: {rec['reason']}")
                    res[name].append((w, rss))
                    full_detail.append(rec["reason"])
                    Path(rec["path"]).unlink()
            print(f"db {db / 1e6:.0f} MB, alternating, {args.rounds} rounds ({args.full_rounds} full):")
            for name, rows in res.items():
                if rows:
                    print(summary(name, rows))
            ctl_s = statistics.median(r[0] for r in res["etcdctl"])
            ratio = statistics.median(r[0] for r in res["take"]) / ctl_s
            for name in ("client", "before"):
                if res[name]:
                    other = statistics.median(r[0] for r in res[name])
                    print(f"  {name}/etcdctl wall ratio {other / ctl_s:.2f}")
            if res["full"]:
                print(f"  full/etcdctl wall ratio {statistics.median(r[0] for r in res['full']) / ctl_s:.2f}")
            print(
                f"  take/etcdctl wall ratio {ratio:.2f}; "
                f"full verdict: {full_detail[-1] if full_detail else '-'}"
            )
            shutil.rmtree(snapdir, ignore_errors=True)
        _, base_rss, _ = run_child([sys.executable, "-c", "import etcd_dr.cli.snapshot"])
        print(f"baseline: python + etcd-dr imports peak RSS {base_rss / 1e6:.1f} MB")
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
