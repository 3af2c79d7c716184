"""Retention: classify first (pure), delete in a separate step (Barman's shape).

Only VERIFIED snapshots fill the policy's slots, per cluster:
- keep_last N: the newest N verified snapshots;
- keep_daily D: the newest verified snapshot of each of the last D UTC days (today is one of them);
- keep_weekly W: the newest verified snapshot of each of the last W ISO weeks (this week is one).
A snapshot that is not verified is kept while it is newer than every verified one (it may be the
best there is); older ones, and corrupt ones, go. A snapshot dated after `now` is kept (a clock
was off: deleting on a wrong clock is how backups vanish).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from etcd_dr.inventory import SnapshotSettings
from etcd_dr.snapshots.record import SnapshotRecord, Verdict


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 5
    keep_daily: int = 7
    keep_weekly: int = 4

    @classmethod
    def from_settings(cls, s: SnapshotSettings) -> RetentionPolicy:
        return cls(s.keep_last, s.keep_daily, s.keep_weekly)

    def __str__(self) -> str:
        return f"keep_last={self.keep_last}, keep_daily={self.keep_daily}, keep_weekly={self.keep_weekly}"


class Decision(NamedTuple):
    record: SnapshotRecord
    keep: bool
    reason: str


def classify(records: Sequence[SnapshotRecord], policy: RetentionPolicy, now: dt.datetime) -> list[Decision]:
    """Keep or delete each record, with the reason; newest first within each cluster."""
    out: list[Decision] = []
    for cluster in sorted({r.cluster for r in records}):
        out.extend(_classify_cluster([r for r in records if r.cluster == cluster], policy, now))
    return out


def _classify_cluster(
    records: list[SnapshotRecord], policy: RetentionPolicy, now: dt.datetime
) -> list[Decision]:
    now = now.astimezone(dt.UTC)
    newest_first = sorted(records, key=lambda r: (r.created, r.id), reverse=True)
    verified = [r for r in newest_first if r.verified and r.created <= now]
    why: dict[str, list[str]] = {r.id: [] for r in newest_first}

    for r in verified[: policy.keep_last]:
        why[r.id].append(f"one of the newest {policy.keep_last} verified")
    today = now.date()
    days = {today - dt.timedelta(days=i) for i in range(policy.keep_daily)}
    seen_days: set[dt.date] = set()
    this_week = _week_start(today)
    weeks = {this_week - dt.timedelta(weeks=i) for i in range(policy.keep_weekly)}
    seen_weeks: set[dt.date] = set()
    for r in verified:  # newest first: the first one met in a day or week is that period's newest
        day = r.created.astimezone(dt.UTC).date()
        if day in days and day not in seen_days:
            seen_days.add(day)
            why[r.id].append(f"newest verified of {day.isoformat()} (keep_daily={policy.keep_daily})")
        week = _week_start(day)
        if week in weeks and week not in seen_weeks:
            seen_weeks.add(week)
            y, w, _ = day.isocalendar()
            why[r.id].append(f"newest verified of week {y}-W{w:02d} (keep_weekly={policy.keep_weekly})")

    newest_verified = verified[0].created if verified else None
    out: list[Decision] = []
    for r in newest_first:
        reasons = why[r.id]
        if r.created > now:
            out.append(Decision(r, True, f"created {r.created.isoformat()}, after now: a clock is off"))
        elif reasons:
            out.append(Decision(r, True, "; ".join(reasons)))
        elif not r.verified and (newest_verified is None or r.created > newest_verified):
            out.append(Decision(r, True, f"{r.verdict}, but newer than every verified snapshot"))
        elif r.verdict is Verdict.CORRUPT:
            out.append(Decision(r, False, f"corrupt ({r.reason}) and a newer verified snapshot exists"))
        elif not r.verified:
            out.append(Decision(r, False, f"{r.verdict} and older than the newest verified snapshot"))
        else:
            out.append(
                Decision(
                    r,
                    False,
                    f"verified, but outside the policy ({policy}): not among the newest, "
                    "nor the newest of a kept day or week",
                )
            )
    return out


def _week_start(day: dt.date) -> dt.date:
    """The Monday of the ISO week holding `day`."""
    return day - dt.timedelta(days=day.isoweekday() - 1)
