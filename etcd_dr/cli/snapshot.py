"""`etcd-dr snapshot`: take (the default), list, prune, verify.

    etcd-dr snapshot [take] [-i INVENTORY] [--json] [--learner] [--no-quorum-ok] [--no-restore]
                     [--no-verify] [--no-offsite] [--no-prune]
    etcd-dr snapshot list [-i INVENTORY] [--json] [--all-clusters]
    etcd-dr snapshot prune [-i INVENTORY] [--dry-run] [--json]
    etcd-dr snapshot verify PATH-or-ID [-i INVENTORY] [--json] [--no-restore] [--etcd-version V]
    etcd-dr snapshot roll-forward [ID] [-i INVENTORY] [--json] [--to-revision N | --to-time T]
                                  [--lease-ttl S]

Exit 0 ok (a VERIFIED snapshot, and its off-site copy verified; with --no-verify: cataloged), 1 failed or not
verified, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Sequence

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args, table
from etcd_dr.cli.result import Exit, emit, exit_for
from etcd_dr.snapshots import service
from etcd_dr.snapshots.record import SnapshotRecord
from etcd_dr.snapshots.service import Deleted
from etcd_dr.state import client_for, observe
from etcd_dr.units import human_bytes


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
    # take exits at once (etcd_dr.cli.run): its file, catalog and audit are synced and closed when
    # it returns; the other actions (a subparser inherits these defaults) keep the normal exit
    p.set_defaults(func=_cmd_take, exit_at_once=True)
    s = p.add_subparsers(dest="snapshot_command", metavar="ACTION")
    t = s.add_parser("take", help="take a verified snapshot (the default)")
    _take_args(t)
    t.set_defaults(func=_cmd_take, exit_at_once=True)
    ls = s.add_parser("list", help="the catalog")
    add_inventory_arg(ls)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all-clusters", action="store_true", help="every cluster in the catalog's directory")
    ls.set_defaults(func=_cmd_list, exit_at_once=False)
    pr = s.add_parser("prune", help="delete what the retention policy does not keep")
    add_inventory_arg(pr)
    pr.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_cmd_prune, exit_at_once=False)
    v = s.add_parser("verify", help="verify a stored snapshot again (by catalog id or path)")
    v.add_argument("ref", metavar="PATH-or-ID")
    add_inventory_arg(v)
    v.add_argument("--json", action="store_true")
    v.add_argument("--no-restore", action="store_true", help="skip the trial restore")
    v.add_argument("--etcd-version", help="etcd line of an uncataloged file (default: 3.4)")
    v.set_defaults(func=_cmd_verify, exit_at_once=False)
    rf = s.add_parser(
        "roll-forward",
        help="bring a verified snapshot to a point in time with the delta log (a new verified snapshot)",
    )
    rf.add_argument("ref", metavar="ID", nargs="?", help="default: the newest verified one before the point")
    add_inventory_arg(rf)
    rf.add_argument("--json", action="store_true")
    to = rf.add_mutually_exclusive_group()
    to.add_argument("--to-revision", type=int, metavar="N", help="default: the last revision on record")
    to.add_argument(
        "--to-time", metavar="T", help="the last revision received by T (ISO 8601 UTC or epoch s)"
    )
    rf.add_argument(
        "--lease-ttl", type=int, default=60, metavar="S", help="TTL of leases granted after the snapshot"
    )
    rf.set_defaults(func=_cmd_roll_forward, exit_at_once=False)


def _one_malloc_arena() -> None:
    """glibc gives a thread that allocates under contention an arena of its own, and gRPC's threads
    allocate the stream's buffers in theirs: each arena keeps the free chunks of its peak, 20-30 MB
    of free heap not given back at the peak of a 1.3 GB snapshot (mallinfo2). One arena reuses them
    (peak RSS 15-25 MB lower at 1.3 GB; README "Measured"). A CLI process: nothing else pays for
    the shared lock. Called before observe(), which starts gRPC's threads. Without glibc: a no-op."""
    import ctypes

    m_arena_max = -8  # glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(m_arena_max, 1)


def _cmd_take(args: argparse.Namespace) -> int:
    _one_malloc_arena()
    inv = inventory_from_args(args)
    # one client for the look and the stream: the stream reuses the look's TLS connection
    with client_for(inv) as client:
        # etcd's own answers decide the source; SSH is not needed
        state = observe(inv, check_ssh=False, client=client)
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
            client=client,
        )
    if not args.no_prune and record.verified:
        from etcd_dr.deltalog.service import prune_segments

        prune_segments(inv)  # the delta log's segments no kept snapshot needs any more
    # --no-verify asked for an unverified snapshot: having it cataloged is success then
    ok = (record.verified or args.no_verify) and all(c.verified for c in record.offsite)
    emit(args.json, record.to_json, lambda: _taken_text(record, deleted))
    return exit_for(ok)


