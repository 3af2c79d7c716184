"""The journal of a plan being executed, for every plan kind (`recover`, `restore-kubernetes`): one
JSON file in the cluster's state directory (`<kind>-<cluster>.json`) holding the plan, what it was
made on, and the destructive steps begun, each recorded before it runs; a lock beside it lets one run
per cluster and kind go at a time.

A re-run after a crash resumes the journalled plan (each step checks its postcondition first)
instead of planning afresh from a cluster the half-done run changed. A journal none of whose
destructive steps had begun changed no host: the run closes it and plans afresh. Before a plan under
way is resumed, the cluster is looked at again and compared with the picture the plan was made on
(`Basis`, or the recovery's own `Incident`): if it changed in what the plan rests on, the resume is
refused with a sentence saying what changed, the journal closed, nothing done. A finished or
abandoned journal is renamed `<kind>-<cluster>-<ts>.<done|closed>.json`, never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory
from etcd_dr.plans import ParamsError, Plan, Step, StepBody, StepResult, StepRunner, plan_from_json
from etcd_dr.state import ClusterState, MemberListSource


@dataclass(frozen=True)
class JournalKind:
    """A plan kind's journal: its file name and how messages call it and its command."""

    name: str  # the file's stem before -<cluster>: "recover"
    command: str  # "etcd-dr recover"
    what: str  # "recovery journal"
    afresh: str  # what the command does without a journal: "plan afresh"


RECOVER = JournalKind("recover", "etcd-dr recover", "recovery journal", "plan afresh")
KUBERNETES = JournalKind("kubernetes", "etcd-dr restore-kubernetes", "journal", "decide afresh")


def journal_path(inv: Inventory, kind: JournalKind) -> Path:
    if inv.audit_log is None:
        raise InputError(
            f"audit_log: {kind.command.removeprefix('etcd-dr ')} needs an audit log (every step is "
            f"recorded, and its journal lives beside it); set audit_log in the inventory"
        )
    return inv.state_path(f"{kind.name}-{inv.cluster}.json")


@dataclass(frozen=True)
class Loaded:
    """A journal as read: its plan (typed), the destructive steps begun (None: a journal older than
    that record, in which every step counts as begun) and the run's own fields (incident, basis...)."""

    plan: Plan
    started: tuple[str, ...] | None
    body: Mapping[str, Any]


def load(path: Path, cluster: str, kind: JournalKind, typed: Callable[[Plan], Plan]) -> Loaded | None:
    """The journal at path, or None when there is none. InputError naming the file and what to do
    when it is unreadable, another cluster's, or written by another version (nothing is moved)."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: {kind.what} unreadable ({e}); move it aside to {kind.afresh}") from None
    if not isinstance(d, dict) or d.get("cluster") != cluster:
        other = d.get("cluster") if isinstance(d, dict) else None
        raise InputError(f"{path}: journal of cluster {other!r}, not {cluster!r}; move it aside")
    try:
        plan = typed(plan_from_json(d["plan"]))
    except ParamsError as e:
        raise InputError(
            f"{path}: {kind.what} written by another version of etcd-dr ({e}); it cannot be resumed: "
            f"move it aside (mv {path} {path}.old), check `etcd-dr status`, and run `{kind.command}` "
            f"again to {kind.afresh}"
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{path}: {kind.what} unreadable ({e}); move it aside to {kind.afresh}") from None
    started = d.get("started")
    try:
        begun = None if started is None else tuple(str(i) for i in started)
    except TypeError as e:
        raise InputError(f"{path}: {kind.what} unreadable ({e}); move it aside to {kind.afresh}") from None
    return Loaded(plan, begun, d)


def write(path: Path, plan: Plan, *, started: Sequence[str] = (), **extra: object) -> None:
    """Write (atomically) the journal of a plan about to be executed, with the run's own fields."""
    _write_json(
        path,
        {
            "cluster": plan.cluster,
            "started_at": time.time(),
            **extra,
            "started": list(started),
            "plan": plan.to_json(),
        },
    )


def mark_started(path: Path, step_id: str) -> None:
    """Record, before it runs, that a destructive step begins: from then on the journal is resumed,
    never dropped (the cluster is no longer what was observed)."""
    d = json.loads(path.read_text())
    started = list(d.get("started") or [])
    if step_id not in started:
        d["started"] = [*started, step_id]
        _write_json(path, d)


