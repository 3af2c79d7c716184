"""The `etcd-dr` command: the only place that parses arguments, prints for people and picks exit
codes. The core (etcd_dr/*) is plain typed functions returning typed results; it never imports this
package (tests/unit/test_import_graph.py holds it to that).

Each command group lives in its own module here (etcd_dr/cli/<group>.py), which exposes
`add_parser(subparsers)` and sets `func(args) -> int` on its parser; a new command is a new module
listed in COMMAND_MODULES. Exit codes come from etcd_dr/cli/result.py (Exit, exit_for): 0 ok, 1 the
thing checked is not healthy / the action failed, 2 bad input (nothing was changed), 3 a fork
(status). This module wires the groups and maps the core's errors to those codes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

from etcd_dr.cli.result import Exit
from etcd_dr.errors import EtcdDrError, InputError

# (command, module): the module's add_parser registers the command and its sub-commands.
COMMAND_MODULES = (
    ("lab", "etcd_dr.cli.lab"),
    ("status", "etcd_dr.cli.status"),
    ("audit", "etcd_dr.cli.audit"),
    ("check", "etcd_dr.cli.check"),
    ("snapshot", "etcd_dr.cli.snapshot"),
    ("backup", "etcd_dr.cli.backup"),
    ("cert", "etcd_dr.cli.cert"),
    ("learner", "etcd_dr.cli.learner"),
    ("fault", "etcd_dr.cli.fault"),
    ("recover", "etcd_dr.cli.recover"),
    ("rejoin", "etcd_dr.cli.rejoin"),
    ("diverged", "etcd_dr.cli.diverged"),
    ("rehearse", "etcd_dr.cli.rehearse"),
    ("inventory", "etcd_dr.cli.inventory"),
    ("kubernetes", "etcd_dr.cli.kubernetes"),
    ("restore-kubernetes", "etcd_dr.cli.kubernetes"),  # the same as `kubernetes up`
    ("hosts", "etcd_dr.cli.hosts"),
    ("server", "etcd_dr.cli.server"),
)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser. When argv names a command, only that command's module is imported: a command
    starts without importing the others (the lab, the rehearsal, the snapshot service, ...); with no
    command, or an unknown one, all of them (for the help and argparse's list of choices)."""
    parser = argparse.ArgumentParser(prog="etcd-dr", description="etcd disaster recovery for Kubernetes")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    first = next((a for a in argv or () if not a.startswith("-")), None)
    chosen = [m for name, m in COMMAND_MODULES if name == first] or [m for _, m in COMMAND_MODULES]
    chosen = list(dict.fromkeys(chosen))  # a module may register two commands (kubernetes)
    for module in chosen:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _main(argv)[0]


def run() -> NoReturn:
    """The process's entry (the `etcd-dr` console script, `python -m etcd_dr.cli`): main(), then a
    command that marks itself `exit_at_once` (its work done, its files synced and closed, nothing
    left for an atexit hook) leaves without the interpreter's teardown: freeing the modules gRPC,
    protobuf and pydantic load took 50-60 ms of `snapshot --no-verify`'s ~1.1 s at 130 MB (README
    "Measured"). Only here: main() returns to a caller in the same process (the tests)."""
    code, at_once = _main(None)
    if at_once:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: what the interpreter's exit would meet too
                code = code or Exit.FAILED
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def _main(argv: list[str] | None) -> tuple[int, bool]:
    """(exit code, the command may exit at once)."""
    # paramiko logs each failed handshake with a traceback; ours are reported as TransportError
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    at_once = bool(getattr(args, "exit_at_once", False))
    try:
        return int(args.func(args) or 0), at_once
    except InputError as e:
        print(f"etcd-dr: {e}", file=sys.stderr)
        return Exit.BAD_INPUT, at_once
    except EtcdDrError as e:
        print(f"etcd-dr: {e}", file=sys.stderr)
        return Exit.FAILED, at_once
    except KeyboardInterrupt:
        return Exit.INTERRUPTED, False
