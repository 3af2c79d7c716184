"""`etcd-dr inventory schema|check`: the inventory's JSON Schema, and a check of a file that contacts
nothing. Exit 0 valid, 2 problems (each listed with its path and the fix)."""

from __future__ import annotations

import argparse
import json

from etcd_dr.cli.common import add_inventory_arg, inventory_path
from etcd_dr.inventory import InventoryError, inventory_schema, load_inventory

CHECK_HELP = """Validate an inventory file as every command loads it: keys, types, ranges, unique hosts,
a voter, and that the local files it names (SSH key, known_hosts, client TLS) exist. Nothing is
contacted: no host, no DNS. Every problem is listed as `path: what is wrong; what to do`."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inventory", help="the inventory's JSON Schema, or check a file (contacts nothing)")
    isub = p.add_subparsers(dest="inventory_command", metavar="ACTION", required=True)
    s = isub.add_parser("schema", help="print the inventory's JSON Schema (for editors' YAML validation)")
    s.set_defaults(func=main)
    c = isub.add_parser(
        "check", help="validate an inventory file; exit 2 with every problem", description=CHECK_HELP
    )
    add_inventory_arg(c)
    c.add_argument("--json", action="store_true", help='print {"file", "ok", "problems": [{path, message}]}')
    c.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.inventory_command == "schema":
        print(json.dumps(inventory_schema(), indent=2))
        return 0
    path = inventory_path(getattr(args, "inventory", None))
    try:
        inv = load_inventory(path)
    except InventoryError as e:
        if args.json:
            problems = [dict(zip(("path", "message"), p.split(": ", 1), strict=False)) for p in e.problems]
            print(json.dumps({"file": str(path), "ok": False, "problems": problems}, indent=2))
        else:
            print(e)
        return 2
    summary = {
        "file": str(path),
        "ok": True,
        "problems": [],
        "cluster": inv.cluster,
        "hosts": len(inv.hosts),
        "voters": [h.name for h in inv.voters],
        "learners": [h.name for h in inv.hosts if h.is_learner],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        learners = ", ".join(summary["learners"]) or "none"
        print(
            f"{path}: ok: cluster {inv.cluster}, {len(inv.hosts)} hosts, voters "
            f"{', '.join(summary['voters'])}, learners {learners}"
        )
    return 0
