"""The rule, pure: which keys of an old member are writes the recovered cluster does not have.

After a forced recovery the two histories are one up to the fork revision and then go separate ways
with the same revision numbers, so a revision number alone tells nothing above the fork. The rule:

    a key the old member holds is a diverged write when the recovered cluster, read at that key's
    mod_revision, does not hold the same value written at that same mod_revision

(a shared write is in both histories at its revision, whatever the cluster wrote to the key since;
a write the old majority acknowledged after the fork is in the old history only). A key identical
on both sides now (value, mod_revision, create_revision, version) needs no history read. When the
cluster has compacted past a revision, the fork revision recorded by the recovery decides (at or
below it: shared); without it the key is reported, marked uncertain. Keys the old member deleted
after the fork (the cluster still has them with a mod_revision at or below the fork) are listed as
deleted, when the fork revision is known.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from etcd_dr.etcd.client import KeyValue


class Seen(enum.Enum):
    """What the cluster said when asked for a key at a revision it has compacted away."""

    COMPACTED = "compacted"


#: The cluster's key at the old write's mod_revision: its KeyValue, None (absent then), or COMPACTED.
History = Mapping[tuple[bytes, int], KeyValue | Seen | None]


def key_text(key: bytes) -> str:
    """A key for people and JSON: its text, or `b64:<base64>` when it is not UTF-8."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(key).decode()


@dataclass(frozen=True)
class DivergedWrite:
    """A write of the old member that is not in the recovered cluster's history."""

    kv: KeyValue  # as the old member holds it
    cluster_mod_revision: int  # the key's mod_revision on the recovered cluster now; 0: absent there
    cluster_value_differs: bool  # the cluster's current value is not the old member's
    certain: bool = True  # False: the cluster compacted past it and no fork revision was known

    def to_json(self) -> dict:
        return {
            "key": key_text(self.kv.key),
            "mod_revision": self.kv.mod_revision,
            "create_revision": self.kv.create_revision,
            "version": self.kv.version,
            "lease": self.kv.lease,
            "value_size": len(self.kv.value),
            "cluster_mod_revision": self.cluster_mod_revision,
            "cluster_value_differs": self.cluster_value_differs,
            "certain": self.certain,
        }


@dataclass(frozen=True)
class Divergence:
    diverged: tuple[DivergedWrite, ...]  # sorted by key
    deleted: tuple[bytes, ...]  # deleted on the old member after the fork; the cluster still has them
    old_revision: int
    cluster_revision: int
    fork_revision: int | None

    @property
    def keys(self) -> list[str]:
        return [key_text(d.kv.key) for d in self.diverged]


def _same(a: KeyValue, b: KeyValue | None) -> bool:
    return (
        b is not None
        and a.value == b.value
        and a.mod_revision == b.mod_revision
        and a.create_revision == b.create_revision
        and a.version == b.version
    )


def history_needed(
    old: Iterable[KeyValue], now: Mapping[bytes, KeyValue], cluster_revision: int
) -> list[tuple[bytes, int]]:
    """The (key, revision) reads compare() needs from the recovered cluster: keys that differ now,
    at the old write's mod_revision (none above the cluster's revision: it never wrote there)."""
    return [
        (kv.key, kv.mod_revision)
        for kv in old
        if not _same(kv, now.get(kv.key)) and kv.mod_revision <= cluster_revision
    ]


def compare(
    old: Sequence[KeyValue],
    now: Mapping[bytes, KeyValue],
    history: History,
    *,
    old_revision: int,
    cluster_revision: int,
    fork_revision: int | None,
) -> Divergence:
    """Apply the rule (module docstring) to the old member's keys `old`, the recovered cluster's keys
    `now` (at cluster_revision) and its `history` reads (history_needed)."""
    diverged: list[DivergedWrite] = []
    for kv in old:
        cur = now.get(kv.key)
        if _same(kv, cur):
            continue
        certain = True
        if kv.mod_revision <= cluster_revision:
            seen = history.get((kv.key, kv.mod_revision))
            if seen is Seen.COMPACTED:
                if fork_revision is not None and kv.mod_revision <= fork_revision:
                    continue  # both histories are one up to the fork
                certain = fork_revision is not None
            elif (
                isinstance(seen, KeyValue) and seen.mod_revision == kv.mod_revision and seen.value == kv.value
            ):
                continue  # the same write, in the cluster's history too
        diverged.append(
            DivergedWrite(
                kv,
                cur.mod_revision if cur is not None else 0,
                cur is None or cur.value != kv.value,
                certain,
            )
        )
    deleted: list[bytes] = []
    if fork_revision is not None and old_revision > fork_revision:
        held = {kv.key for kv in old}
        deleted = [k for k, kv in now.items() if k not in held and kv.mod_revision <= fork_revision]
    return Divergence(
        tuple(sorted(diverged, key=lambda d: d.kv.key)),
        tuple(sorted(deleted)),
        old_revision,
        cluster_revision,
        fork_revision,
    )
