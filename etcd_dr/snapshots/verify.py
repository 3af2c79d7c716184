"""Verify a snapshot file before calling it a backup, cheapest checks first (gardener's order):

1. sha256 of the whole file (against the catalog's), and etcd's own trailing sha256 of the db bytes;
2. etcd's view: `snapshot status -w json` must read the revision the catalog records;
3. a trial restore into a scratch dir, a throwaway etcd started on it on loopback, and HashKV at the
   snapshot's revision compared with HashKV at that revision on the member it came from (asked at
   once, before the restore, so that a compaction has the least time to get in the way) or, for a
   stored snapshot, with the hash recorded when it was taken.

The verdict is closed: VERIFIED, CORRUPT (a check proved the file wrong), UNVERIFIED (nothing proved
it wrong, but a check could not be made: never read that as CORRUPT), with a one-sentence reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import HashKVResult
from etcd_dr.etcd.errors import EtcdError, RevisionCompacted
from etcd_dr.etcdbin import EtcdBinaries, EtcdBinariesError
from etcd_dr.snapshots.etcdtool import ToolError, binaries_for, snapshot_status
from etcd_dr.snapshots.record import Verdict
from etcd_dr.snapshots.trial import Served, memory_of, served_db

_SHA256_LEN = 32
_CHUNK = 1 << 20
RESTORE_START_TIMEOUT = 60.0

#: The source member's HashKV at a revision (raises the client's errors).
MemberHash = Callable[[int], HashKVResult]


@dataclass(frozen=True)
class Expected:
    """What the file must agree with: the catalog's record, or the take that just finished."""

    member: str = "the source member"
    sha256: str | None = None
    revision: int | None = None
    revision_range: tuple[int, int] | None = None  # when only bracketed: status must fall inside
    kv_hash: int | None = None  # recorded HashKV at `revision` (re-verification of a stored snapshot)
    compact_revision: int | None = None


@dataclass(frozen=True)
class Check:
    name: str  # sha256 | trailer | status | member-hash | restore | hashkv
    ok: bool | None  # None: the check could not be made
    detail: str


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    reason: str
    sha256: str
    size: int
    revision: int | None
    kv_hash: int | None  # the restored snapshot's HashKV at `revision`
    compact_revision: int | None
    checks: tuple[Check, ...]
    duration_s: float

    @property
    def verified(self) -> bool:
        return self.verdict is Verdict.VERIFIED


def file_hashes(path: Path) -> tuple[str, int, bool]:
    """(sha256 of the file, its size, whether etcd's trailing sha256 matches the db bytes), one pass."""
    whole = hashlib.sha256()
    db = hashlib.sha256()
    tail = b""
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            whole.update(chunk)
            size += len(chunk)
            buf = tail + chunk if len(chunk) < _SHA256_LEN else None
            if buf is None:
                db.update(tail)
                db.update(memoryview(chunk)[:-_SHA256_LEN])
                tail = chunk[-_SHA256_LEN:]
            else:
                db.update(buf[:-_SHA256_LEN])
                tail = buf[-_SHA256_LEN:]
    return whole.hexdigest(), size, size > _SHA256_LEN and db.digest() == tail


