"""`etcd-dr check`: is the cluster ready for a disaster? Structured results under one deadline, a
table (or --json), and a hint under each failure. Exit 0 when no critical check fails (warnings
allowed), 1 when one does, 2 on bad input."""

from __future__ import annotations

import argparse

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args, table
from etcd_dr.cli.result import emit, exit_for
from etcd_dr.errors import InputError
from etcd_dr.readiness import DEFAULT_DEADLINE_S, Readiness, check_readiness, result_word

HEADERS = ("CHECK", "HOST", "RESULT", "DETAIL")


def render(r: Readiness) -> str:
    rows = [(x.check, x.host or "-", result_word(x.ok, x.critical), x.detail) for x in r.results]
    hints = [f"  {x.check} {x.host or ''}".rstrip() + f": {x.hint}" for x in r.results if not x.ok and x.hint]
    out = table(HEADERS, rows)
    if hints:
        out += "\nwhat to do:\n" + "\n".join(hints)
    return f"{out}\n{r.summary} ({r.duration_s:.1f} s, deadline {r.deadline_s:g} s)"


def run(args: argparse.Namespace) -> int:
    if not 0 < args.deadline <= 600:
        raise InputError(f"--deadline {args.deadline:g}: give seconds between 0 and 600")
    inv = inventory_from_args(args)
    r = check_readiness(inv, deadline_s=args.deadline)
    emit(args.json, r.to_json, lambda: render(r))
    return exit_for(r.ok)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="readiness for a disaster: quorum, learner, snapshot, certs, clocks, disk"
    )
    add_inventory_arg(p)
    p.add_argument("--json", action="store_true", help='print {"ok", "critical_failures", "results": [...]}')
    p.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_S,
        metavar="SECONDS",
        help="one deadline for every probe; what has not answered by then fails "
        f"(default {DEFAULT_DEADLINE_S:g})",
    )
    p.set_defaults(func=run)
