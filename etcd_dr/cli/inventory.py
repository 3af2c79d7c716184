"""`etcd-dr inventory schema|check|import-rke`: the inventory's JSON Schema, a check of a file that
contacts nothing (exit 0 valid, 2 problems, each listed with its path and the fix), and an inventory
written from RKE's cluster.yml and cluster.rkestate (exit 0 written, 2 nothing written)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from etcd_dr.cli import result
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
    r = isub.add_parser(
        "import-rke",
        help="write an inventory from RKE's cluster.yml and cluster.rkestate (contacts nothing)",
        description=IMPORT_HELP,
    )
    r.add_argument("cluster_yml", type=Path, metavar="CLUSTER_YML", help="RKE's cluster.yml")
    r.add_argument(
        "--state", type=Path, help="RKE's state file (default: CLUSTER_YML with .rkestate, as RKE names it)"
    )
    r.add_argument(
        "-o",
        "--output",
        type=Path,
        help="the inventory to write (default: etcd-dr/inventory.yaml beside CLUSTER_YML; never overwritten)",
    )
    r.add_argument("--deploy-host", help="the node that runs `rke up` (default: the first worker-only node)")
    r.add_argument("--known-hosts", type=Path, help="the hosts' SSH keys (default: ~/.ssh/known_hosts)")
    r.add_argument(
        "--ignore-bastion",
        action="store_true",
        help="leave bastion_host out: etcd-dr reaches the nodes directly (it runs on the bastion itself)",
    )
    r.add_argument("--json", action="store_true", help="print what was written as one JSON object")
    r.set_defaults(func=import_rke_main)


IMPORT_HELP = """Write an etcd-dr inventory from RKE's own files: the nodes (internal_address as the
address etcd listens on, address as ssh_address when it differs), SSH user, port and key, roles, etcd's
timings and snapshot schedule from cluster.yml; from cluster.rkestate, kube-ca, every etcd member's
certificate and key, and the client certificate RKE itself reaches etcd with (kube-node; with external
etcd, kube-etcd-client), written under rke-certs/ beside the inventory (keys 0600). Nothing is
contacted. Certificates that are not this cluster's, a missing key or a field RKE does not know: every
problem is listed with its path and the fix, and nothing is written (exit 2)."""


def import_rke_main(args: argparse.Namespace) -> int:
    from etcd_dr.kubernetes.importer import import_rke  # only this command pays for it

    res = import_rke(
        args.cluster_yml,
        state_file=args.state,
        output=args.output,
        deploy_host=args.deploy_host,
        known_hosts=args.known_hosts,
        ignore_bastion=args.ignore_bastion,
    )

    def text() -> str:
        lines = [f"{res.inventory}: written from {res.cluster_yml.name} and {res.state_file.name}"]
        for h in res.hosts:
            ssh = f" (ssh {h.ssh_address})" if h.ssh_address else ""
            lines.append(f"  {h.name}: {h.address}{ssh} [{', '.join(h.roles)}]")
        lines.append(f"deploy host {res.deploy_host_why}")
        lines.append(f"etcd client certificate: {res.client_cert}; {len(res.written) - 1} certificate files")
        lines += [f"moved aside: {p}" for p in res.moved_aside]
        lines += [f"note: {n}" for n in res.notes]
        return "\n".join(lines)

    result.emit(args.json, res.to_json, text)
    return result.exit_for(res.ok)


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
