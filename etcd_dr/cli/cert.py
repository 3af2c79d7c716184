"""`etcd-dr cert issue --host HOST [--ip IP]... [--dns NAME]... [--not-before ISO] [-i INV] [--json]`:
a member key and certificate signed by kube-ca, installed at RKE's paths (etcd_dr.certissue).
Exit 0 issued or kept, 1 refused or failed, 2 bad input."""

from __future__ import annotations

import argparse
import datetime as dt

from etcd_dr.certissue import CertIssueResult, issue_member_cert, load_ca, member_sans
from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import Exit, emit
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
