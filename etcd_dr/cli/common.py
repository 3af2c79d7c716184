"""What every command shares: the inventory argument and where the inventory comes from when it is
not given (the lab's is a CLI convenience: the core is never told about the lab), and tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory, load_inventory


def add_inventory_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        type=Path,
        # SUPPRESS: a sub-command's default must not overwrite `-i` given before it
        # (`etcd-dr snapshot -i X list`); read it with getattr(args, "inventory", None)
        default=argparse.SUPPRESS,
        help="inventory YAML (default: $ETCD_DR_INVENTORY, else the lab's, written by `etcd-dr lab up`)",
    )


def inventory_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("ETCD_DR_INVENTORY")
    if env:
        return Path(env)
    # only now, and only its config and net: a command given its inventory never imports the lab
    from etcd_dr.lab.config import default_inventory_path, incomplete
    from etcd_dr.lab.net import running_lab

    path = default_inventory_path()
    lab = running_lab()
    if not path.exists() or lab is None:
        raise InputError(
            f"no inventory given and no lab is up ({path}): pass -i INVENTORY or run `etcd-dr lab up`"
        )
    if missing := incomplete(lab):  # its status would look healthy without what the build left out
        print(f"etcd-dr: warning: {missing}", file=sys.stderr)
    return path


def inventory_from_args(args: argparse.Namespace) -> Inventory:
    return load_inventory(inventory_path(getattr(args, "inventory", None)))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [sep]
    for n, r in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            out.append(sep)
    out.append(sep)
    return "\n".join(out)
