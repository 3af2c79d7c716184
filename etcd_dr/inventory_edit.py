"""Edits of the operator's inventory YAML that keep its comments and layout: today, adding a role to a
host (`etcd-dr learner add --update-inventory`).

`add_role` is pure (text in, text and a unified diff out) and refuses an edit that would change
anything but that host's roles; `write_atomic` puts the new text in place with a backup copy of the
old one beside it (never deleted). ruamel.yaml's round-trip loader finds where the host's roles are
written (line and column, flow `[a, b]` or block `- a`) and the role is inserted right there: every
other byte of the file (comments, quotes, indentation) stays as the operator wrote it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq
from ruamel.yaml.error import YAMLError

from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory, Role, load_inventory, parse_inventory


@dataclass(frozen=True)
class RoleEdit:
    """The inventory text with `role` added to `host`'s roles, and the unified diff from the old."""

    path: Path
    host: str
    role: Role
    new_text: str
    diff: str


def add_role(text: str, host: str, role: Role, *, path: Path = Path("inventory.yaml")) -> RoleEdit:
    """Add role to hosts[name == host].roles in the YAML text. Pure. Raises InputError naming the
    field when the file has no such host or its roles are not a list; the new text parses to the old
    data plus that role, nothing else (else InputError: nothing is written)."""
    try:
        data = YAML().load(text)  # round trip: every node knows its line and column
    except YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e.__class__.__name__}); fix the file first") from None
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list):
        raise InputError(f"{path}: hosts: is not a list of hosts; cannot add {role} to {host}")
    idx = next((i for i, h in enumerate(hosts) if isinstance(h, dict) and h.get("name") == host), None)
    if idx is None:
        raise InputError(f"{path}: no host named {host!r} in hosts; add it (with roles: [{role}]) first")
    roles = hosts[idx].get("roles")
    if not isinstance(roles, CommentedSeq) or not roles:
        raise InputError(f"{path}: hosts[{idx}].roles: is not a list of roles; write e.g. roles: [{role}]")
    if role.value in roles:
        return RoleEdit(path, host, role, text, "")

    # Insert the role into the text where the loader found the list, instead of dumping the whole
    # document again: a re-dump re-indents, re-spaces comments and drops quotes on other lines.
    lines = text.splitlines(keepends=True)
    if roles.fa.flow_style():  # roles: [a, b]  ->  roles: [a, b, role]
        line, col = hosts[idx].lc.value("roles")
        offset = sum(len(ln) for ln in lines[:line]) + col
        close = text.index("]", offset)
        new_text = f"{text[:close].rstrip(' ')}, {role.value}{text[close:]}"
    else:  # a block list: one more `- role` line after the last item, indented as it is
        line, col = roles.lc.item(len(roles) - 1)
        last = lines[line]
        new_line = f"{last[:col]}{role.value}\n"
        lines.insert(line + 1, new_line if lines[line].endswith("\n") else "\n" + new_line)
        new_text = "".join(lines)

    # The edit is the role and nothing else, read back by the loader's own YAML parser.
    # Through JSON: a YAML alias shares one list between hosts, and an edit of it changes them all.
    want = _unshared(yaml.safe_load(text))
    want["hosts"][idx]["roles"].append(role.value)
    try:
        same = _unshared(yaml.safe_load(new_text)) == want
    except yaml.YAMLError:
        same = False
    if not same:
        raise InputError(
            f"{path}: cannot add {role} to hosts[{idx}].roles in place (an unusual layout there); "
            f"add it by hand: roles: [{', '.join([*map(str, roles), role.value])}]"
        )
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"a/{path.name}",
            tofile=f"b/{path.name}",
        )
    )
    return RoleEdit(path, host, role, new_text, diff)


def _unshared(data: object) -> Any:
    return json.loads(json.dumps(data, default=str))


def learner_role_edit(inv: Inventory, host: str) -> RoleEdit | None:
    """The edit of inv's file that makes host an etcd learner in the inventory, or None when there is
    nothing to offer: no file, no such host, a voter (a different refusal), or a learner already.
    The edited file loads to inv with only that host's roles changed (else InputError)."""
    names = {h.name for h in inv.hosts}
    if inv.source is None or host not in names or inv.host(host).runs_etcd:
        return None
    edit = add_role(inv.source.read_text(encoding="utf-8"), host, Role.ETCD_LEARNER, path=inv.source)
    again = parse_inventory(yaml.safe_load(edit.new_text), inv.base_dir or inv.source.parent, inv.source)
    h = inv.host(host)
    want = dataclasses.replace(
        inv,
        hosts=tuple(
            dataclasses.replace(x, roles=h.roles | {Role.ETCD_LEARNER}) if x is h else x for x in inv.hosts
        ),
    )
    if again != want:
        raise InputError(
            f"{inv.source}: adding etcd-learner to {host} changes more than its roles; edit by hand"
        )
    return edit


def apply_edit(edit: RoleEdit) -> tuple[Inventory, Path]:
    """Write the edit (a backup kept) and load the inventory again from the file: what runs next
    reads exactly what the operator will find on disk. Returns it and the backup's path."""
    backup = write_atomic(edit)
    return load_inventory(edit.path), backup


def write_atomic(edit: RoleEdit, *, now: datetime | None = None) -> Path:
    """Write edit.new_text to edit.path atomically (same directory, fsync, rename), keeping the old
    file as <name>.bak-<UTC timestamp>. Returns the backup's path."""
    path = edit.path
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():  # two edits in one second: keep both backups
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    old = path.read_bytes()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = path.stat().st_mode & 0o7777
    for target, data in ((backup, old), (tmp, edit.new_text.encode())):
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(target, mode)
    os.replace(tmp, path)
    return backup
