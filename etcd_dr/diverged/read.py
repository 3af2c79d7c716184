"""Read what an old member holds beyond the recovered cluster: its `member/snap/db` copied here
(streamed), served by a throwaway etcd on loopback (etcd_dr.snapshots.trial), both sides read in
full and compared by the rule of etcd_dr.diverged.compare. The report says how many, which keys and
where the data dir was kept; it is saved as JSON in `<audit log dir>/diverged/<host>-<UTC ts>.json`
and is an audit record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from etcd_dr.audit import AuditLog
from etcd_dr.diverged.compare import Divergence, History, Seen, compare, history_needed, key_text
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EtcdClient, KeyValue
from etcd_dr.etcd.errors import RevisionCompacted
from etcd_dr.executor import Executor, audit_log_for, executor_for
from etcd_dr.inventory import Inventory
from etcd_dr.snapshots.etcdtool import binaries_for
from etcd_dr.snapshots.trial import served_db
from etcd_dr.state import ClusterState, client_for

TS = "%Y%m%dT%H%M%SZ"
PAGE = 1000
SHOW = 10  # keys named in the sentence; the JSON has them all


class Status(enum.StrEnum):
    NONE = "none"  # the old member holds nothing the cluster lacks
    DIVERGED = "diverged"  # it holds writes the cluster lacks: listed
    NO_DATA = "no-data"  # no member/snap/db in its data dir
    UNKNOWN = "unknown"  # it could not be read: the data dir is kept, read it later (`diverged export`)


@dataclass(frozen=True)
class DivergedReport:
    host: str
    status: Status
    sentence: str
    data_dir: str  # where the old data dir is (kept: moved aside, never deleted)
    divergence: Divergence | None = None
    fork_source: str = ""
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime(TS))
    saved_to: str | None = None

    @property
    def count(self) -> int:
        return len(self.divergence.diverged) if self.divergence else 0

    def to_json(self) -> dict:
        d = self.divergence
        return {
            "host": self.host,
            "status": str(self.status),
            "sentence": self.sentence,
            "count": self.count,
            "keys": d.keys if d else [],
            "deleted_keys": [key_text(k) for k in d.deleted] if d else [],
            "data_dir": self.data_dir,
            "old_revision": d.old_revision if d else None,
            "cluster_revision": d.cluster_revision if d else None,
            "fork_revision": d.fork_revision if d else None,
            "fork_source": self.fork_source,
            "writes": [w.to_json() for w in d.diverged] if d else [],
            "at": self.at,
            "saved_to": self.saved_to,
        }


def state_dir(inv: Inventory) -> Path:
    """Reports and work files live in the cluster's state directory, beside the recovery journal."""
    return inv.state_path("diverged")


def fork_revision(inv: Inventory) -> tuple[int | None, str]:
    """The revision the recovered cluster started from, from the newest finished recovery journal
    (its verify step's min_revision: the survivor's, the learner's or the snapshot's revision), with
    where it came from; (None, why not) without one."""
    journals = sorted(inv.state_path().glob(f"recover-{inv.cluster}-*.done.json"))
    for path in reversed(journals):
        try:
            steps = json.loads(path.read_text())["plan"]["steps"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for st in steps:
            rev = (st.get("params") or {}).get("min_revision")
            if isinstance(rev, int):
                return rev, f"recovery journal {path.name}"
    return None, "no finished recovery journal beside the audit log"


def read_all(c: EtcdClient, *, serializable: bool, revision: int = 0) -> tuple[list[KeyValue], int]:
    """Every key, in pages, all pages at the revision of the first (one consistent picture)."""
    out: list[KeyValue] = []
    key = b"\0"
    while True:
        r = c.range(key, b"\0", serializable=serializable, limit=PAGE, revision=revision, timeout=60.0)
        revision = revision or r.header.revision
        out.extend(r.kvs)
        if not r.more or not r.kvs:
            return out, revision
        key = r.kvs[-1].key + b"\0"


def read_history(c: EtcdClient, wanted: Sequence[tuple[bytes, int]]) -> History:
    out: dict[tuple[bytes, int], KeyValue | Seen | None] = {}
    for key, rev in wanted:
        try:
            r = c.range(key, revision=rev, timeout=10.0)
        except RevisionCompacted:
            out[(key, rev)] = Seen.COMPACTED
            continue
        out[(key, rev)] = r.kvs[0] if r.kvs else None
    return out


def member_endpoints(inv: Inventory, state: ClusterState) -> list[str]:
    """The recovered cluster's voter members, the leader first (a lost master's old etcd may answer
    now and then and must not be read as the cluster)."""
    members = [m for m in state.members if m.in_member_list and not m.is_learner and m.host]
    members.sort(key=lambda m: not (m.status is not None and m.status.is_leader))
    return [inv.client_url(inv.host(str(m.host))) for m in members]


def cluster_version(state: ClusterState) -> str:
    for m in state.members:
        if m.in_member_list and m.status is not None and m.status.version:
            return m.status.version
    return "3.4"


def read_divergence(
    inv: Inventory,
    host: str,
    data_dir: str,
    state: ClusterState,
    *,
    ex: Executor | None = None,
) -> tuple[Divergence, str]:
    """Copy <data_dir>/member/snap/db from host, serve it on loopback, compare with the recovered
    cluster. Returns (the divergence, where the fork revision came from).
    Raises EtcdDrError (naming the host and the fix) when it cannot be read."""
    db = f"{data_dir.rstrip('/')}/member/snap/db"
    endpoints = member_endpoints(inv, state)
    if not endpoints:
        raise EtcdDrError(f"no voter member of {inv.cluster} answers: run `etcd-dr status` and recover first")
    work_parent = state_dir(inv)
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".read-{host}-", dir=work_parent))
    own_ex = ex is None
    ex = ex or executor_for(inv, host)
    try:
        if not ex.run(["test", "-f", db], check=False).ok:
            raise FileNotFoundError(db)
        local = work / "db"
        get_to = getattr(ex, "get_to", None)
        if get_to is not None:
            get_to(db, local, reason=f"read the writes {host}'s old member holds")
        else:  # an executor without the streamed verb (tests' fakes)
            local.write_bytes(ex.get(db))
        fork, fork_source = fork_revision(inv)
        with client_for(inv, endpoints) as cluster:
            now_list, cluster_rev = read_all(cluster, serializable=False)
            with served_db(binaries_for(cluster_version(state)), local, work, skip_hash_check=True) as (
                c,
                _,
                _,
            ):
                old, old_rev = read_all(c, serializable=True)
            now = {kv.key: kv for kv in now_list}
            history = read_history(cluster, history_needed(old, now, cluster_rev))
        div = compare(
            old, now, history, old_revision=old_rev, cluster_revision=cluster_rev, fork_revision=fork
        )
        return div, fork_source
    finally:
        if own_ex:
            ex.close()
        shutil.rmtree(work, ignore_errors=True)


