"""`etcd-dr hosts ...`: host repair.

    etcd-dr hosts clock [--json] [--sync [--ntp-server S]] [-i INV]

Exit codes: 0 nothing flagged, 1 something flagged (or a step failed), 2 bad input."""

from __future__ import annotations

import argparse

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args, table
from etcd_dr.cli.result import emit, exit_for


def _clock_text(rep) -> str:  # rep: etcd_dr.hostrepair.clock.ClockReport
    rows = []
    for h in rep.hosts:
        bad = [c for c in h.certs if not c.ok]
        rows.append(
            (
                h.host,
                "-" if h.offset_s is None else f"{h.offset_s:+.3f}",
                "-" if h.uncertainty_s is None else f"±{h.uncertainty_s:.3f}",
                str(h.verdict),
                f"{len(h.certs) - len(bad)}/{len(h.certs)} ok" if h.cert_error is None else "not read",
            )
        )
    out = [table(("HOST", "OFFSET S", "ERROR S", "CLOCK", "CERTS"), rows)]
    for c in rep.bad_certs:
        out.append(f"{c.host}:{c.path}: {c.problem}\n  fix: {c.fix}")
    out.append(rep.verdict)
    for s in rep.synced:
        out.append(f"sync: {s.sentence}" + (f": {s.output}" if s.output else ""))
    if rep.after is not None:
        out.append("measured again after the sync:")
        out.append(_clock_text(rep.after))
    return "\n".join(out)


def cmd_clock(args: argparse.Namespace) -> int:
    from etcd_dr.hostrepair.clock import clock_report

    inv = inventory_from_args(args)
    rep = clock_report(inv, sync=args.sync, ntp_server=args.ntp_server)
    emit(args.json, rep.to_json, lambda: _clock_text(rep))
    return exit_for(rep.ok)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hosts", help="host repair: clocks and certificates, kubelet's sandbox loop")
    hs = p.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)

    c = hs.add_parser(
        "clock",
        help="each host's clock against this machine's, and every certificate on it by its own clock",
        description="Measures each host's clock (best of several samples, corrected for the round "
        "trip), flags hosts off by more than check.max_clock_skew, and checks every certificate in "
        "/etc/kubernetes/ssl, /etc/kubernetes/ssl_old and etcd.cert_dir against THAT host's clock. "
        "--sync steps the flagged hosts' clocks (chronyc makestep, else ntpdate -u SERVER, else "
        "timedatectl set-ntp true) and measures again.",
    )
    add_inventory_arg(c)
    c.add_argument("--sync", action="store_true", help="step the clocks of the flagged hosts, measure again")
    c.add_argument("--ntp-server", default=None, help="the server for `ntpdate -u` (only ntpdate needs one)")
    c.add_argument("--json", action="store_true", help="print the result as one JSON object")
    c.set_defaults(func=cmd_clock)
