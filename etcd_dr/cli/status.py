"""`etcd-dr status`: the cluster at a glance, like `etcdctl endpoint status` joined with the member
list, and a verdict sentence. Exit 0 with quorum, 1 without, 2 on bad input, 3 when the members
form two clusters that each lead (a fork: Exit.FORKED)."""

from __future__ import annotations

import argparse

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args, table
from etcd_dr.cli.result import emit, exit_for
from etcd_dr.state import FORK_ADVICE, LOOK_DEADLINE_S, ClusterState, Health, MemberState, observe
from etcd_dr.units import human_bytes

EXIT_CODES = {h: exit_for(h) for h in Health}  # a fork has its own (3): other hands are needed

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
                _id(m),
                m.endpoint or "-",
                "learner" if m.is_learner else "voter",
                str(m.ssh),
                "up" if s else "down",
                # a fork has no leader of the cluster; mark each side's own
                "*" if state.leader == m.name or (state.forked and s and s.is_leader) else "",
                s.raft_term if s else "",
                s.raft_index if s else "",
                s.raft_applied_index if s else "",
                s.revision if s else "",
                s.version if s else "",
                human_bytes(s.db_size) if s else "",
                ", ".join(s.errors) if s and s.errors else (_short(m.etcd_error) if not s else ""),
            )
        )
    out = f"{table(HEADERS, rows)}\n{state.verdict}"
    return f"{out}\nwhat to do: {FORK_ADVICE}" if state.forked else out


def _id(m: MemberState) -> str:
    """The id in the member list, and the one the member itself reports when they differ (a member
    restored into another cluster is listed by the old side under its old id)."""
    listed = f"{m.member_id:x}" if m.member_id is not None else "-"
    if m.status and m.member_id is not None and m.status.member_id != m.member_id:
        return f"{listed} (says {m.status.member_id:x})"
    return listed


def _short(err: str | None, n: int = 60) -> str:
    if not err:
        return ""
    return err if len(err) <= n else err[: n - 1] + "…"


def run(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    state = observe(inv, check_ssh=not args.no_ssh, deadline_s=LOOK_DEADLINE_S)
    emit(args.json, state.to_json, lambda: render(state))
    return exit_for(state.health)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show members, quorum and leader with a verdict sentence")
    add_inventory_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (see README)")
    p.add_argument("--no-ssh", action="store_true", help="skip the SSH reachability check of each host")
    p.set_defaults(func=run)
