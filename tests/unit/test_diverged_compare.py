"""The divergence rule on fixtures: two key sets and the recovered cluster's history reads."""

from __future__ import annotations

from etcd_dr.diverged.compare import Seen, compare, history_needed, key_text
from etcd_dr.etcd.client import KeyValue


def kv(
    key: str, value: str, mod: int, create: int | None = None, version: int = 1, lease: int = 0
) -> KeyValue:
    return KeyValue(key.encode(), value.encode(), create or mod, mod, version, lease)


def run(old, now, history=None, *, old_rev, cluster_rev, fork=None):
    now_map = {k.key: k for k in now}
    return compare(
        old, now_map, history or {}, old_revision=old_rev, cluster_revision=cluster_rev, fork_revision=fork
    )


# The survivor was behind: both share /a (rev 2) and /b (rev 3); the old majority then wrote /c, /d
# (revs 4, 5) and /b again (rev 6); the recovered cluster (forked at 3) then wrote /x at 4 and /b at 5.
SHARED = [kv("/a", "1", 2), kv("/b", "1", 3)]
OLD = [kv("/a", "1", 2), kv("/b", "old", 6, create=3, version=2), kv("/c", "c", 4), kv("/d", "d", 5)]
NOW = [kv("/a", "1", 2), kv("/b", "new", 5, create=3, version=2), kv("/x", "x", 4)]
HISTORY = {
    (b"/b", 6): None,  # above the cluster's revision 5: never asked (see history_needed)
    (b"/c", 4): None,  # the cluster never had /c
    (b"/d", 5): None,
}


def test_writes_after_the_fork_are_diverged_and_shared_ones_are_not():
    d = run(OLD, NOW, HISTORY, old_rev=6, cluster_rev=5)
    assert d.keys == ["/b", "/c", "/d"]
    b = d.diverged[0]
    assert b.cluster_mod_revision == 5 and b.cluster_value_differs and b.certain
    assert d.diverged[1].cluster_mod_revision == 0  # /c: absent on the cluster


def test_history_reads_only_for_keys_that_differ_and_not_above_the_cluster_revision():
    now = {k.key: k for k in NOW}
    assert history_needed(OLD, now, 5) == [(b"/c", 4), (b"/d", 5)]


def test_a_key_the_cluster_changed_after_the_recovery_is_not_a_diverged_write():
    # the old member holds /b as written at 3 (shared); the cluster rewrote /b at 5 since
    old = [kv("/a", "1", 2), kv("/b", "1", 3)]
    d = run(old, NOW, {(b"/b", 3): kv("/b", "1", 3)}, old_rev=3, cluster_rev=5)
    assert d.diverged == ()


def test_the_same_revision_number_with_another_value_is_diverged():
    # both sides wrote /k at revision 4 after forking at 3: same key, same number, different writes
    old = [*SHARED, kv("/k", "old-side", 4)]
    now = [*SHARED, kv("/k", "new-side", 4)]
    d = run(old, now, {(b"/k", 4): kv("/k", "new-side", 4)}, old_rev=4, cluster_rev=4)
    assert d.keys == ["/k"] and d.diverged[0].cluster_value_differs


def test_identical_write_on_both_sides_is_not_reported():
    d = run([*SHARED, kv("/k", "v", 4)], [*SHARED, kv("/k", "v", 4)], old_rev=4, cluster_rev=9)
    assert d.diverged == ()


def test_compacted_history_uses_the_fork_revision_else_reports_uncertain():
    old = [kv("/a", "1", 2, version=1), kv("/c", "c", 4)]
    now = [kv("/a", "2", 7, create=2, version=2)]
    hist = {(b"/a", 2): Seen.COMPACTED, (b"/c", 4): Seen.COMPACTED}
    with_fork = run(old, now, hist, old_rev=4, cluster_rev=7, fork=3)
    assert with_fork.keys == ["/c"] and with_fork.diverged[0].certain
    without = run(old, now, hist, old_rev=4, cluster_rev=7)
    assert without.keys == ["/a", "/c"] and not any(d.certain for d in without.diverged)


def test_keys_deleted_on_the_old_member_after_the_fork():
    old = [kv("/a", "1", 2)]  # the old majority deleted /b (written at 3) after the fork at 3
    now = [kv("/a", "1", 2), kv("/b", "1", 3), kv("/y", "y", 5)]  # /y: the cluster's own, later
    d = run(old, now, old_rev=4, cluster_rev=5, fork=3)
    assert d.deleted == (b"/b",) and d.diverged == ()
    assert run(old, now, old_rev=4, cluster_rev=5).deleted == ()  # fork unknown: not claimed


def test_key_text_is_utf8_or_base64():
    assert key_text(b"/registry/pods/a") == "/registry/pods/a"
    assert key_text(b"\xff\x00") == "b64:/wA="
