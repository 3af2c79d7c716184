"""`etcd-dr hosts ...`: host repair.

    etcd-dr hosts clock [--json] [--sync [--ntp-server S]] [-i INV]
    etcd-dr hosts kubelet-cleanup --host H [--plan] [--yes] [--json] [-i INV]

Exit codes: 0 nothing flagged, 1 something flagged (or a step failed), 2 bad input."""

from __future__ import annotations

import argparse
import sys

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args, table
from etcd_dr.cli.result import emit, emit_plan_run, exit_for
from etcd_dr.errors import InputError


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


def _confirm_on_terminal(host: str):
    def confirm(plan) -> bool:
        print(plan.render())
        if not sys.stdin.isatty():
            raise InputError("removing containers needs approval: pass --yes (no terminal to ask on)")
        answer = input(f"type {host} to remove these containers and restart kubelet: ").strip()
        if answer != host:
            raise InputError(f"not confirmed (typed {answer!r}, expected {host!r}): nothing was changed")
        return True

    return confirm


def cmd_kubelet_cleanup(args: argparse.Namespace) -> int:
    from etcd_dr.hostrepair.run import kubelet_cleanup

    inv = inventory_from_args(args)
    say = (lambda _m: None) if args.json else print
    res = kubelet_cleanup(
        inv,
        args.host,
        yes=args.yes,
        plan_only=args.plan,
        confirm=None if args.json else _confirm_on_terminal(args.host),
        say=say,
    )

    return emit_plan_run(args.json, res, "kubelet cleanup", plan_only=args.plan)


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

    k = hs.add_parser(
        "kubelet-cleanup",
        help="end kubelet's 'no PodsandBox found' loop: remove exactly the containers of the missing sandbox",
        description="Reads kubelet's recent log (docker logs --tail 200 kubelet), finds the sandbox ids of "
        "'Failed to start ContainerManager ... no PodsandBox found with Id', lists the containers labelled "
        "io.kubernetes.sandbox.id=<id> (only while no such sandbox exists and kubelet is in that loop), "
        "removes exactly those after approval, restarts kubelet and watches it stay up.",
    )
    add_inventory_arg(k)
    k.add_argument("--host", required=True, help="the host whose kubelet loops, e.g. node2")
    k.add_argument("--plan", action="store_true", help="show what would be removed and why; change nothing")
    k.add_argument("--yes", action="store_true", help="do not ask for approval")
    k.add_argument("--json", action="store_true", help="print the result as one JSON object")
    k.set_defaults(func=cmd_kubelet_cleanup)
