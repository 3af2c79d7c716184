"""The delta log's segments on disk: format, checksum, spans, gaps, duplicates, a torn open segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcd_dr.deltalog import DeltaLog, Event, GapError, Record, SegmentError, SegmentWriter
from etcd_dr.deltalog.segment import read_segment


def rec(rev: int, *keys: str, at: float = 1000.0) -> Record:
    keys = keys or (f"/k/{rev}",)
    return Record(
        rev,
        at + rev,
        tuple(Event("put", k.encode(), f"v{rev}".encode(), None, 0, rev, 1) for k in keys),
    )


def write(dir: Path, first: int, last: int, *, seal: bool = True) -> SegmentWriter:
    w = SegmentWriter.create(dir, "lab", first)
    w.append([rec(r) for r in range(first, last + 1)])
    if seal:
        w.seal()
    else:
        w.close()
    return w


def test_records_come_back_in_order_across_segments_and_the_open_one(tmp_path: Path) -> None:
    write(tmp_path, 11, 20)
    write(tmp_path, 21, 30)
    write(tmp_path, 31, 33, seal=False)  # the open segment a running watcher appends to
    log = DeltaLog(tmp_path)
    assert [s.name for s in log.segments()] == [
        "0000000000000011-0000000000000020.seg",
        "0000000000000021-0000000000000030.seg",
    ]
    assert log.spans() == [(11, 33)] and log.spans(include_open=False) == [(11, 30)]
    assert [r.revision for r in log.records(15, 32)] == list(range(15, 33))
    assert [r.revision for r in log.records(25)] == list(range(25, 34))
    assert [r.revision for r in log.records(25, include_open=False)] == list(range(25, 31))
    assert log.last_revision() == 33


def test_a_txn_keeps_its_events_together_with_prev_values_and_bytes(tmp_path: Path) -> None:
    w = SegmentWriter.create(tmp_path, "lab", 5)
    txn = Record(
        5,
        1.5,
        (
            Event("put", b"\xff\x00key", b"\x01\x02", b"old", 7, 3, 2),
            Event("delete", b"/gone", b"", b"was", 0, 0, 0),
        ),
    )
    w.append([txn])
    seg = w.seal()
    assert list(read_segment(seg.path)) == [txn]


def test_a_corrupted_segment_is_refused_by_its_checksum_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, 1, 10)
    seg = DeltaLog(tmp_path).segments()[0]
    data = bytearray(seg.path.read_bytes())
    data[data.index(b'"v":"') + 6] ^= 0x01  # one bit of one value's base64
    seg.path.write_bytes(bytes(data))
    with pytest.raises(SegmentError, match=rf"{seg.name}: checksum mismatch .* corrupt; refused"):
        list(DeltaLog(tmp_path).records(1))
    seg.path.write_bytes(bytes(data[:-40]))  # cut short: the footer is gone
    with pytest.raises(SegmentError, match=rf"{seg.name}: .*footer"):
        list(DeltaLog(tmp_path).records(1))


def test_a_gap_is_an_error_naming_the_missing_revisions(tmp_path: Path) -> None:
    write(tmp_path, 1, 10)
    write(tmp_path, 21, 30)
    log = DeltaLog(tmp_path)
    assert log.spans() == [(1, 10), (21, 30)]
    with pytest.raises(GapError, match=r"revisions 11\.\.20 are not in the delta log"):
        list(log.records(5))
    assert [r.revision for r in log.records(22)] == list(range(22, 31))  # after the gap: fine
    with pytest.raises(GapError, match=r"revisions 31\.\.40 are not in the delta log \(it ends at 30\)"):
        list(log.records(25, 40))


def test_a_revision_held_twice_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, 1, 10)
    write(tmp_path, 8, 12)
    with pytest.raises(GapError, match="revision 8 is held twice"):
        list(DeltaLog(tmp_path).records(1))


def test_the_writer_refuses_a_skipped_or_repeated_revision(tmp_path: Path) -> None:
    w = SegmentWriter.create(tmp_path, "lab", 1)
    w.append([rec(1), rec(2)])
    with pytest.raises(GapError, match="revision 4 where 3 comes next"):
        w.append([rec(4)])
    with pytest.raises(GapError, match="revision 2 where 3 comes next"):
        w.append([rec(2)])
    w.close()


def test_a_killed_writers_open_segment_is_sealed_without_its_torn_line(tmp_path: Path) -> None:
    w = write(tmp_path, 100, 104, seal=False)
    with open(w.path, "ab") as f:
        f.write(rec(105).line()[:20])  # a crash in the middle of a line
    log = DeltaLog(tmp_path)
    assert [r.revision for r in log.records(100)] == list(range(100, 105))
    sealed = log.seal_open()
    assert sealed is not None and sealed.name == "0000000000000100-0000000000000104.seg"
    assert log.open_segment() is None
    assert [r.revision for r in read_segment(sealed.path)] == list(range(100, 105))


def test_a_bad_line_inside_an_open_segment_is_corruption(tmp_path: Path) -> None:
    w = write(tmp_path, 1, 5, seal=False)
    lines = w.path.read_bytes().split(b"\n")
    lines[2] = b"{not json"
    w.path.write_bytes(b"\n".join(lines))
    with pytest.raises(SegmentError, match=r"0000000000000001\.seg\.part: line 3 is not a record"):
        DeltaLog(tmp_path).seal_open()


def test_sealed_segments_are_copied_off_site_read_back_and_hashed_once(tmp_path: Path) -> None:
    from etcd_dr.deltalog.offsite import copies, ship_pending
    from etcd_dr.inventory import OffsiteKind, OffsiteSettings

    log_dir, remote = tmp_path / "log", tmp_path / "remote"
    write(log_dir, 1, 10)
    write(log_dir, 11, 12, seal=False)  # open: not copied
    settings = OffsiteSettings(kind=OffsiteKind.DIR, dir=remote)
    assert ship_pending(log_dir, "lab", settings) == 0
    copied = remote / "lab" / "deltalog" / "0000000000000001-0000000000000010.seg"
    assert copied.read_bytes() == (log_dir / copied.name).read_bytes()
    made = copies(log_dir)
    assert list(made) == [copied.name] and made[copied.name].verified
    write(log_dir, 13, 15)
    copied.write_bytes(b"changed")  # a copy already verified is not made again
    assert ship_pending(log_dir, "lab", settings) == 0
    assert sorted(copies(log_dir)) == [copied.name, "0000000000000013-0000000000000015.seg"]
    assert copied.read_bytes() == b"changed"


def test_segments_no_kept_snapshot_needs_are_pruned_with_their_off_site_copies(tmp_path: Path) -> None:
    import datetime as dt

    from inventory_sample import sample_data, write_invdir

    from etcd_dr.deltalog.offsite import copies, ship_pending
    from etcd_dr.deltalog.service import log_dir_for, prune_segments
    from etcd_dr.inventory import parse_inventory
    from etcd_dr.snapshots import Catalog, SnapshotRecord, Verdict

    d = write_invdir(tmp_path)
    inv = parse_inventory(sample_data(snapshots={"dir": "snaps", "offsite": {"dir": "remote"}}), d)
    now = dt.datetime.now(dt.UTC)
    for i, rev in enumerate((10, 30)):
        Catalog(inv.snapshot_settings().dir).add(
            SnapshotRecord(
                f"s{i}",
                inv.cluster,
                "m1",
                "",
                rev,
                rev,
                1,
                "ab",
                now,
                True,
                Verdict.VERIFIED,
                "",
                tmp_path / f"s{i}.db",
            )
        )
    log_dir = log_dir_for(inv)
    for first, last in ((1, 5), (6, 10), (11, 20), (21, 40)):
        write(log_dir, first, last)
    ship_pending(log_dir, inv.cluster, inv.snapshot_settings().offsite)
    assert len(copies(log_dir)) == 4
    planned = prune_segments(inv, dry_run=True)
    assert [p.segment[:33] for p in planned] == [
        "0000000000000001-0000000000000005",
        "0000000000000006-0000000000000010",
    ]  # 11..20 rolls snapshot s0 (revision 10) forward: kept
    assert len(DeltaLog(log_dir).segments()) == 4  # a dry run deletes nothing
    done = prune_segments(inv)
    assert all(p.ok for p in done) and "oldest verified snapshot kept, s0 (revision 10)" in done[0].reason
    assert [s.first for s in DeltaLog(log_dir).segments()] == [11, 21]
    assert sorted(copies(log_dir)) == [s.name for s in DeltaLog(log_dir).segments()]
    assert sorted(p.name for p in (d / "remote" / inv.cluster / "deltalog").iterdir()) == sorted(
        copies(log_dir)
    )


def test_a_log_of_another_history_is_refused_by_its_previous_values() -> None:
    import hashlib

    from etcd_dr.deltalog.replay import ReplayError, expected_state

    def d(v: bytes, mod: int) -> tuple:
        return (hashlib.sha256(v).digest(), 1, mod, 1, 0)

    base = {b"/a": d(b"1", 5)}
    put_b = Event("put", b"/b", b"x", None, 0, 7, 1)
    del_a = Event("delete", b"/a", b"", b"2", 0, 0, 0)
    ok = [Record(6, 0.0, (Event("put", b"/a", b"2", b"1", 0, 1, 2),)), Record(7, 0.0, (put_b, del_a))]
    assert expected_state(base, ok) == {b"/b": (hashlib.sha256(b"x").digest(), 7, 7, 1, 0)}
    other = [Record(6, 0.0, (Event("put", b"/a", b"2", b"9", 0, 1, 2),))]  # /a was "9" in that history
    with pytest.raises(ReplayError, match=r"revision 6: the log says b'/a' was set to another value before"):
        expected_state(base, other)
    fresh = [Record(6, 0.0, (Event("put", b"/a", b"2", None, 0, 6, 1),))]  # created there, exists here
    with pytest.raises(ReplayError, match="was absent before, the snapshot's history has it set"):
        expected_state(base, fresh)


def test_a_segment_sealed_while_it_is_read_is_found_under_its_new_name(tmp_path: Path, monkeypatch) -> None:
    """A reader (snapshot list, recover, check) runs beside the watcher, which seals its open
    segment at any moment: the reader lists again instead of seeing a gap or a missing file."""
    import hashlib
    import json

    import etcd_dr.deltalog.log as logmod
    from etcd_dr.deltalog.segment import read_open, segment_name

    write(tmp_path, 1, 10)
    part = write(tmp_path, 11, 13, seal=False).path
    sealed = []

    def racing(path: Path):  # the watcher seals it right before the reader opens it
        if not sealed:
            body = part.read_bytes()
            footer = {"footer": True, "first_revision": 11, "last_revision": 13, "records": 3, "events": 3,
                      "sha256": hashlib.sha256(body).hexdigest()}  # fmt: skip
            part.write_bytes(body + (json.dumps(footer) + "\n").encode())
            part.rename(tmp_path / segment_name(11, 13))
            sealed.append(True)
        return read_open(path)

    monkeypatch.setattr(logmod, "read_open", racing)
    assert [r.revision for r in DeltaLog(tmp_path).records(1)] == list(range(1, 14))
    assert sealed and DeltaLog(tmp_path).open_segment() is None
    assert DeltaLog(tmp_path).spans() == [(1, 13)]


def test_the_stream_without_a_snapshot_or_a_log_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    from etcd_dr.deltalog.stream import Streamer
    from etcd_dr.errors import InputError

    s = Streamer(object(), ["https://127.0.0.1:1"], tmp_path / "log", "lab", snapshot_revision=lambda: None)  # type: ignore[arg-type]
    with pytest.raises(
        InputError, match="no verified snapshot of cluster lab in the catalog and no delta log"
    ):
        s.run(max_seconds=1)
    assert not (tmp_path / "log").exists()


def test_the_watch_goes_to_a_follower_then_the_leader_then_the_silent_then_learners(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from etcd_dr.deltalog.stream import Streamer
    from etcd_dr.etcd import EtcdTimeout

    roles = {"a": "learner", "b": "silent", "c": "leader", "d": "follower", "e": "follower"}

    class Statuses:
        dial_timeout = 2.0

        def status(self, ep: str, *, timeout: float) -> SimpleNamespace:
            role = roles[ep.split("//")[1][0]]
            if role == "silent":
                raise EtcdTimeout(f"status on {ep}: no answer", endpoint=ep)
            return SimpleNamespace(is_learner=role == "learner", is_leader=role == "leader")

    eps = [f"https://{n}:2379" for n in "abcde"]
    s = Streamer(Statuses(), eps, tmp_path / "log", "lab", snapshot_revision=lambda: 1)  # type: ignore[arg-type]
    assert [ep[8] for ep in s._leader_last(eps)] == ["d", "e", "c", "b", "a"]
