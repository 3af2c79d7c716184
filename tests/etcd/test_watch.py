"""Watch, Txn, Compact and LeaseGrant of the etcd client against real 3-member TLS clusters (3.4, 3.5)."""

from __future__ import annotations

import pytest

from etcd_dr.etcd import RevisionCompacted, TxnDelete, TxnPut, WatchBatch
from etcd_dr.etcd.localcluster import LocalCluster

pytestmark = pytest.mark.etcd


def _drain(w, until_revision: int, timeout: float = 5.0) -> list:
    events = []
    while not events or events[-1].kv.mod_revision < until_revision:
        b = w.get(timeout)
        assert b is not None, f"no watch response within {timeout} s (have {len(events)} events)"
        events.extend(b.events)
    return events


def test_watch_sees_every_revision_with_prev_kv(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        start = c.put("/w/a", "1").revision
        r_txn = c.txn([TxnPut(b"/w/b", b"2"), TxnPut(b"/w/a", b"3"), TxnDelete(b"/w/none")])
        r_del = c.txn([TxnDelete(b"/w/b")])
        with c.watch(cluster.endpoints[1], start) as w:
            events = _drain(w, r_del)
            w.request_progress()
            progress = w.get(5.0)
    assert r_txn == start + 1 and r_del == start + 2  # one revision per write txn
    got = [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events]
    assert got == [
        ("PUT", b"/w/a", b"1", start),
        ("PUT", b"/w/b", b"2", start + 1),
        ("PUT", b"/w/a", b"3", start + 1),  # a txn's events share its revision
        ("DELETE", b"/w/b", b"", start + 2),
    ]
    assert events[0].prev_kv is None or events[0].prev_kv.mod_revision < start
    assert events[2].prev_kv is not None and events[2].prev_kv.value == b"1"
    assert events[3].prev_kv is not None and events[3].prev_kv.value == b"2"
    # a progress notification: no events, the member's revision (everything up to it was sent)
    assert isinstance(progress, WatchBatch) and progress.progress and progress.revision >= r_del


def test_watch_from_a_compacted_revision_says_how_far(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        old = c.put("/w/c", "1").revision
        now = c.put("/w/c", "2").revision
        c.compact(now)
        with pytest.raises(RevisionCompacted) as exc, c.watch(cluster.endpoints[0], old) as w:
            w.get(5.0)
    assert exc.value.compact_revision == now
    assert "compacted" in str(exc.value)


def test_lease_grant_with_an_id_and_a_put_bound_to_it(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        lid = c.lease_grant(30, id=0x7E57_0001)  # each etcd version has its own cluster
        c.txn([TxnPut(b"/w/leased", b"x", lease=lid)])
        kv = c.range("/w/leased").kvs[0]
        left, granted = c.lease_ttl(lid)
        assert kv.lease == lid and granted == 30 and 0 < left <= 30
        assert c.lease_ttl(lid + 1)[0] == -1  # no such lease
