"""`etcd-dr diverged export|replay`: the writes an old member acknowledged after the fork, out to a
file for review and back into the recovered cluster.

Exit codes: 0 done (or planned), 1 a write was not put (changed since the export, or meanwhile),
2 bad input or a replay not confirmed with --yes (nothing was changed).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import Exit, emit, exit_for
from etcd_dr.diverged.compare import key_text
from etcd_dr.diverged.read import TS, newest_report, state_dir
from etcd_dr.diverged.replay import Act, export, load, replay
from etcd_dr.errors import InputError
from etcd_dr.state import observe


def _cmd_export(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    host = inv.host(args.host).name
    data_dir = args.data_dir
    if data_dir is None:
        rep = newest_report(inv, host)
        if rep is None or not rep.get("data_dir"):
            raise InputError(
                f"--data-dir: no saved report for {host} in {state_dir(inv)} names its kept data dir; "
                f"give the old data dir on {host} (e.g. {inv.etcd.data_dir}.bak-<ts>)"
            )
        data_dir = str(rep["data_dir"])
    out = args.output or Path(f"diverged-{host}-{dt.datetime.now(dt.UTC).strftime(TS)}.jsonl")
    writes, why = export(inv, host, data_dir, observe(inv), out)
    keys = [key_text(w.key) for w in writes]
    body = {"host": host, "data_dir": data_dir, "file": str(out), "count": len(writes), "keys": keys}
    emit(args.json, lambda: {**body, "sentence": why}, lambda: why)
    return Exit.OK


def _cmd_replay(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    writes = load(args.file)
    apply = args.yes and not args.plan
    rows = replay(inv, observe(inv), writes, apply=apply, force=args.force)
    counts = {a: sum(r.act is a for r in rows) for a in Act}
    head = (
        f"{len(rows)} writes in {args.file}: {counts[Act.PUT]} to put, "
        + (f"{counts[Act.DELETE]} to delete, " if counts[Act.DELETE] else "")
        + f"{counts[Act.SAME]} already there, {counts[Act.CHANGED]} changed since the export (skipped; "
        "--force puts them)"
    )
    failed = [r for r in rows if apply and r.act.acts and r.outcome.startswith("not ")]
    emit(
        args.json,
        lambda: {"applied": apply, "summary": head, "rows": [r.to_json() for r in rows]},
        lambda: "\n".join([head, *("  " + r.render() for r in rows)]),
    )
    if args.plan:
        return Exit.OK
    if not args.yes:
        print("not confirmed: nothing was changed; pass --yes to put them", flush=True)
        return Exit.BAD_INPUT
    return exit_for(not (failed or counts[Act.CHANGED]))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diverged",
        help="writes an old member holds that the recovered cluster lacks: export them, replay them",
        description=__doc__.split("\n\n")[0],
    )
    dsub = p.add_subparsers(dest="diverged_command", metavar="ACTION", required=True)
    e = dsub.add_parser("export", help="write an old member's diverged writes as JSON lines")
    add_inventory_arg(e)
    e.add_argument("--host", required=True, help="inventory host whose old data dir to read")
    e.add_argument(
        "--data-dir",
        default=None,
        help="the old data dir on the host (default: where the newest rejoin report says it was kept)",
    )
    e.add_argument("-o", "--output", type=Path, default=None, help="file (default: diverged-HOST-TS.jsonl)")
    e.add_argument("--json", action="store_true", help="print the outcome as JSON")
    e.set_defaults(func=_cmd_export)

    r = dsub.add_parser("replay", help="put exported writes back into the recovered cluster, after review")
    add_inventory_arg(r)
    r.add_argument("file", type=Path, help="a file written by `etcd-dr diverged export`")
    r.add_argument("--plan", action="store_true", help="show what would be put and change nothing")
    r.add_argument("--yes", action="store_true", help="put them (without it: the plan, nothing changed)")
    r.add_argument("--force", action="store_true", help="also put keys that changed since the export")
    r.add_argument("--json", action="store_true", help="print the plan and outcomes as JSON")
    r.set_defaults(func=_cmd_replay)
