"""`etcd-dr audit verify [PATH] [--inventory FILE] [--json]`: check the audit log's hash chain.
Exit 0 intact, 1 broken, 2 bad input."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from etcd_dr.audit import verify
from etcd_dr.cli.result import emit, exit_for
from etcd_dr.errors import InputError
from etcd_dr.inventory import load_inventory
from etcd_dr.lab.config import default_inventory_path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="inspect the audit log")
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check the audit log's hash chain")
    v.add_argument("path", nargs="?", help="audit log (default: audit_log of the inventory)")
    v.add_argument("--inventory", help="inventory whose audit_log to verify (default: the lab's)")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_cmd_verify)


def _default_audit_path(inventory: str | Path | None) -> Path:
    # the lab's inventory path, not $ETCD_DR_INVENTORY as the other commands: as audit always did
    if inventory is None:
        inventory = default_inventory_path()
        if not Path(inventory).exists():
            raise InputError("no audit log given and no lab inventory found: pass PATH or --inventory FILE")
    inv = load_inventory(inventory)
    if inv.audit_log is None:
        raise InputError(f"{inventory}: the inventory sets no audit_log; pass PATH")
    return inv.audit_log


def _cmd_verify(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else _default_audit_path(getattr(args, "inventory", None))
    if not path.is_file():
        raise InputError(f"{path}: no such audit log")
    res = verify(path)
    emit(
        args.json,
        lambda: {"path": str(path), **asdict(res)},
        lambda: (
            f"audit log OK: {res.records} records"
            if res.ok
            else f"audit log BROKEN at line {res.first_bad_line}: {res.reason}"
        ),
        indent=None,
    )
    return exit_for(res.ok)