def close(path: Path, suffix: str = "done") -> Path:
    """Rename the journal aside (`done`: the plan succeeded; `closed`: abandoned): never deleted."""
    done = path.with_name(f"{path.stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{suffix}.json")
    os.replace(path, done)
    return done


@contextlib.contextmanager
def lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking flock beside the journal, held for the whole run (planning
    included, so a second run cannot plan from a picture the first is changing). The kernel drops it
    when the holder dies: a SIGKILLed run never leaves a stale lock behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def journalled(
    path: Path, run_step: StepRunner | None, before: Callable[[Step], StepResult | None] | None = None
) -> StepRunner:
    """Each step wrapped: `before` (a recovery renews its lease; a result stops the step), then a
    destructive step recorded in the journal as begun before it runs, then the caller's wrapper
    (e.g. a Prefect task run)."""
    inner = run_step or (lambda _step, body: body())

    def wrap(step: Step, body: StepBody) -> StepResult:
        def run() -> StepResult:
            stop = before(step) if before is not None else None
            if stop is not None:
                return stop
            if step.destructive:
                mark_started(path, step.id)
            return body()

        return inner(step, run)

    return wrap


def _write_json(path: Path, body: dict) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)


# --- what a plan was made on ------------------------------------------------------------------------


@dataclass(frozen=True)
class Basis:
    """What a plan that works on a healthy etcd (restore-kubernetes) rests on: the cluster id, the
    voters (host -> member id), whether quorum held, and the revision (the data: it only grows, so
    a smaller one means the data was replaced). The leader is kept for the sentence only: a plan
    that restarts members (etcd moved onto ssl_old) moves the leadership itself."""

    cluster_id: int | None
    voters: Mapping[str, int]
    quorum: bool
    leader: str | None
    revision: int | None
    observed_at: str
    verdict: str

    @classmethod
    def of(cls, state: ClusterState) -> Basis:
        ids = {m.status.cluster_id for m in state.members if m.status and m.status.cluster_id}
        revs = [m.status.revision for m in state.members if m.status is not None]
        return cls(
            cluster_id=ids.pop() if len(ids) == 1 else None,
            voters={
                (m.host or m.name): m.member_id
                for m in state.members
                if m.in_member_list and not m.is_learner and m.member_id
            },
            quorum=state.quorum,
            leader=state.leader,
            revision=max(revs) if revs else None,
            observed_at=state.observed_at.isoformat(),
            verdict=state.verdict,
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Basis:
        cid, rev = d.get("cluster_id"), d.get("revision")
        return cls(
            cluster_id=None if cid is None else int(cid),
            voters={str(k): int(v) for k, v in (d.get("voters") or {}).items()},
            quorum=bool(d.get("quorum")),
            leader=None if d.get("leader") is None else str(d["leader"]),
            revision=None if rev is None else int(rev),
            observed_at=str(d.get("observed_at", "")),
            verdict=str(d.get("verdict", "")),
        )


def changed_since(basis: Basis, fresh: ClusterState) -> str | None:
    """Pure: why a plan made on `basis` must not be resumed on the cluster `fresh` shows, in one
    sentence, or None when it still rests on the same cluster: quorum, the same cluster id, the
    same voters with the same member ids, data not older than it was."""
    now = Basis.of(fresh)
    if basis.quorum and not now.quorum:
        return f"quorum is lost now ({fresh.verdict}); when the plan was made it held ({basis.verdict})"
    if basis.cluster_id and now.cluster_id and now.cluster_id != basis.cluster_id:
        return f"etcd is now cluster {now.cluster_id:x}, the plan was made for cluster {basis.cluster_id:x}"
    if now.voters != basis.voters and fresh.member_list_source is not MemberListSource.INVENTORY:
        return f"the voters are now {_voters(now.voters)}, the plan was made for {_voters(basis.voters)}"
    if basis.revision is not None and now.revision is not None and now.revision < basis.revision:
        return (
            f"etcd's revision went back from {basis.revision} to {now.revision} (its data was replaced, "
            "e.g. restored from a snapshot)"
        )
    return None


def _voters(v: Mapping[str, int]) -> str:
    return ", ".join(f"{h} ({i:x})" for h, i in sorted(v.items())) or "none"
