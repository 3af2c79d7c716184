"""The `etcd-dr` command.

Each command group lives in its own module, which exposes `add_parser(subparsers)` and sets
`func(args) -> int` on its parser. This module only wires them and maps errors to exit codes:
0 ok, 1 the thing checked is not healthy / the action failed, 2 bad input (nothing was changed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from etcd_dr.errors import EtcdDrError, InputError

# (command, module): the module's add_parser registers the command and its sub-commands.
COMMAND_MODULES = (
    ("lab", "etcd_dr.lab.cli"),
    ("status", "etcd_dr.status"),
    ("audit", "etcd_dr.audit"),
    ("check", "etcd_dr.check"),
    ("snapshot", "etcd_dr.snapshots.cli"),
    ("cert", "etcd_dr.certissue"),
    ("learner", "etcd_dr.learner.cli"),
    ("fault", "etcd_dr.fault_cli"),
    ("recover", "etcd_dr.recover"),
    ("rejoin", "etcd_dr.rejoin"),
    ("diverged", "etcd_dr.diverged.cli"),
    ("rehearse", "etcd_dr.rehearse"),
    ("inventory", "etcd_dr.cli_inventory"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcd-dr", description="etcd disaster recovery for Kubernetes")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # paramiko logs each failed handshake with a traceback; ours are reported as TransportError
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"etcd-dr: {e}", file=sys.stderr)
        return 2
    except EtcdDrError as e:
        print(f"etcd-dr: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