def _taken_text(record: SnapshotRecord, deleted: Sequence[Deleted]) -> str:
    lines = [
        f"snapshot {record.id}: {human_bytes(record.size)}, revision {record.revision}, "
        f"sha256 {record.sha256}\n  source: {record.source_reason}\n  {record.verdict}: {record.reason}"
    ]
    lines += [
        f"  off-site {c.location}: {'verified' if c.verified else 'NOT verified'} ({c.reason})"
        for c in record.offsite
    ]
    lines += [
        f"  pruned {d.record.id}: {d.reason}" + ("" if d.ok else f" (failed: {d.error})") for d in deleted
    ]
    return "\n".join(lines)


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
    from etcd_dr.deltalog.service import summary

    inv = inventory_from_args(args)
    recs = service.catalog_for(inv).records(None if args.all_clusters else inv.cluster)
    dl = summary(inv)

    def forward(r: SnapshotRecord) -> int | None:
        return dl.rolls_forward_to(r.revision) if dl is not None and r.cluster == inv.cluster else None

    def text() -> str:
        head = ("ID", "MEMBER", "CREATED", "REVISION", "SIZE", "VERDICT", "OFFSITE", "ROLLS FORWARD TO")
        rows = [(*_row(r), forward(r) or "-") for r in recs]
        return table(head, rows) + (f"\n{dl.line()}" if dl is not None else "")

    # --json: the records as before, each with how far the delta log rolls it forward (null: not)
    emit(args.json, lambda: [{**r.to_json(), "rolls_forward_to": forward(r)} for r in recs], text)
    return Exit.OK


def _cmd_prune(args: argparse.Namespace) -> int:
    from etcd_dr.deltalog.service import prune_segments

    inv = inventory_from_args(args)
    decisions = service.plan_prune(inv)
    deleted = [] if args.dry_run else service.delete_decided(inv, decisions)
    failed = {d.record.id: d.error for d in deleted if not d.ok}
    segments = prune_segments(inv, dry_run=args.dry_run)

    def data() -> dict:
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
        segs = [
            {"segment": p.segment, "reason": p.reason, "ok": p.ok, "error": p.error or None} for p in segments
        ]
        return {"dry_run": args.dry_run, "decisions": out, "segments": segs}

    def text() -> str | None:
        verb = "would delete" if args.dry_run else "deleted"
        lines = []
        for d in decisions:
            what = (
                "keep"
                if d.keep
                else (f"FAILED to delete ({failed[d.record.id]})" if d.record.id in failed else verb)
            )
            lines.append(f"{what:>12}  {d.record.id}: {d.reason}")
        for p in segments:
            what = verb if p.ok else f"FAILED to delete ({p.error})"
            lines.append(f"{what:>12}  delta log segment {p.segment}: {p.reason}")
        if not decisions:
            print("no snapshots cataloged", file=sys.stderr)
        return "\n".join(lines) if lines else None

    emit(args.json, data, text)
    return exit_for(not failed and all(p.ok for p in segments))


def _cmd_verify(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    rec, v = service.verify_stored(
        inv, args.ref, version=args.etcd_version, trial_restore=not args.no_restore
    )
    offsite_ok = rec is None or all(c.verified for c in rec.offsite)

    def data() -> dict:
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
        return body

    def text() -> str:
        lines = [f"{v.verdict}: {v.reason}"]
        for c in v.checks:
            mark = {True: "ok", False: "FAIL", None: "-"}[c.ok]
            lines.append(f"  {mark:>4}  {c.name}: {c.detail}")
        for c in rec.offsite if rec else ():
            lines.append(
                f"  off-site {c.location}: {'verified' if c.verified else 'NOT verified'} ({c.reason})"
            )
        return "\n".join(lines)

    emit(args.json, data, text)
    return exit_for(v.verified and offsite_ok)


def _when(text: str) -> float:
    """--to-time: ISO 8601 (Z or an offset; naive is UTC) or seconds since the epoch."""
    import datetime as dt

    from etcd_dr.errors import InputError

    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--to-time {text!r}: not ISO 8601 (2026-12-05T19:00:00Z) or epoch seconds"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _cmd_roll_forward(args: argparse.Namespace) -> int:
    from etcd_dr.deltalog.service import roll_forward

    inv = inventory_from_args(args)
    res = roll_forward(
        inv,
        snapshot_id=args.ref,
        to_revision=args.to_revision,
        to_time=_when(args.to_time) if args.to_time else None,
        lease_ttl_s=args.lease_ttl,
    )
    r = res.replayed
    emit(
        args.json,
        res.to_json,
        lambda: (
            f"snapshot {res.record.id}: revision {res.target.revision} ({res.target.reason}), rolled "
            f"forward from {res.source} (revision {res.source_revision}): {r.records} transactions, "
            f"{r.events} events in {r.duration_s:.2f} s ({r.events_per_s:.0f} events/s), "
            f"{r.leases_granted} leases granted\n  {res.check}\n"
            f"  {res.record.verdict}: {res.record.reason}\n  {res.path}"
        ),
    )
    return Exit.OK
