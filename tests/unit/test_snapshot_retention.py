"""Retention is exact on fixtures: keep_last, daily and weekly boundaries, unverified and corrupt."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from etcd_dr.snapshots.record import SnapshotRecord, Verdict
from etcd_dr.snapshots.retention import RetentionPolicy, classify

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)  # a Friday, ISO week 2026-W48


def rec(t: dt.datetime, verdict: Verdict = Verdict.VERIFIED, cluster: str = "c") -> SnapshotRecord:
    sid = f"{cluster}-{t:%Y%m%dT%H%M%S}"
    return SnapshotRecord(
        id=sid, cluster=cluster, member="m1", endpoint="https://10.0.0.1:2379", revision=1, raft_index=1,
        size=1, sha256="0" * 64, created=t, verified=verdict is Verdict.VERIFIED, verdict=verdict,
        reason="r", path=Path(f"/snap/{sid}.db"),
    )  # fmt: skip


def kept(decisions) -> set[str]:
    return {d.record.id for d in decisions if d.keep}


def test_keep_last_only() -> None:
    recs = [rec(NOW - dt.timedelta(hours=h)) for h in range(6)]
    d = classify(recs, RetentionPolicy(keep_last=3, keep_daily=0, keep_weekly=0), NOW)
    assert kept(d) == {r.id for r in recs[:3]}
    assert [x.record.id for x in d] == [r.id for r in recs]  # newest first
    assert all("outside the policy" in x.reason for x in d if not x.keep)


def test_daily_boundary_is_utc_midnight() -> None:
    # keep_daily=2: today and yesterday; the newest of each day
    today_late = rec(NOW - dt.timedelta(hours=1))
    today_early = rec(dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC))
    yest_late = rec(dt.datetime(2026, 11, 26, 23, 59, 59, tzinfo=dt.UTC))
    yest_early = rec(dt.datetime(2026, 11, 26, 0, 0, 1, tzinfo=dt.UTC))
    two_days = rec(dt.datetime(2026, 11, 25, 23, 0, tzinfo=dt.UTC))
    d = classify(
        [today_late, today_early, yest_late, yest_early, two_days],
        RetentionPolicy(keep_last=1, keep_daily=2, keep_weekly=0),
        NOW,
    )
    assert kept(d) == {today_late.id, yest_late.id}
    by = {x.record.id: x for x in d}
    assert "newest verified of 2026-11-26 (keep_daily=2)" in by[yest_late.id].reason
    assert not by[two_days.id].keep


def test_weekly_boundary_is_iso_monday() -> None:
    # keep_weekly=2: this ISO week (from Mon 2026-11-23) and the one before (from Mon 2026-11-16)
    mon = rec(dt.datetime(2026, 11, 23, 0, 0, 5, tzinfo=dt.UTC))
    sun_before = rec(dt.datetime(2026, 11, 22, 23, 59, tzinfo=dt.UTC))
    sat_before = rec(dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC))
    older_week = rec(dt.datetime(2026, 11, 15, 23, 0, tzinfo=dt.UTC))
    d = classify(
        [mon, sun_before, sat_before, older_week],
        RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=2),
        NOW,
    )
    assert kept(d) == {mon.id, sun_before.id}
    by = {x.record.id: x for x in d}
    assert "week 2026-W47" in by[sun_before.id].reason
    assert not by[sat_before.id].keep and not by[older_week.id].keep


def test_unverified_and_corrupt() -> None:
    newest_unverified = rec(NOW - dt.timedelta(minutes=5), Verdict.UNVERIFIED)
    verified = rec(NOW - dt.timedelta(hours=1))
    old_unverified = rec(NOW - dt.timedelta(hours=2), Verdict.UNVERIFIED)
    corrupt = rec(NOW - dt.timedelta(hours=3), Verdict.CORRUPT)
    future = rec(NOW + dt.timedelta(hours=1))
    d = classify(
        [newest_unverified, verified, old_unverified, corrupt, future],
        RetentionPolicy(keep_last=5, keep_daily=7, keep_weekly=4),
        NOW,
    )
    by = {x.record.id: x for x in d}
    assert by[newest_unverified.id].keep and "newer than every verified" in by[newest_unverified.id].reason
    assert by[verified.id].keep
    assert not by[old_unverified.id].keep and not by[corrupt.id].keep
    assert "corrupt" in by[corrupt.id].reason
    assert by[future.id].keep and "clock" in by[future.id].reason


def test_no_verified_snapshot_keeps_everything_unverified() -> None:
    recs = [rec(NOW - dt.timedelta(hours=h), Verdict.UNVERIFIED) for h in range(3)]
    assert all(x.keep for x in classify(recs, RetentionPolicy(1, 0, 0), NOW))


def test_clusters_are_separate() -> None:
    a = [rec(NOW - dt.timedelta(hours=h), cluster="a") for h in range(3)]
    b = [rec(NOW - dt.timedelta(hours=h), cluster="b") for h in range(3)]
    d = classify(a + b, RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0), NOW)
    assert kept(d) == {a[0].id, b[0].id}


def test_thirty_days_hourly_default_policy() -> None:
    recs = [rec(NOW - dt.timedelta(hours=h)) for h in range(24 * 30)]
    d = classify(recs, RetentionPolicy(keep_last=5, keep_daily=7, keep_weekly=4), NOW)
    ks = sorted((x.record.created for x in d if x.keep), reverse=True)
    # 5 newest (today) + newest of the 6 days before (23:00 each) + newest of W46 and W45 (W48's and
    # W47's newest are already kept as a day's)
    assert len(ks) == 5 + 6 + 2
    assert ks[:5] == [NOW - dt.timedelta(hours=h) for h in range(5)]
    assert dt.datetime(2026, 11, 21, 23, 0, tzinfo=dt.UTC) in ks  # Sat: a kept day, not only a week's
    assert dt.datetime(2026, 11, 15, 23, 0, tzinfo=dt.UTC) in ks  # Sun of W46
    assert dt.datetime(2026, 11, 8, 23, 0, tzinfo=dt.UTC) in ks  # Sun of W45
    assert dt.datetime(2026, 11, 1, 23, 0, tzinfo=dt.UTC) not in ks  # W44: beyond keep_weekly
