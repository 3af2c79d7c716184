"""The watcher: every revision of the cluster, from where the log (or the newest snapshot) ends,
appended to the delta log as it happens.

    result = Streamer(client, endpoints, log_dir, "lab", snapshot_revision=lambda: 1000).run()

- Where it starts: the revision after the last one on disk (a killed watcher's open segment is
  sealed first, its torn last line cut off); with no log yet, the revision after the newest
  verified snapshot's. It never starts anywhere else on its own.
- Watches (prev_kv, etcd's `hasleader`) on one member at a time, a follower where one answers
  (the leader's CPU stays for the writes), one per cycle of `pull_interval_s` (0.2 s): each starts
  at the log's end and is read until the log holds what the member reported, so etcd sends a
  cycle's revisions in a few batched responses instead of one response per revision (half the
  serving member's CPU per event; the log at most 0.3 s behind). A member that loses its
  leader ends the stream, one that stops answering progress requests for `silence_timeout_s` is
  left; the next member is asked from the last revision on disk. With no member answering (quorum
  lost, cluster down) it waits (state `waiting`) and resumes when one answers.
- Never a skipped revision: each batch must continue exactly where the log ends (a txn's events,
  which share a revision, stay one record; etcd never splits a revision between watch responses:
  watchable_store.go's eventBatch cuts only between revisions). When etcd compacted past the next
  revision, the missing revisions cannot be had: if a verified snapshot at or after the compaction
  exists, a new run of the log starts after it (the snapshot holds what the log missed); else it
  stops with state `gap`, `gap.json` in the log dir (which `snapshot list` shows) and an error
  that says a new full snapshot is needed. A member that answers for another cluster (a restore
  made a new one) is a `gap` too, unless it holds the log's last revision key for key as the log
  does (restored from the log's end): histories never mix. One behind the log's end is left for
  another.
- With quorum lost, what the surviving members applied (committed entries: the same history) is
  read without `hasleader`: a write acknowledged just before the loss may be only there.
- Its lag (revisions and seconds behind what a member last reported) is in `status.json`,
  replaced atomically about every second; the readiness check reads it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from etcd_dr.deltalog.log import GAP_FILE, STATUS_FILE, DeltaLog
from etcd_dr.deltalog.segment import Event, GapError, Record, SegmentInfo, SegmentWriter
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd import errors as E
from etcd_dr.etcd.client import EtcdClient, Watch, WatchBatch, WatchEvent
from etcd_dr.localfs import write_json_atomic

log = logging.getLogger("etcd_dr.deltalog")


class StreamState(enum.StrEnum):
    STARTING = "starting"
    STREAMING = "streaming"  # a member answers; every revision it sent is on disk
    WAITING = "waiting"  # no member answers (quorum lost, cluster down): retrying
    GAP = "gap"  # revisions the log can no longer get: a new full snapshot is needed
    STOPPED = "stopped"  # asked to stop; the open segment was sealed


@dataclass(frozen=True)
class StreamSettings:
    segment_max_bytes: int = 16 << 20
    segment_max_age_s: float = 60.0
    progress_interval_s: float = 1.0  # a progress request this often: the lag stays known when idle
    silence_timeout_s: float = 5.0  # a member that answers nothing this long is left for another
    retry_interval_s: float = 1.0  # with no member answering, a new round after this pause
    status_interval_s: float = 1.0
    sync_interval_s: float = 0.1  # group commit of the open segment (fdatasync at most this often)
    # One watch per cycle, this often (0: one watch kept open). A watch that starts behind the
    # member's revision is caught up by etcd in batches (up to 1000 revisions per response, read
    # from its store every 100 ms: watchable_store.go syncWatchers), one that is kept open costs one
    # response per revision. Measured (README "The watcher's cost"): the serving member's CPU per
    # event about halved and the watcher's a tenth, for a log at most this + 0.1 s behind.
    pull_interval_s: float = 0.2


@dataclass(frozen=True)
class StreamStatus:
    """status.json: what the watcher is doing and how far behind it is."""

    cluster: str
    state: StreamState
    reason: str
    last_revision: int | None  # the last revision on disk
    cluster_revision: int | None  # the newest revision a member reported
    caught_up_at: float | None  # unix time the log last held every revision a member had reported
    updated: float
    heard_at: float | None = None  # unix time a member last answered (after a fault: about when it came)
    endpoint: str | None = None
    cluster_id: str | None = None  # hex, of the cluster the log follows
    segments_sealed: int = 0  # by this run
    offsite_pending: int = 0
    pid: int = field(default_factory=os.getpid)

    @property
    def lag_revisions(self) -> int | None:
        if self.cluster_revision is None or self.last_revision is None:
            return None
        return max(self.cluster_revision - self.last_revision, 0)

    def lag_s(self, now: float | None = None) -> float | None:
        """0 when caught up at the last report; else the time since it last was."""
        if self.lag_revisions == 0 and self.state is StreamState.STREAMING:
            return 0.0
        if self.caught_up_at is None:
            return None
        return max((now if now is not None else time.time()) - self.caught_up_at, 0.0)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = str(self.state)
        d["lag_revisions"] = self.lag_revisions
        lag = self.lag_s(self.updated)
        d["lag_s"] = None if lag is None else round(lag, 3)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StreamStatus:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{**{k: v for k, v in d.items() if k in known}, "state": StreamState(d["state"])})


@dataclass(frozen=True)
class StreamResult:
    cluster: str
    state: StreamState
    reason: str
    start_revision: int
    last_revision: int | None
    records: int
    events: int
    segments: tuple[str, ...]
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.state is not StreamState.GAP

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": str(self.state), "ok": self.ok, "segments": list(self.segments)}


def read_status(log_dir: Path) -> StreamStatus | None:
    try:
        return StreamStatus.from_json(json.loads((Path(log_dir) / STATUS_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise EtcdDrError(f"{Path(log_dir) / STATUS_FILE}: not a delta log status ({e})") from None


def read_gap(log_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(log_dir) / GAP_FILE).read_text())
    except FileNotFoundError:
        return None


def to_records(events: Sequence[WatchEvent], at: float) -> list[Record]:
    """A watch batch's events as records, one per revision (a txn's events together, in order)."""
    out: list[Record] = []
    cur: list[Event] = []
    rev = None
    for ev in events:
        r = ev.kv.mod_revision
        if rev is not None and r != rev:
            out.append(Record(rev, at, tuple(cur)))
            cur = []
        rev = r
        cur.append(
            Event(
                "delete" if ev.type == "DELETE" else "put",
                ev.kv.key,
                ev.kv.value if ev.type == "PUT" else b"",
                ev.prev_kv.value if ev.prev_kv is not None else None,
                ev.kv.lease,
                ev.kv.create_revision,
                ev.kv.version,
            )
        )
    if rev is not None:
        out.append(Record(rev, at, tuple(cur)))
    return out


class _Gap(Exception):
    def __init__(self, reason: str, compact_revision: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.compact_revision = compact_revision


class Streamer:
    """One watcher for one log. `ship(segment)` copies a sealed segment off-site (errors are
    logged and retried after the next seal); `snapshot_revision()` is the newest verified
    snapshot's revision (the catalog), or None."""

    def __init__(
        self,
        client: EtcdClient,
        endpoints: Sequence[str],
        log_dir: Path,
        cluster: str,
        *,
        snapshot_revision: Callable[[], int | None],
        ship: Callable[[], int] | None = None,
        settings: StreamSettings = StreamSettings(),
        stop: threading.Event | None = None,
        audit: Callable[..., None] | None = None,
    ) -> None:
        if not endpoints:
            raise InputError("backup stream: no etcd endpoint to watch; the inventory lists no etcd host")
        self.client = client
        self.endpoints = list(endpoints)
        self.dir = Path(log_dir)
        self.cluster = cluster
        self.snapshot_revision = snapshot_revision
        self.ship = ship
        self.settings = settings
        self.stop = stop or threading.Event()
        self._audit = audit or (lambda **kw: None)
        self.log = DeltaLog(self.dir)
        self.writer: SegmentWriter | None = None
        self.next = 0
        self.records = 0
        self.events = 0
        self.sealed: list[str] = []
        self.pending_ship = 0
        prior = read_status(self.dir) if self.dir.is_dir() else None
        self.status = StreamStatus(
            cluster,
            StreamState.STARTING,
            "starting",
            None,
            None,
            None,
            time.time(),
            cluster_id=prior.cluster_id if prior is not None else None,
        )
        self._status_written = 0.0

    # -- the run --

    def start_revision(self) -> int:
        """After the last revision on disk; with no log yet, after the newest verified snapshot."""
        sealed = self.log.seal_open()
        if sealed is not None:
            self.sealed.append(sealed.name)
            log.info("sealed %s, left open by an earlier run", sealed.name)
        last = self.log.last_revision()
        if last is not None:
            return last + 1
        snap = self.snapshot_revision()
        if snap is None:
            raise InputError(
                f"backup stream: no verified snapshot of cluster {self.cluster} in the catalog and no "
                f"delta log in {self.dir}: take one first (etcd-dr snapshot), the log starts after it"
            )
        return snap + 1

    def run(self, *, until_revision: int | None = None, max_seconds: float | None = None) -> StreamResult:
        t0 = time.monotonic()
        start = self.next = self.start_revision()  # bad input (no snapshot) before anything is made
        self.dir.mkdir(parents=True, exist_ok=True)
        self._set(StreamState.STARTING, f"starting at revision {start}", force=True)
        self._ship()
        deadline = None if max_seconds is None else t0 + max_seconds
        self._until = until_revision
        self._deadline = deadline
        order = list(self.endpoints)
        failures: list[tuple[str, str]] = []
        try:
            while not self._done():
                if not failures or len(failures) < len(order):  # not while no member answers
                    order = self._leader_last(order)
                failures = []
                for ep in list(order):
                    if self._done():
                        break
                    try:
                        self._follow(ep)
                    except _Gap:
                        raise
                    except (E.EtcdError, GapError) as e:
                        if isinstance(e, E.RevisionCompacted):
                            self._compacted(e)
                            continue
                        if isinstance(e, GapError):
                            raise _Gap(str(e)) from None
                        failures.append((ep, _short(e)))
                        order.remove(ep)
                        order.append(ep)  # the one that failed goes last
                        self._seal_if_due()
                        continue
                if failures and len(failures) == len(order) and not self._done():
                    listed = "; ".join(f"{ep}: {why}" for ep, why in failures)
                    self._set(StreamState.WAITING, f"no member answers ({listed}); retrying", force=True)
                    if any("no leader" in why for _, why in failures):
                        self._drain(order)
                    self.stop.wait(self.settings.retry_interval_s)
        except _Gap as g:
            self._finish()
            gap = {
                "cluster": self.cluster,
                "after_revision": self.next - 1,
                "compact_revision": g.compact_revision or None,
                "detected": time.time(),
                "reason": g.reason,
            }
            write_json_atomic(self.dir / GAP_FILE, gap)
            self._set(StreamState.GAP, g.reason, force=True)
            self._audit(
                action="deltalog-gap", outcome="failed", reason=g.reason, after_revision=self.next - 1
            )
            return self._result(StreamState.GAP, g.reason, start, t0)
        self._finish()
        why = "stopped" if self.stop.is_set() else "reached its limit"
        reason = f"{why} at revision {self.next - 1}"
        self._set(StreamState.STOPPED, reason, force=True)
        return self._result(StreamState.STOPPED, reason, start, t0)

    def _leader_last(self, order: list[str]) -> list[str]:
        """The order to try members in: the followers that answer, then the leader, then those that
        do not answer, then learners. A watch costs the member that serves it (each event encoded
        and sent, a read for its prev_kv); the leader already carries every write, while a follower
        is off a write's path as long as the other voters ack: with three voters, one of two."""
        t = min(self.client.dial_timeout, 1.0)
        seen: dict[str, str] = {}
        for ep in order:
            try:
                st = self.client.status(ep, timeout=t)
            except E.EtcdError:
                seen[ep] = "silent"
                continue
            seen[ep] = "learner" if st.is_learner else "leader" if st.is_leader else "follower"
        rank = {"follower": 0, "leader": 1, "silent": 2, "learner": 3}
        return sorted(order, key=lambda ep: rank[seen[ep]])  # stable: the given order within a rank

    def _done(self) -> bool:
        if self.stop.is_set():
            return True
        if self._until is not None and self.next > self._until:
            return True
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _drain(self, order: Sequence[str]) -> None:
        """With no leader anywhere: read what each answering member has applied (committed
        entries only, so the same history) beyond the log's end: the writes acknowledged just
        before a quorum loss may exist only on the survivors. Never waits for new ones."""
        for ep in order:
            if self._done():
                return
            with contextlib.suppress(E.EtcdError, GapError):
                self._follow(ep, leaderless=True)

    def _follow(self, ep: str, *, leaderless: bool = False) -> None:
        """Watch on one member from self.next until done; raises its EtcdError when it fails.
        leaderless: without etcd's `hasleader`, and only until the member has nothing more (a
        progress answer at or below the log's end). With `pull_interval_s`, one watch per cycle,
        each read until the log holds what the member reported, the open segment synced between."""
        s = self.settings
        cycles = leaderless or s.pull_interval_s > 0
        while not self._done():
            with self.client.watch(ep, self.next, require_leader=not leaderless) as w:
                self._read(ep, w, leaderless=leaderless, until_caught_up=cycles)
            if leaderless or not cycles:
                return
            if self.writer is not None:
                self.writer.flush()  # what the cycle brought is on disk before the pause
            self._seal_if_due()
            self._set(self.status.state, self.status.reason)
            self.stop.wait(s.pull_interval_s)

    def _read(self, ep: str, w: Watch, *, leaderless: bool, until_caught_up: bool) -> None:
        """Take what `w` sends until done, or with `until_caught_up` until the log holds every
        revision the member reported (a progress answer, or a batch that ends at its revision)."""
        s = self.settings
        heard = time.monotonic()
        asked = 0.0
        while not self._done():
            now = time.monotonic()
            if now - asked >= s.progress_interval_s:
                w.request_progress()
                asked = now
            dirty = self.writer is not None and self.writer.dirty
            waits = (s.progress_interval_s, s.status_interval_s, *([s.sync_interval_s] if dirty else []))
            b = w.get(timeout=min(waits))
            if self.writer is not None:
                self.writer.flush(due_only=True)
            if b is None:
                if time.monotonic() - heard > s.silence_timeout_s:
                    raise E.EtcdTimeout(
                        f"watch on {ep}: nothing heard for {s.silence_timeout_s:.0f} s "
                        "(progress requests unanswered)",
                        endpoint=ep,
                    )
                self._seal_if_due()
                self._set(self.status.state, self.status.reason)
                continue
            heard = time.monotonic()
            if leaderless and not b.events and b.revision <= self.next - 1:
                return  # drained: the member holds nothing beyond the log
            self._take(ep, b, leaderless=leaderless)
            if until_caught_up and self.next - 1 >= b.revision:
                return

    def _take(self, ep: str, b: WatchBatch, *, leaderless: bool = False) -> None:
        cid = f"{b.cluster_id:x}"
        if self.status.cluster_id is not None and cid != self.status.cluster_id:
            differs = self._continues(ep)
            if differs is not None:
                raise _Gap(
                    f"{ep} answers for cluster {cid}, the log follows cluster {self.status.cluster_id} "
                    f"(a restore made a new cluster) and {differs}: revisions after {self.next - 1} belong "
                    "to another history; take a new full snapshot and start a new log (move this one aside)"
                )
            why = (
                f"{ep} answers for cluster {cid}, restored from this log's end: it holds revision "
                f"{self.next - 1} as the log does; the log goes on"
            )
            log.warning(why)
            self._audit(action="deltalog-continue", outcome="ok", reason=why, revision=self.next - 1)
        if b.revision < self.next - 1 and not b.events:
            # a member behind the log (a lagging follower, a survivor that applied less): another
            # member is asked; it never sends a revision the log holds (the watch starts after it)
            raise E.EtcdRequestError(
                f"watch on {ep}: at revision {b.revision}, behind the log's {self.next - 1}", endpoint=ep
            )
        if b.events:
            records = to_records(b.events, time.time())
            if records[0].revision != self.next:
                raise GapError(
                    f"{ep} sent revision {records[0].revision} where {self.next} comes next; nothing "
                    f"written past revision {self.next - 1}"
                )
            self._append(records)
        rev = max(b.revision, self.status.cluster_revision or 0)
        caught, heard = self.status.caught_up_at, self.status.heard_at
        if not leaderless:  # a member without a leader says nothing about the cluster's progress
            heard = time.time()
            if self.next - 1 >= b.revision:
                caught = heard  # every revision the member had is on disk
        self.status = replace(
            self.status,
            cluster_revision=rev,
            caught_up_at=caught,
            heard_at=heard,
            endpoint=ep,
            cluster_id=cid,
            last_revision=self.next - 1,
        )
        if leaderless:
            self._set(StreamState.WAITING, f"no leader: read what {ep} applied, up to {self.next - 1}")
        else:
            self._set(StreamState.STREAMING, f"following {ep}")
        self._seal_if_due()

    def _continues(self, ep: str) -> str | None:
        """Whether a member of a new cluster holds the log's last revision as the log does (each
        key of that revision, read at that revision: value and mod revision, or absent): then it
        was restored from this log's end (`recover` rolls forward, then restores) and the log goes
        on. None when it does; else what differs, one phrase."""
        last = self.next - 1
        rec = next(iter(self.log.records(last, last)), None) if last >= 1 else None
        if rec is None or rec.revision != last:
            return f"the log has no record of revision {last} to compare it with"
        for e in rec.events:
            try:
                got = self.client.range(e.key, revision=last, timeout=5.0, endpoint=ep).kvs
            except E.EtcdError as err:
                return f"revision {last} cannot be read there ({_short(err, 120)})"
            same = (
                len(got) == 1 and got[0].value == e.value and got[0].mod_revision == last
                if e.type == "put"
                else not got
            )
            if not same:
                return f"it holds {e.key!r:.60} at revision {last} otherwise than the log"
        return None

    def _compacted(self, e: E.RevisionCompacted) -> None:
        """etcd no longer has self.next: start after a snapshot that covers it, or stop with a gap."""
        c = e.compact_revision
        snap = self.snapshot_revision()
        missed = f"revisions {self.next}..{c}" if c >= self.next else f"revision {self.next}"
        if snap is not None and snap >= c and snap >= self.next:
            self._finish()
            reason = (
                f"etcd compacted past revision {self.next} (up to {c}); the log goes on after verified "
                f"snapshot revision {snap}, which holds {missed}"
            )
            self.next = snap + 1
            log.warning(reason)
            self._audit(action="deltalog-restart", outcome="ok", reason=reason, revision=snap)
            gap = self.dir / GAP_FILE
            if gap.exists():
                os.replace(gap, self.dir / f"gap.healed-{int(time.time())}.json")
            return
        raise _Gap(
            f"etcd compacted past revision {self.next} (up to {c}) before the delta log had it: "
            f"{missed} are lost to the log, which ends at {self.next - 1}; a new full snapshot is "
            "needed (etcd-dr snapshot), then restart the stream: it goes on after that snapshot",
            compact_revision=c,
        )

    # -- segments --

    def _append(self, records: Sequence[Record]) -> None:
        """Append a batch, sealing at the size limit inside it (a catch-up batch can be large)."""
        limit = self.settings.segment_max_bytes
        chunk: list[Record] = []
        size = 0
        for r in records:
            chunk.append(r)
            size += len(r.line())
            if self.writer is None:
                self.writer = SegmentWriter.create(
                    self.dir, self.cluster, r.revision, sync_interval_s=self.settings.sync_interval_s
                )
            if self.writer.size + size >= limit:
                self._write(chunk)
                chunk, size = [], 0
                self._seal()
        self._write(chunk)

    def _write(self, chunk: list[Record]) -> None:
        if not chunk:
            return
        assert self.writer is not None
        self.writer.append(chunk)
        self.next = chunk[-1].revision + 1
        self.records += len(chunk)
        self.events += sum(len(r.events) for r in chunk)

    def _seal_if_due(self) -> None:
        w = self.writer
        if w is None or w.records == 0:
            return
        s = self.settings
        if w.size >= s.segment_max_bytes or time.time() - w.opened_at >= s.segment_max_age_s:
            self._seal()

    def _seal(self) -> SegmentInfo | None:
        w, self.writer = self.writer, None
        if w is None:
            return None
        if w.records == 0:
            w.close()
            w.path.unlink()
            return None
        seg = w.seal()
        self.sealed.append(seg.name)
        self._audit(action="deltalog-seal", outcome="ok", reason=f"segment {seg.name}", segment=seg.name)
        self._ship()
        return seg

    def _ship(self) -> None:
        if self.ship is None:
            return
        try:
            self.pending_ship = self.ship()
        except EtcdDrError as e:
            log.warning("off-site copy of delta log segments failed (retried after the next seal): %s", e)
            self.pending_ship = -1

    def _finish(self) -> None:
        self._seal()

    # -- status --

    def _set(self, state: StreamState, reason: str, *, force: bool = False) -> None:
        changed = state is not self.status.state
        self.status = replace(
            self.status,
            state=state,
            reason=reason,
            last_revision=self.next - 1,  # on disk, or the snapshot the log starts after
            updated=time.time(),
            segments_sealed=len(self.sealed),
            offsite_pending=max(self.pending_ship, 0),
        )
        now = time.monotonic()
        if force or changed or now - self._status_written >= self.settings.status_interval_s:
            write_json_atomic(self.dir / STATUS_FILE, self.status.to_json())
            self._status_written = now
            if changed:
                log.info("delta log %s: %s", state, reason)

    def _result(self, state: StreamState, reason: str, start: int, t0: float) -> StreamResult:
        return StreamResult(
            self.cluster,
            state,
            reason,
            start,
            self.log.last_revision(),
            self.records,
            self.events,
            tuple(self.sealed),
            round(time.monotonic() - t0, 3),
        )


def _short(e: Exception, limit: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
