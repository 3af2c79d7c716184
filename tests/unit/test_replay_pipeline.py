"""The replay's pipeline: many transactions in flight, applied by a store that (like etcd) applies
concurrent requests in any order; each revision must still land as exactly that revision."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from etcd_dr.deltalog import Event, Record
from etcd_dr.deltalog.replay import ReplayError, replay
from etcd_dr.etcd.client import CompareTarget, TxnCompare, TxnDelete, TxnOutcome, TxnPut

State = dict[bytes, tuple[int, int]]  # key -> (mod_revision, version)


class ReorderingStore:
    """An MVCC store's revision counter and keys, taking transactions as etcd does (compare, then
    all ops under one new revision, or nothing) but applying the ones in flight in a shuffled
    order once a result is asked for: the reordering etcd is free to do."""

    def __init__(self, revision: int, seed: int, *, stray_write_at: int | None = None) -> None:
        self.revision = revision
        self.kv: State = {}
        self.rng = random.Random(seed)
        self.queue: list[_Pending] = []
        self.stray_write_at = stray_write_at

    def txn_async(
        self,
        ops: Sequence[TxnPut | TxnDelete],
        *,
        endpoint: str,
        compare: Sequence[TxnCompare] = (),
        timeout: float | None = None,
    ) -> _Pending:
        p = _Pending(self, ops, compare)
        self.queue.append(p)
        return p

    def flush(self) -> None:
        q, self.queue = self.queue, []
        self.rng.shuffle(q)
        for p in q:
            p.outcome = self.apply(p.ops, p.compare)

    def apply(self, ops: Sequence[TxnPut | TxnDelete], compare: Sequence[TxnCompare]) -> TxnOutcome:
        for c in compare:
            mod, ver = self.kv.get(c.key, (0, 0))
            if (mod if c.target is CompareTarget.MOD else ver) != c.value:
                return TxnOutcome(False, self.revision)
        if self.revision == self.stray_write_at:
            self.revision += 1  # another client's write (an expired lease's delete, say)
        self.revision += 1
        for o in ops:
            if isinstance(o, TxnPut):
                self.kv[o.key] = (self.revision, self.kv.get(o.key, (0, 0))[1] + 1)
            else:
                self.kv.pop(o.key, None)
        return TxnOutcome(True, self.revision)


class _Pending:
    def __init__(self, store: ReorderingStore, ops: Sequence, compare: Sequence[TxnCompare]) -> None:
        self.store, self.ops, self.compare = store, ops, compare
        self.outcome: TxnOutcome | None = None

    def result(self) -> TxnOutcome:
        if self.outcome is None:
            self.store.flush()
        assert self.outcome is not None
        return self.outcome


def history(first: int, n: int, seed: int) -> tuple[list[Record], State]:
    """n revisions of puts, deletes of existing keys and two-key txns, and the keys they leave."""
    rng = random.Random(seed)
    kv: State = {}
    out = []
    for rev in range(first, first + n):
        keys = rng.sample([f"/k/{i}".encode() for i in range(12)], rng.choice((1, 1, 2)))
        events = []
        for k in keys:
            if k in kv and rng.random() < 0.3:
                events.append(Event("delete", k, b"", b"v", 0, 0, 0))
                kv.pop(k)
            else:
                ver = kv.get(k, (0, 0))[1] + 1
                events.append(Event("put", k, f"v{rev}".encode(), None, 0, rev, ver))
                kv[k] = (rev, ver)
        out.append(Record(rev, 0.0, tuple(events)))
    return out, kv


@pytest.mark.parametrize("window", [2, 8, 64])
def test_every_revision_lands_as_itself_however_the_store_orders_what_is_in_flight(window: int) -> None:
    records, want = history(101, 300, seed=window)
    store = ReorderingStore(100, seed=window)
    done = replay(store, records, endpoint="https://127.0.0.1:1", window=window)  # type: ignore[arg-type]
    assert (done.records, store.revision, store.kv) == (300, 400, want)
    assert done.resent > 0  # the store did overtake: the guards refused those, and they came again


def test_one_in_flight_never_needs_sending_again() -> None:
    records, want = history(101, 50, seed=1)
    store = ReorderingStore(100, seed=1)
    done = replay(store, records, endpoint="https://127.0.0.1:1", window=1)  # type: ignore[arg-type]
    assert (store.kv, done.resent) == (want, 0)


def test_a_store_that_took_another_write_stops_the_replay_naming_the_revision() -> None:
    records, _ = history(101, 50, seed=3)
    store = ReorderingStore(100, seed=3, stray_write_at=120)
    with pytest.raises(ReplayError, match=r"revision 121 of the log (replayed as revision 122|was refused)"):
        replay(store, records, endpoint="https://127.0.0.1:1", window=8)  # type: ignore[arg-type]
