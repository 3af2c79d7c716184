"""`etcd-dr snapshot`: take (the default), list, prune, verify.

    etcd-dr snapshot [take] [-i INVENTORY] [--json] [--learner] [--no-quorum-ok] [--no-restore]
                     [--no-verify] [--no-offsite] [--no-prune]
    etcd-dr snapshot list [-i INVENTORY] [--json] [--all-clusters]
    etcd-dr snapshot prune [-i INVENTORY] [--dry-run] [--json]
    etcd-dr snapshot verify PATH-or-ID [-i INVENTORY] [--json] [--no-restore] [--etcd-version V]

Exit 0 ok (a VERIFIED snapshot, and its off-site copy verified; with --no-verify: cataloged), 1 failed or not
verified, 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from etcd_dr.cliutil import add_inventory_arg, human_bytes, inventory_from_args, table
from etcd_dr.snapshots import service
from etcd_dr.snapshots.record import SnapshotRecord
from etcd_dr.state import observe


def _take_args(p: argparse.ArgumentParser) -> None:
    add_inventory_arg(p)
    p.add_argument("--json", action="store_true", help="print the catalog record of the new snapshot")
    p.add_argument("--learner", action="store_true", help="a learner may be the source")
    p.add_argument(
        "--no-quorum-ok",
        action="store_true",
        help="with quorum lost, snapshot the most advanced survivor (nobody is known to be in sync)",
    )
    p.add_argument("--no-restore", action="store_true", help="skip the trial restore (verdict: unverified)")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="only take and catalog (verdict: unverified); for getting a copy out fast during an incident",
    )
    p.add_argument("--no-offsite", action="store_true", help="do not copy off-site")
    p.add_argument("--no-prune", action="store_true", help="do not apply retention afterwards")
    p.add_argument("--progress", choices=("auto", "never"), default="auto", help="progress on stderr")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="take, verify, catalog, copy off-site and prune etcd snapshots")
    _take_args(p)
    p.set_defaults(func=_cmd_take)
    s = p.add_subparsers(dest="snapshot_command", metavar="ACTION")
    t = s.add_parser("take", help="take a verified snapshot (the default)")
    _take_args(t)
    t.set_defaults(func=_cmd_take)
    ls = s.add_parser("list", help="the catalog")
    add_inventory_arg(ls)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all-clusters", action="store_true", help="every cluster in the catalog's directory")
    ls.set_defaults(func=_cmd_list)
    pr = s.add_parser("prune", help="delete what the retention policy does not keep")
    add_inventory_arg(pr)
    pr.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_cmd_prune)
    v = s.add_parser("verify", help="verify a stored snapshot again (by catalog id or path)")
    v.add_argument("ref", metavar="PATH-or-ID")
    add_inventory_arg(v)
    v.add_argument("--json", action="store_true")
    v.add_argument("--no-restore", action="store_true", help="skip the trial restore")
    v.add_argument("--etcd-version", help="etcd line of an uncataloged file (default: 3.4)")
    v.set_defaults(func=_cmd_verify)


def _cmd_take(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    state = observe(inv, check_ssh=False)  # etcd's own answers decide the source; SSH is not needed
    record, deleted = service.snapshot_cluster(
        inv,
        state,
        allow_learner=args.learner,
        allow_no_quorum=args.no_quorum_ok,
        trial_restore=not args.no_restore,
        verify=not args.no_verify,
        offsite=not args.no_offsite,
        prune=not args.no_prune,
        show_progress=args.progress == "auto",
    )
    # --no-verify asked for an unverified snapshot: having it cataloged is success then
    ok = (record.verified or args.no_verify) and all(c.verified for c in record.offsite)
    if args.json:
        print(json.dumps(record.to_json(), indent=2))
    else:
        print(
            f"snapshot {record.id}: {human_bytes(record.size)}, revision {record.revision}, "
            f"sha256 {record.sha256}\n  source: {record.source_reason}\n  {record.verdict}: {record.reason}"
        )
        for c in record.offsite:
            print(f"  off-site {c.location}: {'verified' if c.verified else 'NOT verified'} ({c.reason})")
        for d in deleted:
            print(f"  pruned {d.record.id}: {d.reason}" + ("" if d.ok else f" (failed: {d.error})"))
    return 0 if ok else 1


def _row(r: SnapshotRecord) -> tuple:
    return (
        r.id,
        r.member,
        r.created.strftime("%Y-%m-%d %H:%M:%SZ"),
        r.revision,
        human_bytes(r.size),
        str(r.verdict),
        ", ".join(("ok " if c.verified else "BAD ") + c.kind for c in r.offsite) or "-",
    )


def _cmd_list(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    recs = service.catalog_for(inv).records(None if args.all_clusters else inv.cluster)
    if args.json:
        print(json.dumps([r.to_json() for r in recs], indent=2))
    else:
        print(
            table(
                ("ID", "MEMBER", "CREATED", "REVISION", "SIZE", "VERDICT", "OFFSITE"), [_row(r) for r in recs]
            )
        )
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    decisions = service.plan_prune(inv)
    deleted = [] if args.dry_run else service.delete_decided(inv, decisions)
    failed = {d.record.id: d.error for d in deleted if not d.ok}
    if args.json:
        out = [
            {
                "id": d.record.id,
                "path": str(d.record.path),
                "keep": d.keep,
                "reason": d.reason,
                "deleted": (not d.keep and not args.dry_run and d.record.id not in failed),
                "error": failed.get(d.record.id),
            }
            for d in decisions
        ]
        print(json.dumps({"dry_run": args.dry_run, "decisions": out}, indent=2))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for d in decisions:
            what = (
                "keep"
                if d.keep
                else (f"FAILED to delete ({failed[d.record.id]})" if d.record.id in failed else verb)
            )
            print(f"{what:>12}  {d.record.id}: {d.reason}")
        if not decisions:
            print("no snapshots cataloged", file=sys.stderr)
    return 1 if failed else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    rec, v = service.verify_stored(
        inv, args.ref, version=args.etcd_version, trial_restore=not args.no_restore
    )
    offsite_ok = rec is None or all(c.verified for c in rec.offsite)
    if args.json:
        body = rec.to_json() if rec is not None else {}
        body["verification"] = {
            **{
                k: getattr(v, k)
                for k in ("reason", "sha256", "size", "revision", "kv_hash", "compact_revision")
            },
            "verdict": str(v.verdict),
            "duration_s": round(v.duration_s, 3),
            "checks": [dataclasses.asdict(c) for c in v.checks],
        }
        print(json.dumps(body, indent=2))
    else:
        print(f"{v.verdict}: {v.reason}")
        for c in v.checks:
            mark = {True: "ok", False: "FAIL", None: "-"}[c.ok]
            print(f"  {mark:>4}  {c.name}: {c.detail}")
        for c in rec.offsite if rec else ():
            print(f"  off-site {c.location}: {'verified' if c.verified else 'NOT verified'} ({c.reason})")
    return 0 if v.verified and offsite_ok else 1
