"""`etcd-dr recover [-i INVENTORY] [--plan] [--yes] [--json] [--method ...] [--target HOST]
[--confirm-down HOST]...`: observe, fence, plan, confirm, execute (etcd_dr.recovery.run).

Exit codes: 0 recovered (or --plan), 1 a step failed, another recovery runs, or the cluster is
not in a state to recover (quorum held, a voter not fenced), 2 not confirmed or bad input (nothing
changed)."""

from __future__ import annotations

import argparse
import getpass
import sys

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import emit, exit_for
from etcd_dr.plans import Plan
from etcd_dr.recovery.plan import VoterMethod
from etcd_dr.recovery.run import Attestation, RecoverResult, RecoverStatus, recover


def _ask(plan: Plan) -> bool:
    print(plan.render())
    answer = input(f"type {plan.cluster} to execute this recovery: ").strip()
    return answer == plan.cluster


def cmd_recover(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    say = (lambda _m: None) if args.json else print
    confirm = _ask if (not args.yes and not args.json and sys.stdin.isatty()) else None
    down = tuple(dict.fromkeys(args.confirm_down or ()))
    attestation = Attestation(down, getpass.getuser(), "--confirm-down") if down else None
    res = recover(
        inv,
        yes=args.yes,
        plan_only=args.plan,
        say=say,
        confirm=confirm,
        method=VoterMethod(args.method),
        target=args.target,
        attestation=attestation,
    )
    emit(args.json, res.to_json, lambda: _text(res, asked=confirm is not None))
    if res.status not in (RecoverStatus.RECOVERED, RecoverStatus.PLANNED):
        print(f"etcd-dr: {res.reason}", file=sys.stderr)
    return exit_for(res)


def _text(res: RecoverResult, *, asked: bool) -> str | None:
    """The outcome for people; None when there is nothing to add (the plan was shown when asked)."""
    if res.status in (RecoverStatus.PLANNED, RecoverStatus.NOT_CONFIRMED):
        return None if asked else res.plan.render()
    if res.status is RecoverStatus.RECOVERED:
        keys = f", {res.keys} keys, revision {res.revision}" if res.keys is not None else ""
        return f"recovered in {res.timings['total']:.2f} s{keys}: {res.reason}"
    if res.status is RecoverStatus.FAILED:
        return f"FAILED after {res.timings['total']:.2f} s"
    return None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recover",
        help="recover etcd after quorum loss (from the most advanced survivor, a learner or a snapshot)",
        description="Observe the cluster, gather fencing evidence, plan the recovery and, once "
        "confirmed, execute it. Refused while quorum holds or while another voter may still take part. "
        "An unfinished recovery (journal beside the audit log) is resumed, not planned again.",
    )
    add_inventory_arg(p)
    p.add_argument("--plan", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="execute without asking")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--method",
        choices=[str(m) for m in VoterMethod],
        default=str(VoterMethod.FORCE_NEW_CLUSTER),
        help="how a surviving voter becomes a one-member cluster: --force-new-cluster once (default; "
        "lost members that come back are told they were removed) or restore its own db (a new cluster "
        "id: only when the lost members will not come back, or are rejoined one at a time)",
    )
    p.add_argument(
        "--target",
        metavar="HOST",
        help="snapshot restore only: the voter to restore onto (default: the first voter that answers SSH)",
    )
    p.add_argument(
        "--confirm-down",
        metavar="HOST",
        action="append",
        help="attest that this lost voter is down (repeatable): recorded in the audit log with your "
        "user name, and the plan states the risk (if it still runs, the cluster forks); only for a "
        "voter with no power-off or stopped-etcd evidence, never for one that answers anyone",
    )
    p.set_defaults(func=cmd_recover)
