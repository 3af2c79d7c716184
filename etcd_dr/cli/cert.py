"""`etcd-dr cert issue --host HOST [--ip IP]... [--dns NAME]... [--not-before ISO] [-i INV] [--json]`:
a member key and certificate signed by kube-ca, installed at RKE's paths (etcd_dr.certissue).
Exit 0 issued or kept, 1 refused or failed, 2 bad input.

`etcd-dr cert renew --host HOST | --all [--plan] [--yes] [--json]`: reissue and restart, one member at
a time, never where a restart would cost quorum (etcd_dr.certrenew). Exit 0 done (or --plan), 1
refused as unsafe or a step failed, 2 bad input or not confirmed."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from etcd_dr.certissue import CertIssueResult, issue_member_cert, load_ca, member_sans
from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import Exit, emit, emit_plan_run
from etcd_dr.errors import InputError


def _parse_time(value: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--not-before {value!r} is not an ISO time; give e.g. 2026-11-27T09:00:00Z"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _text(res: CertIssueResult) -> str:
    return (
        f"{res.reason}\n"
        f"  cert {res.cert_path}\n  key  {res.key_path} (0600)\n  ca   {res.ca_path}\n"
        f"  {res.host}'s clock is {res.host_clock.skew_s:+.2f} s from this machine; "
        f"took {res.duration_s:.2f} s"
    )


def _cmd_issue(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    host = inv.host(args.host)
    not_before = _parse_time(args.not_before) if args.not_before else None
    member_sans(host, args.ip, args.dns)  # bad --ip is bad input: before contacting anything
    ca = load_ca(inv)
    res = issue_member_cert(inv, host, ca, ips=args.ip, dns=args.dns, not_before=not_before)
    emit(args.json, res.to_json, lambda: _text(res))
    return Exit.OK  # a refusal or failure raised (CertRefused: 1) before anything was written


def _cmd_renew(args: argparse.Namespace) -> int:
    from etcd_dr.certrenew.run import renew

    inv = inventory_from_args(args)
    if args.all == bool(args.host):
        raise InputError("give --host HOST (repeatable) or --all, not both and not neither")
    hosts = [h.name for h in inv.etcd_hosts] if args.all else args.host
    what = "all" if args.all else ",".join(hosts)

    def confirm(plan) -> bool:
        print(plan.render())
        if not sys.stdin.isatty():
            raise InputError("cert renew restarts etcd: pass --yes to confirm (no terminal to ask on)")
        answer = input(f"type {what} to renew and restart: ").strip()
        if answer != what:
            raise InputError(f"not confirmed (typed {answer!r}, expected {what!r}): nothing was changed")
        return True

    say = (lambda _m: None) if args.json else print
    res = renew(
        inv, hosts, yes=args.yes, plan_only=args.plan, confirm=None if args.json else confirm, say=say
    )

    return emit_plan_run(args.json, res, "cert renew", plan_only=args.plan)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cert", help="etcd member certificates signed by the cluster CA (kube-ca)")
    csub = p.add_subparsers(dest="cert_command", metavar="ACTION", required=True)
    i = csub.add_parser(
        "issue",
        help="issue a member key and certificate for a host and install them at RKE's paths",
        description="Sign a key for HOST with kube-ca (read over SSH from the inventory's ca: host), "
        "SANs from its address and name plus --ip/--dns, serverAuth+clientAuth; refuse one the host's "
        "clock would not accept yet; keep a valid existing pair.",
    )
    add_inventory_arg(i)
    i.add_argument("--host", required=True, help="inventory host name")
    i.add_argument("--ip", action="append", default=[], help="extra IP SAN (repeatable)")
    i.add_argument("--dns", action="append", default=[], help="extra DNS SAN (repeatable)")
    i.add_argument("--not-before", default=None, help="start of validity (ISO, UTC); default: 5 min ago")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(func=_cmd_issue)

    r = csub.add_parser(
        "renew",
        help="reissue a member's certificate and restart it to serve it (never where that costs quorum)",
        description="Reissues HOST's member certificate with kube-ca (the same names and SANs as the "
        "one there, NotBefore a few minutes back and checked against HOST's clock), keeps the old pair "
        "as .bak-<UTC ts>, restarts etcd there so that it serves it and waits until it answers with a "
        "leader; one host at a time, those that do not answer first; refused where a restart would "
        "cost quorum.",
    )
    add_inventory_arg(r)
    r.add_argument("--host", action="append", default=[], help="an etcd host (repeatable)")
    r.add_argument("--all", action="store_true", help="every etcd host of the inventory")
    r.add_argument("--plan", action="store_true", help="print the plan, change nothing")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.add_argument("--json", action="store_true", help="print the result as one JSON object")
    r.set_defaults(func=_cmd_renew)
