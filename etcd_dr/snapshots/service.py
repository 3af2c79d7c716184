"""The snapshot steps on an inventory, each a plain function the CLI and the Prefect tasks share:

    take -> verify -> catalog -> offsite -> prune

Each step that changes something (a file written, cataloged, copied, deleted) leaves an audit record
with its reason. `snapshot_cluster` runs them all, as `etcd-dr snapshot` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etcd_dr.audit import AuditLog, audit_log_for
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.inventory import Inventory
from etcd_dr.snapshots.catalog import Catalog
from etcd_dr.snapshots.record import OffsiteCopy, SnapshotRecord, Verdict
from etcd_dr.snapshots.source import SourceChoice, choose_source
from etcd_dr.snapshots.take import Taken, take_snapshot
from etcd_dr.state import ClusterState, client_for

# Imported where used: `snapshot --no-verify` (its start is most of its time at ~100 MB) neither
# verifies, copies off-site nor prunes (README "Measured").
if TYPE_CHECKING:
    from etcd_dr.snapshots.retention import Decision
    from etcd_dr.snapshots.verify import Verification

log = logging.getLogger("etcd_dr.snapshots")
LOCAL = "localhost"  # the audit host of what happens on this machine (files, catalog)
_OUTCOME = {Verdict.VERIFIED: "ok", Verdict.CORRUPT: "failed", Verdict.UNVERIFIED: "skipped"}


def catalog_for(inv: Inventory) -> Catalog:
    return Catalog(inv.snapshot_settings().dir)


def _audit(inv: Inventory, **kw: object) -> None:
    a: AuditLog | None = audit_log_for(inv)
    if a is not None:
        a.event(**kw)  # type: ignore[arg-type]


# -- take ------------------------------------------------------------------------------------------


def take(
    inv: Inventory,
    state: ClusterState,
    *,
    allow_learner: bool = False,
    allow_no_quorum: bool = False,
    show_progress: bool = True,
    client: EtcdClient | None = None,
) -> Taken:
    """Choose the source on the frozen picture, then stream its snapshot into the snapshot dir."""
    source = choose_source(state, allow_learner=allow_learner, allow_no_quorum=allow_no_quorum)
    db_size = state.member(source.name).status.db_size  # type: ignore[union-attr]
    own = client is None
    client = client or client_for(inv)
    try:
        taken = take_snapshot(
            client,
            source,
            inv.snapshot_settings().dir,
            inv.cluster,
            db_size_hint=db_size,
            show_progress=show_progress,
        )
    except EtcdDrError as e:
        _audit(
            inv, host=source.name, action="snapshot-take", outcome="failed", reason=f"{source.reason}; {e}"
        )
        raise
    finally:
        if own:
            client.close()
    r = taken.result
    _audit(
        inv,
        host=source.name,
        action="snapshot-take",
        outcome="ok",
        reason=source.reason,
        snapshot=taken.id,
        path=str(r.path),
        revision=taken.revision,
        revision_source=taken.revision_source,
        size=r.size,
        sha256=r.sha256,
        duration_s=r.duration_s,
    )
    log.info("snapshot %s from %s: %d bytes, revision %d", taken.id, source.name, r.size, taken.revision)
    return taken


# -- verify ----------------------------------------------------------------------------------------


def verify_taken(
    inv: Inventory, taken: Taken, *, trial_restore: bool = True, client: EtcdClient | None = None
) -> Verification:
    from etcd_dr.snapshots.verify import Expected, verify_snapshot

    src: SourceChoice = taken.source
    exact = taken.revision_source != "snapshot-status"
    expected = Expected(
        member=src.name,
        sha256=taken.result.sha256,
        revision=taken.revision if exact else None,
        revision_range=None if exact else taken.result.revision_bracket,
    )
    own = client is None
    client = client or client_for(inv)
    try:
        return verify_snapshot(
            taken.path,
            version=src.version,
            expected=expected,
            member_hash=lambda rev: client.hash_kv(src.endpoint, rev, timeout=60.0),
            trial_restore=trial_restore,
            hashed=(taken.result.sha256, taken.result.size, taken.result.db_sha256_ok),
        )
    finally:
        if own:
            client.close()


def record_for(taken: Taken, v: Verification | None) -> SnapshotRecord:
    """The catalog record; without a verification (skipped on request) it is UNVERIFIED."""
    src = taken.source
    verified = v is not None and v.verified
    return SnapshotRecord(
        id=taken.id,
        cluster=taken.cluster,
        member=src.name,
        endpoint=src.endpoint,
        revision=v.revision if v is not None and v.revision is not None else taken.revision,
        raft_index=src.raft_index,
        size=taken.result.size,
        sha256=taken.result.sha256,
        created=taken.created,
        verified=verified,
        verdict=v.verdict if v is not None else Verdict.UNVERIFIED,
        reason=(
            v.reason
            if v is not None
            else "not verified (skipped on request); etcd's trailing sha256 matched while streaming"
        ),
        path=taken.path.absolute(),
        member_id=f"{src.member_id:x}",
        version=src.version,
        revision_source=taken.revision_source,
        source_reason=src.reason,
        kv_hash=v.kv_hash if verified else None,
        compact_revision=v.compact_revision if verified else None,
    )


def catalog_add(inv: Inventory, record: SnapshotRecord) -> SnapshotRecord:
    catalog_for(inv).add(record)
    _audit(
        inv,
        host=record.member,
        action="snapshot-verify",
        outcome=_OUTCOME[record.verdict],
        reason=record.reason,
        snapshot=record.id,
        verdict=str(record.verdict),
        sha256=record.sha256,
        revision=record.revision,
    )
    return record


def verify_stored(
    inv: Inventory,
    ref: str,
    *,
    version: str | None = None,
    trial_restore: bool = True,
    check_offsite: bool = True,
    env: Mapping[str, str] | None = None,
) -> tuple[SnapshotRecord | None, Verification]:
    """Verify a cataloged snapshot (by id or path) again, or any snapshot file. A cataloged one is
    compared with its record (sha256, revision, the HashKV recorded when it was taken; else its
    member is asked), its off-site copies are read back, and the catalog is updated."""
    from etcd_dr.snapshots import offsite as off
    from etcd_dr.snapshots.verify import Expected, verify_snapshot

    cat = catalog_for(inv)
    rec = next((r for r in cat.records() if r.id == ref), None) or cat.find_path(Path(ref))
    if rec is None:
        p = Path(ref)
        if not p.exists():
            raise InputError(f"{ref}: neither a snapshot id in {cat.path} nor a file")
        v = verify_snapshot(p, version=version or "3.4", expected=Expected(), trial_restore=trial_restore)
        return None, v
    expected = Expected(
        member=rec.member,
        sha256=rec.sha256,
        revision=rec.revision,
        kv_hash=rec.kv_hash,
        compact_revision=rec.compact_revision,
    )
    with client_for(inv) as client:
        v = verify_snapshot(
            rec.path,
            version=version or rec.version,
            expected=expected,
            member_hash=lambda rev: client.hash_kv(rec.endpoint, rev, timeout=60.0),
            trial_restore=trial_restore,
        )
    copies = rec.offsite
    settings = inv.snapshot_settings().offsite
    if check_offsite and copies and settings is not None:
        copies = tuple(off.verify_copy(rec, c, settings, env) for c in copies)
    keep_hash = {}
    if v.verified and rec.kv_hash is None:
        keep_hash = {"kv_hash": v.kv_hash, "compact_revision": v.compact_revision}
    updated = rec.with_verdict(v.verdict, v.reason, offsite=copies, **keep_hash)
    cat.update(updated)
    _audit(
        inv,
        host=LOCAL,
        action="snapshot-verify",
        outcome=_OUTCOME[v.verdict],
        reason=v.reason,
        snapshot=rec.id,
        verdict=str(v.verdict),
        offsite=[f"{c.location}: {'ok' if c.verified else c.reason}" for c in copies],
    )
    return updated, v


# -- offsite ---------------------------------------------------------------------------------------


def copy_offsite(
    inv: Inventory, record: SnapshotRecord, env: Mapping[str, str] | None = None
) -> SnapshotRecord:
    """Copy the snapshot off-site (when the inventory says where), read it back, and catalog the copy."""
    settings = inv.snapshot_settings().offsite
    if settings is None:
        return record
    from etcd_dr.snapshots import offsite as off

    try:
        copy: OffsiteCopy = off.copy_offsite(record, settings, env)
    except EtcdDrError as e:
        _audit(
            inv, host=LOCAL, action="snapshot-offsite", outcome="failed", reason=str(e), snapshot=record.id
        )
        raise
    updated = dataclasses.replace(
        record, offsite=(*[c for c in record.offsite if c.location != copy.location], copy)
    )
    catalog_for(inv).update(updated)
    _audit(
        inv,
        host=LOCAL,
        action="snapshot-offsite",
        outcome="ok" if copy.verified else "failed",
        reason=copy.reason,
        snapshot=record.id,
        location=copy.location,
        sha256=copy.sha256,
    )
    return updated


# -- prune -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deleted:
    record: SnapshotRecord
    reason: str
    ok: bool
    error: str = ""


def plan_prune(inv: Inventory, now: dt.datetime | None = None) -> list[Decision]:
    from etcd_dr.snapshots.retention import RetentionPolicy, classify

    policy = RetentionPolicy.from_settings(inv.snapshot_settings())
    return classify(catalog_for(inv).records(inv.cluster), policy, now or dt.datetime.now(dt.UTC))


def delete_decided(
    inv: Inventory, decisions: list[Decision], env: Mapping[str, str] | None = None
) -> list[Deleted]:
    """The one place etcd-dr deletes snapshots: each one retention decided against, and only a file
    (and off-site copies) the catalog lists for it. The record goes after its files."""
    from etcd_dr.snapshots import offsite as off

    cat = catalog_for(inv)
    listed = {r.id: r for r in cat.records()}
    settings = inv.snapshot_settings().offsite
    out: list[Deleted] = []
    for d in decisions:
        if d.keep:
            continue
        rec = listed.get(d.record.id)
        if rec is None or Path(rec.path) != Path(d.record.path):
            out.append(Deleted(d.record, d.reason, False, "not in the catalog (or another path): left alone"))
            continue
        try:
            for c in rec.offsite:
                off.delete_copy(c, settings, env)
            Path(rec.path).unlink(missing_ok=True)
            cat.remove(rec.id)
        except (OSError, EtcdDrError) as e:
            err = getattr(e, "strerror", None) or str(e)
            _audit(
                inv,
                host=LOCAL,
                action="snapshot-delete",
                outcome="failed",
                reason=f"{d.reason}; {err}",
                snapshot=rec.id,
                path=str(rec.path),
            )
            out.append(Deleted(rec, d.reason, False, err))
            continue
        _audit(
            inv,
            host=LOCAL,
            action="snapshot-delete",
            outcome="ok",
            reason=d.reason,
            snapshot=rec.id,
            path=str(rec.path),
            offsite=[c.location for c in rec.offsite],
        )
        out.append(Deleted(rec, d.reason, True))
    return out


# -- all of it -------------------------------------------------------------------------------------


def snapshot_cluster(
    inv: Inventory,
    state: ClusterState,
    *,
    allow_learner: bool = False,
    allow_no_quorum: bool = False,
    trial_restore: bool = True,
    verify: bool = True,
    offsite: bool = True,
    prune: bool = True,
    show_progress: bool = True,
    client: EtcdClient | None = None,
) -> tuple[SnapshotRecord, list[Deleted]]:
    """`client`: the one observe() used (its connection is up already), else one of its own."""
    if verify and trial_restore:
        versions = {m.status.version for m in state.members if m.status is not None and m.status.version}
        _prepare_verification_meanwhile(versions)
    with contextlib.nullcontext(client) if client is not None else client_for(inv) as client:
        taken = take(
            inv,
            state,
            allow_learner=allow_learner,
            allow_no_quorum=allow_no_quorum,
            show_progress=show_progress,
            client=client,
        )
        v = verify_taken(inv, taken, trial_restore=trial_restore, client=client) if verify else None
    record = catalog_add(inv, record_for(taken, v))
    if offsite:
        record = copy_offsite(inv, record)
    deleted = delete_decided(inv, plan_prune(inv)) if prune and record.verified else []
    return record, deleted


def _prepare_verification_meanwhile(versions: set[str]) -> None:
    """Import what the verification needs (its modules, cryptography for the throwaway's certs, the
    local cluster) and find the etcd binaries of the members' versions on a thread while the stream
    runs, instead of after it: ~80 ms and ~12 ms (`etcd --version`, kept per binary) of the verified
    snapshot's time at ~100 MB (README "Measured"). The stream's loop mostly waits in gRPC with the
    GIL free. Python's import lock makes the later imports on the main thread wait for these, never
    run them twice; a failure here is met again, and reported, where it is used."""

    def load() -> None:
        with contextlib.suppress(Exception):
            import etcd_dr.certs
            import etcd_dr.etcd.localcluster
            import etcd_dr.snapshots.verify  # noqa: F401
            from etcd_dr.snapshots.etcdtool import binaries_for

            for v in sorted(versions):
                with contextlib.suppress(Exception):
                    # never a download on this daemon thread: a process that ends meanwhile would
                    # leave it half done; the verification fetches, where it needs to
                    binaries_for(v, fetch=False)

    threading.Thread(target=load, name="prepare-verification", daemon=True).start()
