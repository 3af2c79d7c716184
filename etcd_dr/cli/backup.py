"""`etcd-dr backup stream`: the delta log's watcher (etcd_dr.deltalog), a long-lived process per
cluster.

    etcd-dr backup stream [-i INVENTORY] [--json] [--segment-max-bytes N] [--segment-max-age S]
                          [--until-revision N] [--max-seconds S] [--no-offsite]

It runs until SIGTERM/SIGINT (the open segment is sealed and copied off-site) or a limit. Exit 0
when it stopped, 1 when it stopped at a gap (etcd compacted past it: a new full snapshot is
needed), 2 on bad input.
"""

from __future__ import annotations

import argparse
import signal
import threading

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import emit, exit_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="continuous backup: the delta log of every revision")
    s = p.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    st = s.add_parser("stream", help="watch the cluster and append every revision to the delta log")
    add_inventory_arg(st)
    st.add_argument("--json", action="store_true", help="print the result as JSON when it stops")
    st.add_argument("--segment-max-bytes", type=int, default=16 << 20, help="seal a segment at this size")
    st.add_argument(
        "--segment-max-age", type=float, default=60.0, metavar="S", help="seal a segment this old (s)"
    )
    st.add_argument(
        "--pull-interval",
        type=float,
        default=0.2,
        metavar="S",
        help="one watch per cycle this often, read until caught up (0: one watch kept open: a "
        "response per revision, about twice the serving member's CPU per event; README)",
    )
    st.add_argument("--until-revision", type=int, help="stop once this revision is on disk")
    st.add_argument("--max-seconds", type=float, help="stop after this long")
    st.add_argument("--no-offsite", action="store_true", help="do not copy sealed segments off-site")
    st.set_defaults(func=_cmd_stream)


def _cmd_stream(args: argparse.Namespace) -> int:
    from etcd_dr.deltalog.service import stream_cluster
    from etcd_dr.deltalog.stream import StreamSettings
    from etcd_dr.errors import InputError

    if args.segment_max_bytes <= 0 or args.segment_max_age <= 0:
        raise InputError("--segment-max-bytes and --segment-max-age must be > 0")
    if not 0 <= args.pull_interval <= 5:
        raise InputError(
            f"--pull-interval {args.pull_interval:g}: give 0 to 5 s (the log is at most this + 0.1 s "
            "behind the cluster: a longer one costs writes when every member is lost)"
        )
    inv = inventory_from_args(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    res = stream_cluster(
        inv,
        settings=StreamSettings(
            segment_max_bytes=args.segment_max_bytes,
            segment_max_age_s=args.segment_max_age,
            pull_interval_s=args.pull_interval,
        ),
        stop=stop,
        until_revision=args.until_revision,
        max_seconds=args.max_seconds,
        offsite=not args.no_offsite,
    )
    emit(
        args.json,
        res.to_json,
        lambda: (
            f"delta log {res.state}: {res.reason}; revisions {res.start_revision}..{res.last_revision}, "
            f"{res.records} records, {len(res.segments)} segments sealed"
        ),
    )
    return exit_for(res.ok)