def verify_snapshot(
    path: Path,
    *,
    version: str,
    expected: Expected,
    member_hash: MemberHash | None = None,
    trial_restore: bool = True,
    scratch_dir: Path | None = None,
    hashed: tuple[str, int, bool] | None = None,
) -> Verification:
    """Run the checks on `path` (a snapshot taken from a member of etcd `version`). `hashed`: (sha256,
    size, trailer ok) as this process computed them while writing the file: the file is not read
    again for them, since a read right after the write comes from the page cache and checks nothing
    the stream's hash did not (a stored snapshot is always re-read)."""
    t0 = time.monotonic()
    checks: list[Check] = []
    who = expected.member

    def done(verdict: Verdict, reason: str, **kw: object) -> Verification:
        return Verification(
            verdict=verdict,
            reason=reason,
            sha256=kw.get("sha256", ""),  # type: ignore[arg-type]
            size=kw.get("size", 0),  # type: ignore[arg-type]
            revision=kw.get("revision"),  # type: ignore[arg-type]
            kv_hash=kw.get("kv_hash"),  # type: ignore[arg-type]
            compact_revision=kw.get("compact_revision"),  # type: ignore[arg-type]
            checks=tuple(checks),
            duration_s=time.monotonic() - t0,
        )

    path = Path(path)
    if not path.is_file():
        checks.append(Check("sha256", False, f"{path} is missing"))
        return done(Verdict.CORRUPT, f"the snapshot file {path} is missing")
    # 1. hashes
    sha, size, trailer_ok = hashed or file_hashes(path)
    got = {"sha256": sha, "size": size}
    if expected.sha256 and sha != expected.sha256:
        checks.append(Check("sha256", False, f"{sha} != cataloged {expected.sha256}"))
        return done(
            Verdict.CORRUPT,
            f"its sha256 {sha[:12]}… differs from the cataloged {expected.sha256[:12]}…",
            **got,
        )
    checks.append(Check("sha256", True if expected.sha256 else None, sha))
    if not trailer_ok:
        checks.append(Check("trailer", False, "etcd's trailing sha256 does not match the db bytes"))
        return done(
            Verdict.CORRUPT, "etcd's own sha256 at the end of the file does not match its db bytes", **got
        )
    checks.append(Check("trailer", True, "etcd's trailing sha256 matches the db bytes"))

    # 2. the member's hash first: every second spent restoring is a second a compaction can win
    reference, why_no_reference = _member_reference(expected, member_hash)
    if reference is not None:
        checks.append(Check("member-hash", True, f"hash {reference[0]} at compact revision {reference[1]}"))
    else:
        checks.append(Check("member-hash", None, why_no_reference))

    try:
        bins = binaries_for(version)
    except (EtcdBinariesError, EtcdDrError) as e:
        checks.append(Check("status", None, str(e)))
        return done(
            Verdict.UNVERIFIED, f"hashes match, but etcd {version} binaries are unavailable: {e}", **got
        )

    # 3. etcd's own reading of the file. With a trial restore to follow, the restore and the
    #    throwaway's start run beside it (two processes on a file in the page cache): its verdict is
    #    still the first word, and the throwaway is asked nothing before it agrees
    with contextlib.ExitStack() as trial:
        # entered first, left last (its exit waits), whatever happened: the tool's process is reaped
        pool = trial.enter_context(cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-status"))
        status = pool.submit(snapshot_status, bins, path)
        served: Served | Exception | None = None
        if trial_restore:
            try:
                served = trial.enter_context(_served(bins, path, scratch_dir or path.parent))
            except (ToolError, TimeoutError, OSError, EtcdError, RuntimeError) as e:
                served = e  # judged after the status
        try:
            st = status.result()
        except ToolError as e:
            if "no result within" in str(e) or "cannot run" in str(e):
                checks.append(Check("status", None, str(e)))
                return done(Verdict.UNVERIFIED, f"hashes match, but {e}", **got)
            checks.append(Check("status", False, str(e)))
            return done(Verdict.CORRUPT, f"etcd cannot read the file: {e}", **got)
        revision = st.store_revision
        got["revision"] = revision
        if expected.revision is not None and revision != expected.revision:
            checks.append(Check("status", False, f"revision {revision}, expected {expected.revision}"))
            return done(
                Verdict.CORRUPT,
                f"etcd reads revision {revision} from the file, but it was taken at {expected.revision}",
                **got,
            )
        if expected.revision_range and not (
            expected.revision_range[0] <= revision <= expected.revision_range[1]
        ):
            lo, hi = expected.revision_range
            checks.append(Check("status", False, f"revision {revision} outside {lo}..{hi}"))
            return done(
                Verdict.CORRUPT,
                f"etcd reads revision {revision} from the file, outside {who}'s {lo}..{hi} while streaming",
                **got,
            )
        checks.append(Check("status", True, f"revision {revision}, {st.total_key} keys"))
        if reference is None and why_no_reference.startswith("revision unknown") and member_hash is not None:
            reference, why_no_reference = _member_reference(
                Expected(member=who, revision=revision), member_hash
            )  # the revision was only known from the file: ask the member now

        if served is None:
            return done(
                Verdict.UNVERIFIED,
                f"hashes and etcd's status agree on revision {revision}; no trial restore was made",
                **got,
            )

        # 4. trial restore and HashKV on a throwaway etcd
        try:
            if isinstance(served, Exception):
                raise served
            restored = served.client.hash_kv(served.endpoint, revision, timeout=600.0)
            mem = memory_of(served.pid)  # right after HashKV, which has read every page
        except ToolError as e:
            checks.append(Check("restore", False, str(e)))
            return done(Verdict.CORRUPT, f"snapshot restore fails on it: {e}", **got)
        except (TimeoutError, OSError, EtcdError, RuntimeError) as e:
            checks.append(Check("restore", None, str(e)))
            return done(Verdict.UNVERIFIED, f"restored, but the throwaway etcd did not answer: {e}", **got)
        served_as = "restored and served by a throwaway etcd" + (f" ({mem.sentence()})" if mem else "")
        checks.append(Check("restore", True, served_as))
        got.update(kv_hash=restored.hash, compact_revision=restored.compact_revision)

        if reference is None:
            checks.append(Check("hashkv", None, why_no_reference))
            return done(
                Verdict.UNVERIFIED,
                f"restores cleanly at revision {revision}, but its hash was not compared: {why_no_reference}",
                **got,
            )
        ref_hash, ref_compact = reference
        held = restored.compact_revision
        if ref_compact != held:
            checks.append(Check("hashkv", None, f"compact revisions differ: {ref_compact} vs {held}"))
            return done(
                Verdict.UNVERIFIED,
                f"{who} compacted to revision {ref_compact} (the snapshot holds {held}): "
                f"hashes at revision {revision} are not comparable",
                **got,
            )
        if ref_hash != restored.hash:
            checks.append(Check("hashkv", False, f"restored {restored.hash} != {who} {ref_hash}"))
            return done(
                Verdict.CORRUPT,
                f"HashKV at revision {revision} of the restored snapshot ({restored.hash}) "
                f"differs from {who}'s ({ref_hash})",
                **got,
            )
        checks.append(Check("hashkv", True, f"{restored.hash} at revision {revision}"))
        return done(
            Verdict.VERIFIED,
            f"restores cleanly and agrees with {who} on revision {revision} and hash {restored.hash}",
            **got,
        )


def _member_reference(
    expected: Expected, member_hash: MemberHash | None
) -> tuple[tuple[int, int] | None, str]:
    """((hash, compact revision), "") to compare the restored snapshot with, or (None, why not)."""
    who = expected.member
    if expected.kv_hash is not None and expected.compact_revision is not None:
        return (expected.kv_hash, expected.compact_revision), ""
    if member_hash is None:
        return None, f"{who} was not asked (no hash recorded when it was taken)"
    if expected.revision is None:
        return None, "revision unknown until etcd reads the file"
    try:
        r = member_hash(expected.revision)
    except RevisionCompacted:
        return None, f"{who} has already compacted past revision {expected.revision}"
    except EtcdError as e:
        return None, f"{who} did not answer HashKV: {e}"
    return (r.hash, r.compact_revision), ""


def _served(
    bins: EtcdBinaries, path: Path, scratch_parent: Path
) -> contextlib.AbstractContextManager[Served]:
    """The trial restore served by a throwaway etcd. The restore skips its own sha256 pass over the
    file: the trailer check above made exactly that comparison already."""
    return served_db(
        bins,
        path,
        scratch_parent,
        skip_hash_check=True,
        start_timeout=RESTORE_START_TIMEOUT,
        scratch_prefix=".verify-",
    )
