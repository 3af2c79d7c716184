"""Roll a snapshot forward through the delta log: point-in-time recovery's new snapshot.

    res = roll_forward(inv, to_revision=N)   # or to_time=T, or neither: the last revision on record

Where the replay happens, and why: on THIS machine, into the snapshot restored and served by a
throwaway single-member etcd on loopback (etcd_dr.snapshots.trial.served_db, the trial restore the
snapshot verification uses), not into the restored member on its host. The log is here; the
member on the host never serves a half-replayed state (clients cannot even reach the loopback
etcd); the result is an ordinary snapshot file that the recovery's tested restore path takes as it
is (hash-checked copy, staging dir, swap, start), and it is verified before anything depends on it.

The replay: each original revision as ONE transaction (its puts and deletes, in the log's order),
from the snapshot's revision on, into a member that takes no other write. etcd adds one to the
revision per write transaction, so the restored store's revision after the record of revision R is
R: checked after every transaction (a mismatch stops it). The restored cluster's revision therefore
equals the original's at that point and never goes back for a watcher; see README "Delta log".

Lease-bound keys: a put is replayed with its original lease id. A lease the snapshot holds is
there already (etcd restores leases from the db); one granted after the snapshot is granted again
with the same id and `lease_ttl_s` (the log has no TTL: etcd's watch events do not carry one), so
its keys expire after the restore unless their owner (kube-apiserver) keeps the lease alive.

The verification, against the log and not against itself: the keys at the snapshot's revision
(still in the replayed store's history, nothing is compacted) with every logged event applied must
equal the store's keys at the target revision: value, create and mod revision, version and lease of
each key. Then the new db is snapshotted, verified like any snapshot (trial restore, HashKV equal to
the replayed store's), and cataloged with `created` = when its last revision was received, so the
catalog's time order is the order of the data the snapshots hold.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcd_dr.deltalog.log import DeltaLog
from etcd_dr.deltalog.segment import Record
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd.client import CompareTarget, EtcdClient, PendingTxn, TxnCompare, TxnDelete, TxnPut

DEFAULT_LEASE_TTL_S = 60
SHM = Path("/dev/shm")


def scratch_parent(db_size: int, fallback: Path) -> Path:
    """Where the throwaway etcd of a replay keeps its data: memory (/dev/shm) when it has room for
    three times the db, else `fallback`. The replay's etcd fsyncs its WAL once per transaction;
    in memory that costs nothing, and its data is thrown away once snapshotted and verified."""
    try:
        st = os.statvfs(SHM)
    except OSError:
        return fallback
    return SHM if st.f_bavail * st.f_frsize > 3 * db_size + (64 << 20) else fallback


class ReplayError(EtcdDrError):
    """The replay or its verification failed; nothing was cataloged."""


@dataclass(frozen=True)
class Target:
    """Where to roll a snapshot to, and why (one sentence)."""

    revision: int
    at: float | None  # when that revision was received (None: the snapshot's own revision)
    reason: str


def choose_target(
    log: DeltaLog,
    snapshot_revision: int,
    *,
    to_revision: int | None = None,
    to_time: float | None = None,
) -> Target:
    """The revision to roll to: `to_revision`, the last one received by `to_time`, or the last one
    the log holds after the snapshot. InputError names the option and the span that is possible."""
    if to_revision is not None and to_time is not None:
        raise InputError("give --to-revision or --to-time, not both")
    spans = log.spans()
    span = next(((a, b) for a, b in spans if a <= snapshot_revision + 1 and snapshot_revision <= b), None)
    last = span[1] if span is not None else snapshot_revision
    held = ", ".join(f"{a}..{b}" for a, b in spans) or "nothing"
    if to_revision is not None:
        if not snapshot_revision <= to_revision <= last:
            raise InputError(
                f"--to-revision {to_revision}: the snapshot is at revision {snapshot_revision} and the "
                f"delta log continues it to {last} (it holds {held}); give a revision in "
                f"{snapshot_revision}..{last}"
            )
        at = _at(log, snapshot_revision, to_revision)
        return Target(to_revision, at, f"revision {to_revision}, as asked")
    if to_time is not None:
        best: Record | None = None
        for r in log.records(snapshot_revision + 1, last) if last > snapshot_revision else ():
            if r.at > to_time:
                break
            best = r
        if best is None:
            return Target(
                snapshot_revision, None, f"no revision after the snapshot was received by {_iso(to_time)}"
            )
        return Target(best.revision, best.at, f"the last revision received by {_iso(to_time)}")
    if span is None:
        return Target(
            snapshot_revision, None, f"the delta log does not continue the snapshot (it holds {held})"
        )
    return Target(last, _at(log, snapshot_revision, last), f"the last revision on record ({last})")


def _at(log: DeltaLog, snapshot_revision: int, revision: int) -> float | None:
    if revision <= snapshot_revision:
        return None
    return next(iter(log.records(revision, revision))).at


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Replayed:
    records: int
    events: int
    leases_granted: int
    duration_s: float
    resent: int = 0  # txns refused for overtaking their predecessor, and sent again

    @property
    def events_per_s(self) -> float:
        return self.events / self.duration_s if self.duration_s > 0 else 0.0


# Transactions in flight at once on the replay's one channel. Measured (benchmarks/pitr.py, /dev/shm):
# 2 in flight 745-761 events/s vs 584-648 with 1; etcd applied ~13 % of the pairs out of order (sent
# again); with 3 or more, one refusal takes every txn behind it along, and it was slower than 1.
WINDOW = 2


def _guard(prev: Record | None) -> TxnCompare | None:
    """The condition under which the record after `prev` may be applied: `prev` is the store's last
    write. A key `prev` put has mod_revision == prev.revision from the moment `prev` is applied
    until the next write to it (which comes after this record, and waits for it in turn); before
    `prev`, it is lower. None when `prev` only deleted: a deleted key is absent before its creation
    too, so "absent" does not say `prev` was applied; that record waits until nothing is in flight."""
    put = next((e for e in prev.events if e.type == "put"), None) if prev is not None else None
    return TxnCompare(put.key, CompareTarget.MOD, prev.revision) if put is not None and prev else None


def replay(
    client: EtcdClient,
    records: Iterable[Record],
    *,
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
    endpoint: str | None = None,
    window: int = WINDOW,
) -> Replayed:
    """Each record as one transaction; the store's revision after it must be the record's.

    `endpoint`: the one member replayed into. Up to `window` transactions are then in flight on its
    channel, so the client's work on one overlaps etcd's on another. etcd does not promise to apply
    concurrent requests in the order they were sent (measured: it often does not), and a revision
    applied out of order would change every mod_revision after it (Kubernetes' resourceVersion), so
    each txn carries a compare (`_guard`) that holds only once its predecessor is the store's last
    write: etcd evaluates it atomically as it applies the txn. A txn that overtook its predecessor
    is refused by etcd (nothing written, no revision used); the replay then waits for what is in
    flight (all refused: each one's predecessor was refused) and sends them again from there.
    A record with no guard (the first, one after a delete-only revision) is sent with nothing in
    flight. Without `endpoint`: one txn at a time, with the client's failover."""
    t0 = time.monotonic()
    n = events = granted = resent = 0
    known: set[int] = set()
    source = iter(records)
    again: deque[Record] = deque()  # refused by their guard: sent again, in order, before the rest
    inflight: deque[tuple[Record, PendingTxn | None, bool]] = deque()  # (record, txn, overtaking)
    prev: Record | None = None  # the last record sent: the next one's guard
    applied: Record | None = None  # the last record the store confirmed
    width = max(window, 1) if endpoint is not None else 1
    nxt: Record | None = None

    def send(rec: Record, guard: TxnCompare | None) -> tuple[Record, PendingTxn | None, bool]:
        nonlocal granted
        for e in rec.events:
            if e.type == "put" and e.lease and e.lease not in known:
                if client.lease_ttl(e.lease, timeout=30.0)[0] < 0:
                    client.lease_grant(lease_ttl_s, id=e.lease, timeout=30.0)
                    granted += 1
                known.add(e.lease)
        ops = [TxnPut(e.key, e.value, e.lease) if e.type == "put" else TxnDelete(e.key) for e in rec.events]
        if endpoint is None:
            _check(rec, client.txn(ops, timeout=30.0))
            return rec, None, False
        compare = [guard] if guard is not None else []
        return rec, client.txn_async(ops, compare=compare, endpoint=endpoint, timeout=30.0), bool(inflight)

    while True:
        while len(inflight) < width:
            if nxt is None:
                nxt = again.popleft() if again else next(source, None)
            if nxt is None:
                break
            guard = _guard(prev)
            if guard is None and inflight:
                break  # its predecessor's being applied cannot be told by a compare: wait for it
            inflight.append(send(nxt, guard))
            prev, nxt = nxt, None
        if not inflight:
            break
        rec, pending, overtaking = inflight.popleft()
        if pending is not None:
            out = pending.result()
            if not out.succeeded:
                if not overtaking:  # sent with its predecessor applied: the store is not the log's
                    raise ReplayError(
                        f"revision {rec.revision} of the log was refused by the restored store (its "
                        f"revision {out.revision}): the store took another write (a lease that expired "
                        "during the replay?) or the log is not this snapshot's; nothing cataloged"
                    )
                # it overtook its predecessor, so every txn sent after it failed its guard too:
                # collect them and send all again from here, its predecessor now applied
                later = [(r, p.result() if p is not None else None) for r, p, _ in inflight]
                if any(o is not None and o.succeeded for _, o in later):
                    raise ReplayError(f"revision {rec.revision}: a later revision was applied before it")
                if nxt is not None:
                    again.appendleft(nxt)
                again.extendleft(reversed([rec, *(r for r, _ in later)]))
                resent += 1 + len(later)
                inflight.clear()
                prev, nxt = applied, None
                continue
            _check(rec, out.revision)
        applied = rec
        n += 1
        events += len(rec.events)
    return Replayed(n, events, granted, time.monotonic() - t0, resent)


def _check(rec: Record, rev: int) -> None:
    if rev != rec.revision:
        raise ReplayError(
            f"revision {rec.revision} of the log replayed as revision {rev}: the restored store took "
            "another write (a lease that expired during the replay?) or the log is not this "
            "snapshot's; nothing cataloged"
        )


Digest = tuple[bytes, int, int, int, int]  # sha256 of the value, create and mod revision, version, lease
PAGE = 100  # keys per Range: etcd's values are at most ~1.5 MiB, so a page stays under gRPC's limit


def _digest(value: bytes, create: int, mod: int, version: int, lease: int) -> Digest:
    return (hashlib.sha256(value).digest(), create, mod, version, lease)


def keys_at(
    client: EtcdClient, revision: int, endpoint: str | None = None
) -> tuple[int, dict[bytes, Digest]]:
    """(the store's revision, key -> Digest) of every key at `revision`, a page at a time: memory
    holds digests, not values (a 1 GiB db is read, not held)."""
    out: dict[bytes, Digest] = {}
    start, header = b"\0", 0
    while True:
        r = client.range(start, b"\0", revision=revision, limit=PAGE, timeout=600.0)
        header = header or r.header.revision
        for kv in r.kvs:
            out[kv.key] = _digest(kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        if not r.more or not r.kvs:
            return header, out
        start = r.kvs[-1].key + b"\0"


def expected_state(base: dict[bytes, Digest], records: Iterable[Record]) -> dict[bytes, Digest]:
    """The keys at the snapshot's revision (`base`) with the logged events applied, as the log
    says they end up. Each event's previous value (the watch's prev_kv) must be the value the
    snapshot's history holds at that point: a log of another history (another cluster, a restore
    to an earlier point) is refused by the first key it disagrees on, not replayed over it."""
    state = dict(base)
    for rec in records:
        for e in rec.events:
            had = state.get(e.key)
            prev = None if e.prev_value is None else hashlib.sha256(e.prev_value).digest()
            if (had[0] if had is not None else None) != prev:
                before = "absent" if prev is None else "set to another value"
                now = "absent" if had is None else "set"
                raise ReplayError(
                    f"revision {rec.revision}: the log says {e.key!r:.60} was {before} before, the "
                    f"snapshot's history has it {now}: the log is not this snapshot's (another cluster, "
                    "or a restore to an earlier point); nothing cataloged"
                )
            if e.type == "put":
                state[e.key] = _digest(e.value, e.create_revision, rec.revision, e.version, e.lease)
            else:
                state.pop(e.key, None)
    return state


def check_against_log(client: EtcdClient, log: DeltaLog, snapshot_revision: int, target: int) -> str:
    """The replayed store's keys at `target` against the snapshot's keys with the log applied;
    ReplayError names the first keys that differ. Returns one sentence."""
    header, got = keys_at(client, target)
    if header != target:
        raise ReplayError(f"the replayed store is at revision {header}, not {target}")
    _, base = keys_at(client, snapshot_revision)
    want = expected_state(
        base, log.records(snapshot_revision + 1, target) if target > snapshot_revision else ()
    )
    if got != want:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        shown = ", ".join(repr(k)[:60] for k in diff[:3])
        raise ReplayError(
            f"the replayed store differs from the log at revision {target} in {len(diff)} keys ({shown}); "
            "nothing cataloged"
        )
    return f"{len(got)} keys at revision {target} equal the snapshot's keys with the log applied"


@dataclass(frozen=True)
class RollForward:
    source: str  # the snapshot's catalog id
    source_revision: int
    target: Target
    replayed: Replayed
    check: str
    path: Path
    record: Any  # the cataloged SnapshotRecord (Any: the record module stays out of this one's imports)
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_revision": self.source_revision,
            "revision": self.target.revision,
            "target_reason": self.target.reason,
            "replayed": {**asdict(self.replayed), "events_per_s": round(self.replayed.events_per_s, 1)},
            "check": self.check,
            "path": str(self.path),
            "snapshot": self.record.to_json(),
            "duration_s": round(self.duration_s, 3),
        }
