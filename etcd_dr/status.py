"""`etcd-dr status`: the cluster at a glance, like `etcdctl endpoint status` joined with the member
list, and a verdict sentence. Exit 0 with quorum, 1 without, 2 on bad input."""

from __future__ import annotations

import argparse
import json

from etcd_dr.cliutil import add_inventory_arg, human_bytes, inventory_from_args, table
from etcd_dr.state import ClusterState, observe

HEADERS = (
    "NAME",
    "ID",
    "ENDPOINT",
    "ROLE",
    "SSH",
    "ETCD",
    "LEADER",
    "TERM",
    "RAFT INDEX",
    "APPLIED",
    "REVISION",
    "VERSION",
    "DB SIZE",
    "ERRORS",
)


def render(state: ClusterState) -> str:
    rows = []
    for m in state.members:
        s = m.status
        rows.append(
            (
                m.name,
                f"{m.member_id:x}" if m.member_id is not None else "-",
                m.endpoint or "-",
                "learner" if m.is_learner else "voter",
                str(m.ssh),
                "up" if s else "down",
                "*" if state.leader == m.name else "",
                s.raft_term if s else "",
                s.raft_index if s else "",
                s.raft_applied_index if s else "",
                s.revision if s else "",
                s.version if s else "",
                human_bytes(s.db_size) if s else "",
                ", ".join(s.errors) if s and s.errors else (_short(m.etcd_error) if not s else ""),
            )
        )
    return f"{table(HEADERS, rows)}\n{state.verdict}"


def _short(err: str | None, n: int = 60) -> str:
    if not err:
        return ""
    return err if len(err) <= n else err[: n - 1] + "…"


def run(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    state = observe(inv, check_ssh=not args.no_ssh)
    if args.json:
        print(json.dumps(state.to_json(), indent=2))
    else:
        print(render(state))
    return 0 if state.quorum else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show members, quorum and leader with a verdict sentence")
    add_inventory_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (see README)")
    p.add_argument("--no-ssh", action="store_true", help="skip the SSH reachability check of each host")
    p.set_defaults(func=run)