def report_for(
    inv: Inventory, host: str, data_dir: str, state: ClusterState, *, ex: Executor | None = None
) -> DivergedReport:
    """The report for host's old data dir (never raises for a read that fails: status UNKNOWN)."""
    try:
        div, fork_source = read_divergence(inv, host, data_dir, state, ex=ex)
    except FileNotFoundError as e:
        return DivergedReport(
            host, Status.NO_DATA, f"{host}: no {e} in its old data dir {data_dir}", data_dir
        )
    except (EtcdDrError, OSError, TimeoutError, RuntimeError) as e:
        why = (
            f"{host}: could not read what its old member holds ({e}); its data dir is kept at {data_dir}: "
            f"run `etcd-dr diverged export --host {host} --data-dir {data_dir}` to read it again"
        )
        return DivergedReport(host, Status.UNKNOWN, why, data_dir)
    return DivergedReport(host, _status(div), sentence(host, div, data_dir), data_dir, div, fork_source)


def _status(div: Divergence) -> Status:
    return Status.DIVERGED if div.diverged or div.deleted else Status.NONE


def sentence(host: str, div: Divergence, data_dir: str) -> str:
    fork = f"fork revision {div.fork_revision}" if div.fork_revision is not None else "fork revision unknown"
    head = (
        f"{host}'s old member (revision {div.old_revision}) against the recovered cluster (revision "
        f"{div.cluster_revision}, {fork})"
    )
    if not div.diverged and not div.deleted:
        return f"{head}: it holds no write the cluster lacks; its data dir is kept at {data_dir}"
    keys = div.keys
    shown = ", ".join(keys[:SHOW]) + (f", ... ({len(keys) - SHOW} more)" if len(keys) > SHOW else "")
    out = f"{head}: {len(keys)} writes the cluster lacks ({shown or 'none'})"
    if div.deleted:
        out += f"; {len(div.deleted)} keys it deleted after the fork that the cluster still has"
    unsure = sum(not d.certain for d in div.diverged)
    if unsure:
        out += f" ({unsure} uncertain: the cluster compacted past them)"
    return (
        f"{out}; its data dir is kept at {data_dir}: review and put them back with "
        f"`etcd-dr diverged export --host {host}` and `etcd-dr diverged replay FILE`"
    )


def save_report(inv: Inventory, report: DivergedReport, audit: AuditLog | None = None) -> DivergedReport:
    """Write the report (atomically) to <audit log dir>/diverged/<host>-<ts>.json and audit it."""
    d = state_dir(inv)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{report.host}-{report.at}.json"
    saved = dataclasses.replace(report, saved_to=str(path))
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(saved.to_json(), indent=2))
    os.replace(tmp, path)
    audit = audit or audit_log_for(inv)
    if audit is not None:  # key names, counts and paths: never a value
        audit.event(
            host=report.host,
            action="diverged.report",
            outcome=str(report.status),
            reason=report.sentence,
            count=report.count,
            keys=saved.to_json()["keys"],
            data_dir=report.data_dir,
            saved_to=str(path),
        )
    return saved


def newest_report(inv: Inventory, host: str) -> dict | None:
    """The newest saved report of host (its data_dir is where the old data dir was kept)."""
    d = state_dir(inv)
    for path in sorted(d.glob(f"{host}-*.json"), reverse=True):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None
