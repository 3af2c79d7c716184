"""The diverged writes as JSON lines, and their reviewed replay onto the recovered cluster.

One line per write: key and value in base64 (key_text for people), the old member's mod_revision,
create_revision and version, its lease id with a note (a lease of the old cluster means nothing on
the recovered one: the key is put without a lease), and the key's mod_revision on the cluster when
exported (cluster_mod_revision, 0: absent). A replay is planned first, one row per key: PUT (the
key is as it was at the export), SAME (the cluster holds that value already: nothing to do) or
CHANGED (the key changed since the export: skipped unless forced). Each put is a transaction that
compares the key's mod_revision, so a key written meanwhile is never overwritten unasked.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.diverged.compare import key_text
from etcd_dr.diverged.read import member_endpoints, read_divergence
from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.state import ClusterState, client_for

LEASE_NOTE = (
    "lease {lease:x} dropped: a lease of the old cluster does not exist on the recovered one; "
    "the key is put without a lease"
)


class Op(enum.StrEnum):
    PUT = "put"  # the old member holds this value
    DELETE = "delete"  # the old member deleted the key after the fork; the cluster still has it


@dataclass(frozen=True)
class Exported:
    """One line of an export file."""

    key: bytes
    value: bytes  # b"" for a delete
    mod_revision: int  # the old member's; 0 for a delete (the key is gone there)
    cluster_mod_revision: int  # the key's mod_revision on the recovered cluster at export; 0: absent
    host: str
    create_revision: int = 0
    version: int = 0
    lease: int = 0
    op: Op = Op.PUT

    def to_json(self, data_dir: str) -> dict:
        d: dict[str, object] = {
            "op": str(self.op),
            "key": base64.b64encode(self.key).decode(),
            "key_text": key_text(self.key),
            **({"value": base64.b64encode(self.value).decode()} if self.op is Op.PUT else {}),
            "mod_revision": self.mod_revision,
            "create_revision": self.create_revision,
            "version": self.version,
            "lease": self.lease,
            "cluster_mod_revision": self.cluster_mod_revision,
            "host": self.host,
            "data_dir": data_dir,
        }
        if self.lease:
            d["note"] = LEASE_NOTE.format(lease=self.lease)
        return d

    @classmethod
    def from_json(cls, d: object, where: str) -> Exported:
        if not isinstance(d, dict):
            raise InputError(f"{where}: not a JSON object; give a file written by `etcd-dr diverged export`")
        try:
            op = Op(d.get("op", "put"))  # files written before deletes were exported hold puts only
            return cls(
                key=base64.b64decode(d["key"], validate=True),
                value=base64.b64decode(d["value"], validate=True) if op is Op.PUT else b"",
                mod_revision=int(d["mod_revision"]),
                cluster_mod_revision=int(d["cluster_mod_revision"]),
                host=str(d.get("host", "")),
                create_revision=int(d.get("create_revision", 0)),
                version=int(d.get("version", 0)),
                lease=int(d.get("lease", 0)),
                op=op,
            )
        except KeyError as e:
            raise InputError(
                f"{where}: field {e.args[0]} missing; give a file written by `diverged export`"
            ) from None
        except (ValueError, TypeError) as e:
            raise InputError(
                f"{where}: a field is malformed ({e}); give a file written by `diverged export`"
            ) from None


def export(
    inv: Inventory, host: str, data_dir: str, state: ClusterState, out: Path
) -> tuple[list[Exported], str]:
    """Read host's old data dir against the recovered cluster and write its diverged writes to `out`
    as JSON lines (atomically). Returns (the writes, the sentence)."""
    div, _ = read_divergence(inv, host, data_dir, state)
    writes = [
        Exported(
            d.kv.key,
            d.kv.value,
            d.kv.mod_revision,
            d.cluster_mod_revision,
            host,
            d.kv.create_revision,
            d.kv.version,
            d.kv.lease,
        )
        for d in div.diverged
    ]
    if div.deleted:  # each with its mod_revision on the cluster now: a replay deletes only that
        with client_for(inv, member_endpoints(inv, state)) as c:
            for key in div.deleted:
                now = _current(c, key)
                if now is not None:
                    writes.append(Exported(key, b"", 0, now[0], host, op=Op.DELETE))
    tmp = out.with_name(f".{out.name}.part")
    # the values are the cluster's data (Kubernetes Secrets among them): readable by this user only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for w in writes:
            f.write(json.dumps(w.to_json(data_dir)) + "\n")
    os.replace(tmp, out)
    leased = sum(1 for w in writes if w.lease)
    deletes = sum(1 for w in writes if w.op is Op.DELETE)
    why = (
        f"{len(writes) - deletes} writes of {host}'s old member ({data_dir}) that the recovered cluster "
        "lacks"
        + (f" and {deletes} keys it deleted that the cluster still has" if deletes else "")
        + f", written to {out}"
        + (f"; {leased} leases dropped (see each line's note)" if leased else "")
    )
    audit = audit_log_for(inv)
    if audit is not None:  # key names only, never a value
        audit.event(
            host=host, action="diverged.export", outcome="ok", reason=why, count=len(writes),
            keys=[key_text(w.key) for w in writes], data_dir=data_dir, file=str(out),
        )  # fmt: skip
    return writes, why


def load(path: Path) -> list[Exported]:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(
            f"{path}: cannot read it ({e.strerror}); give the file `diverged export` wrote"
        ) from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError:
            raise InputError(f"{path}:{i}: not JSON; give the file `diverged export` wrote") from None
        out.append(Exported.from_json(d, f"{path}:{i}"))
    return out


class Act(enum.StrEnum):
    PUT = "put"  # the key is as it was at the export: put the old member's value
    DELETE = "delete"  # the key is as it was at the export: delete it, as the old member did
    SAME = "same"  # the cluster holds that value already (a delete: the key is gone): nothing to do
    CHANGED = "changed"  # the key changed since the export: skipped (--force acts anyway)

    @property
    def acts(self) -> bool:
        return self in (Act.PUT, Act.DELETE)


@dataclass(frozen=True)
class Row:
    write: Exported
    act: Act
    current_mod_revision: int  # 0: absent now
    differs: bool  # the cluster's current value is not the exported one
    outcome: str = "planned"

    def to_json(self) -> dict:
        return {
            "key": key_text(self.write.key),
            "op": str(self.write.op),
            "action": str(self.act),
            "differs": self.differs,
            "current_mod_revision": self.current_mod_revision,
            "exported_at_cluster_mod_revision": self.write.cluster_mod_revision,
            "old_mod_revision": self.write.mod_revision,
            "outcome": self.outcome,
        }

    def render(self) -> str:
        now = "absent" if not self.current_mod_revision else f"mod_revision {self.current_mod_revision}"
        return (
            f"{self.act:<8} {key_text(self.write.key)}  cluster now: {now}, "
            f"{'differs' if self.differs else 'same value'}; outcome: {self.outcome}"
        )


def plan_row(w: Exported, current: tuple[int, bytes] | None, *, force: bool) -> Row:
    """Pure: what a replay does with one exported write, given the key's (mod_revision, value) on
    the cluster now (None: absent)."""
    mod, value = current if current is not None else (0, None)
    differs = current is not None if w.op is Op.DELETE else value != w.value
    if not differs:
        return Row(w, Act.SAME, mod, False)
    act = Act.DELETE if w.op is Op.DELETE else Act.PUT
    return Row(w, act if mod == w.cluster_mod_revision or force else Act.CHANGED, mod, True)


def _current(c: EtcdClient, key: bytes) -> tuple[int, bytes] | None:
    r = c.range(key, timeout=10.0)
    return (r.kvs[0].mod_revision, r.kvs[0].value) if r.kvs else None


def replay(
    inv: Inventory, state: ClusterState, writes: Sequence[Exported], *, apply: bool, force: bool = False
) -> list[Row]:
    """Plan each write against the cluster now; with apply, carry out the PUT and DELETE rows (and
    CHANGED with force: they are PUT or DELETE rows then), each by a transaction on the mod_revision
    just read."""
    endpoints = member_endpoints(inv, state)
    if not endpoints:
        raise InputError(f"no voter member of {inv.cluster} answers: nothing can be replayed")
    audit = audit_log_for(inv) if apply else None
    rows: list[Row] = []
    with client_for(inv, endpoints) as c:
        for w in writes:
            row = plan_row(w, _current(c, w.key), force=force)
            if apply and row.act.acts:
                t0 = time.monotonic()
                if row.act is Act.DELETE:
                    ok, rev = c.delete_if_mod_revision(w.key, row.current_mod_revision)
                else:
                    ok, rev = c.put_if_mod_revision(w.key, w.value, row.current_mod_revision)
                done = "deleted" if row.act is Act.DELETE else "put"
                outcome = f"{done} at revision {rev}" if ok else f"not {done}: the key changed meanwhile"
                row = Row(w, row.act, row.current_mod_revision, row.differs, outcome)
                if audit is not None:  # the key's name, never its value
                    audit.event(
                        host=w.host or "-", action="diverged.replay", outcome="ok" if ok else "changed",
                        reason=outcome, key=key_text(w.key), old_mod_revision=w.mod_revision,
                        duration_s=round(time.monotonic() - t0, 3),
                    )  # fmt: skip
            elif apply:
                outcome = "nothing to do" if row.act is Act.SAME else "skipped: changed since the export"
                row = Row(w, row.act, row.current_mod_revision, row.differs, outcome)
            rows.append(row)
    return rows
