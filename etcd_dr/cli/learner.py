"""`etcd-dr learner add|remove`: exit 0 ok, 1 failed (rolled back) or refused as unsafe, 2 bad input."""

from __future__ import annotations

import argparse
import sys

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import emit, exit_for, plan_exit
from etcd_dr.inventory_edit import RoleEdit, apply_edit, learner_role_edit
from etcd_dr.learner.add import LearnerAddResult, add_learner
from etcd_dr.learner.plan import LearnerOptions
from etcd_dr.learner.undo import remove_learner

ADD_HELP = """Add HOST (role etcd-learner in the inventory) to the cluster as a learner: issue its
certificate if missing, `member add --learner` (retrying `unhealthy cluster`), start etcd in the
inventory's runtime with --initial-cluster-state existing, wait until it has caught up, and with
--promote make it a voter. Each step checks its postcondition first, so a re-run continues where an
interrupted one stopped. On failure the member is rolled back (etcd stopped and renamed aside, member
removed, data dir moved to <data_dir>.bak-<UTC timestamp>)."""


def _cmd_add(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    edit = learner_role_edit(inv, args.host)  # None: the inventory already says what it is
    applied = edit is not None and args.update_inventory and not args.plan  # a dry run changes nothing
    err = sys.stderr if args.json else sys.stdout
    if applied:
        inv, backup = apply_edit(edit)
        # with --json, stdout holds only the JSON: the change is still said, on stderr
        print(f"{edit.diff}updated {edit.path} (the old one kept as {backup.name})", file=err)
    opts = LearnerOptions(
        promote=args.promote,
        image=args.image,
        binary=args.binary,
        ips=tuple(args.ip),
        dns=tuple(args.dns),
        max_lag=args.max_lag,
        catchup_timeout=args.catchup_timeout,
    )
    say = None if args.json or args.plan else print
    res = add_learner(inv, args.host, opts, dry_run=args.plan, say=say)
    edited = {"inventory_edit": {"diff": edit.diff, "applied": applied}} if edit else {}
    emit(args.json, lambda: res.to_json() | edited, lambda: _text(res, edit, plan=args.plan))
    return plan_exit(res.plan, res.ok)


def _text(res: LearnerAddResult, edit: RoleEdit | None, *, plan: bool) -> str:
    if plan or res.plan.refused:
        out = res.plan.render()
        if edit is not None and res.plan.refused:
            how = "--update-inventory applies it" + (" (not with --plan)" if plan else "")
            diff = edit.diff.removesuffix("\n")  # print() ends the line
            out += f"\nthe inventory change to make ({how}):\n{diff}"
        return out
    if res.join_s is None:
        return res.verdict
    return f"{res.verdict}\nmember add to caught up: {res.join_s:.2f} s; total {res.duration_s:.2f} s"


def _cmd_remove(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    rb = remove_learner(inv, args.host)
    emit(args.json, rb.to_json, lambda: f"{args.host}: {rb.sentence}")
    return exit_for(rb.ok)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("learner", help="add (and promote) an etcd learner, or take it out again")
    lsub = p.add_subparsers(dest="learner_command", metavar="ACTION", required=True)

    a = lsub.add_parser(
        "add", help="add HOST as an etcd learner (optionally promote it)", description=ADD_HELP
    )
    add_inventory_arg(a)
    a.add_argument("--host", required=True, help="inventory host (role etcd-learner)")
    a.add_argument("--promote", action="store_true", help="promote it to voter once caught up")
    a.add_argument(
        "--update-inventory",
        action="store_true",
        help="add etcd-learner to HOST's roles in the inventory file (comments kept; diff printed)",
    )
    a.add_argument("--plan", action="store_true", help="print the plan and change nothing (dry run)")
    a.add_argument("--image", default=None, help="image the learner runs (docker; default: inventory)")
    a.add_argument("--binary", default=None, help="etcd binary on the host (process; default: inventory)")
    a.add_argument("--ip", action="append", default=[], help="extra IP SAN for its certificate")
    a.add_argument("--dns", action="append", default=[], help="extra DNS SAN for its certificate")
    a.add_argument(
        "--max-lag",
        type=int,
        default=None,
        help="caught up within N raft entries (default: check.learner_max_lag)",
    )
    a.add_argument("--catchup-timeout", type=float, default=600.0, help="seconds to wait for catch-up (600)")
    a.add_argument("--json", action="store_true", help="print plan, steps and outcome as JSON")
    a.set_defaults(func=_cmd_add)

    r = lsub.add_parser(
        "remove",
        help="take HOST's member out: stop and rename its etcd, remove the member, move its data dir aside",
    )
    add_inventory_arg(r)
    r.add_argument("--host", required=True, help="inventory host (not a voter of the inventory)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_remove)
