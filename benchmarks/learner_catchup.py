"""Learner catch-up on the lab: time from `member add --learner` + start to "caught up", by db size.

Runs the product's own learner add (etcd_dr.learner.add_learner: certificate, member add, start in
the inventory's runtime, wait until caught up) against a lab, at each db size, then takes the
learner out again (member removed, etcd renamed aside, data dir moved aside). The db is grown with
1 MiB random values (parallel puts; the fill time is printed). A benchmark: it prints figures and
asserts nothing about speed.

    etcd-dr lab up                                   # 3.4 voters (node1 a worker)
    .venv/bin/python benchmarks/learner_catchup.py --sizes 100,1024 --image lab/etcd:3.5.16

Without node1 as etcd-learner in the inventory, a copy of it that says so (running --image, default
the voters' image) is written to a temporary directory. The keys written stay in the lab's etcd
(under /bench/learner/): take the lab down or rebuild it afterwards.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etcd_dr.cli.common import inventory_path
from etcd_dr.inventory import Inventory, inventory_to_dict, load_inventory
from etcd_dr.learner import LearnerOptions, add_learner, remove_learner
from etcd_dr.state import client_for, observe

MIB = 1 << 20


def learner_inventory(inv: Inventory, host: str, image: str | None, tmp: Path) -> Inventory:
    """inv itself when host is an etcd-learner there, else a copy that makes it one."""
    if inv.host(host).is_learner and not image:
        return inv
    d = inventory_to_dict(inv)
    for h in d["hosts"]:
        if h["name"] == host:
            h["roles"] = ["etcd-learner", *[r for r in h["roles"] if r not in ("etcd", "etcd-learner")]]
            if image:
                h["etcd_image"] = image
    path = tmp / "inventory.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return load_inventory(path)


def leader_db_size(inv: Inventory) -> int:
    st = observe(inv, check_ssh=False)
    leader = st.member(st.leader) if st.leader else None
    if leader is None or leader.status is None:
        raise SystemExit(f"no leader: {st.verdict}")
    return leader.status.db_size


def fill_to(inv: Inventory, target: int, threads: int = 8) -> tuple[int, float]:
    """Put 1 MiB random values until the leader's db is >= target bytes. Returns (db size, seconds)."""
    t0 = time.monotonic()
    size = leader_db_size(inv)
    n = 0
    with client_for(inv) as c:
        while size < target:
            batch = max(1, min(256, (target - size) // MIB + 1))
            with cf.ThreadPoolExecutor(threads) as pool:
                list(
                    pool.map(
                        lambda i: c.put(f"/bench/learner/{time.time_ns()}-{i}", os.urandom(MIB), timeout=30),
                        range(n, n + batch),
                    )
                )
            n += batch
            size = leader_db_size(inv)
    return size, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", "--inventory", type=Path, default=None, help="default: the lab's")
    ap.add_argument("--host", default="node1")
    ap.add_argument("--image", default=None, help="the learner's image (docker runtime)")
    ap.add_argument("--sizes", default="100,1024", help="db sizes in MiB, ascending (default 100,1024)")
    ap.add_argument("--rounds", type=int, default=2, help="learner adds per size (default 2)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="etcd-dr-bench-") as tmp:
        base = load_inventory(inventory_path(args.inventory))
        inv = learner_inventory(base, args.host, args.image, Path(tmp))
        was_member = any(m.host == args.host and m.in_member_list for m in observe(inv).members)
        if was_member:
            print(f"taking {args.host} out first: {remove_learner(inv, args.host).sentence}")
        rows = []
        try:
            for mib in sizes:
                db, fill_s = fill_to(inv, mib * MIB)
                print(f"db {db / MIB:.0f} MiB (filled in {fill_s:.1f} s)", flush=True)
                for r in range(args.rounds):
                    res = add_learner(inv, args.host, LearnerOptions(catchup_timeout=1800))
                    if not res.ok:
                        raise SystemExit(f"learner add failed: {res.verdict}")
                    steps = {x.step.action.value: x.duration_s for x in res.results}
                    rows.append((mib, db, r + 1, res.join_s, res.caught_up_s, steps, res.duration_s))
                    print(
                        f"  round {r + 1}: member add -> caught up {res.join_s:.2f} s (start -> caught up "
                        f"{res.caught_up_s:.2f} s; wait {steps['wait-caught-up']:.2f} s); end to end "
                        f"{res.duration_s:.2f} s",
                        flush=True,
                    )
                    remove_learner(inv, args.host)
        finally:
            if was_member:
                back = add_learner(inv, args.host)
                print(f"{args.host} back as it was: {back.verdict}")
    print("\nsize_MiB  db_MiB  rounds  add->caught_up_s(median)  start->caught_up_s  wait_s  end_to_end_s")
    for mib in sizes:
        rs = [x for x in rows if x[0] == mib]
        med = statistics.median
        print(
            f"{mib:8d}  {rs[0][1] / MIB:6.0f}  {len(rs):6d}  {med(x[3] for x in rs):24.2f}  "
            f"{med(x[4] for x in rs):17.2f}  {med(x[5]['wait-caught-up'] for x in rs):6.2f}  "
            f"{med(x[6] for x in rs):12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
