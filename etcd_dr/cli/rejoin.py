"""`etcd-dr rejoin --host HOST | --all [--plan] [--json] [-i INVENTORY]`: a lost master back after a
recovery (etcd_dr.rejoin.run). Exit 0 every host named is a voter again, 1 a step failed (rolled back) or
the cluster is not safe to change, 2 bad input."""

from __future__ import annotations

import argparse

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import emit, exit_for
from etcd_dr.errors import InputError
from etcd_dr.learner.plan import LearnerOptions
from etcd_dr.rejoin import run as rejoin_mod
from etcd_dr.rejoin.run import RejoinResult, rejoin

HELP = (rejoin_mod.__doc__ or "").split("\n\n")[0].removeprefix("`etcd-dr rejoin`: ")


def _cmd(args: argparse.Namespace) -> int:
    if bool(args.host) == bool(args.all):
        raise InputError("name the master to rejoin with --host HOST, or give --all (not both)")
    inv = inventory_from_args(args)
    opts = LearnerOptions(
        promote=True,
        rejoin=True,
        catchup_timeout=args.catchup_timeout,
        image=args.image,
        binary=args.binary,
    )
    say = None if args.json or args.plan else print
    res = rejoin(inv, None if args.all else [args.host], opts, dry_run=args.plan, say=say)
    emit(args.json, res.to_json, lambda: _text(res, plan=args.plan))
    return exit_for(res)


def _text(res: RejoinResult, *, plan: bool) -> str:
    if plan or any(r.plan.refused for r in res.results):
        lines = [r.plan.render() for r in res.results]
    else:
        lines = [d.sentence for d in res.diverged]
        for r in res.results:
            lines.append(r.verdict)
            if r.join_s is not None:
                lines.append(f"member add to caught up: {r.join_s:.2f} s; total {r.duration_s:.2f} s")
    return "\n".join(lines if res.results else [*lines, res.verdict])


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rejoin",
        help="bring a lost master back after a recovery: set its old member aside, add it as a learner, "
        "promote it",
        description=HELP,
    )
    add_inventory_arg(p)
    p.add_argument("--host", default=None, help="inventory voter (role etcd) that is no member any more")
    p.add_argument("--all", action="store_true", help="every inventory voter that is not a voter member")
    p.add_argument("--plan", action="store_true", help="print the plan and change nothing (dry run)")
    p.add_argument("--catchup-timeout", type=float, default=600.0, help="seconds to wait for catch-up (600)")
    p.add_argument("--json", action="store_true", help="print plans, steps and outcomes as JSON")
    p.add_argument(
        "--image",
        help="docker runtime: the etcd image the rejoined members run (default: the inventory's); after "
        "a recovery onto a newer etcd (a 3.5 learner) older members cannot join: give its image",
    )
    p.add_argument("--binary", help="process runtime: the etcd binary the rejoined members run")
    p.set_defaults(func=_cmd)
