"""Take, verify and catalog snapshots of a real etcd (3.4 and 3.5); a flipped byte is CORRUPT."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from etcd_dr.audit import verify as verify_audit
from etcd_dr.snapshots import Catalog, Verdict, service
from etcd_dr.state import observe
from tests.snapshots.conftest import Env, write_inventory

pytestmark = pytest.mark.etcd


def _fill(env: Env, n: int = 50, size: int = 10_000) -> int:
    with env.cluster.client() as c:
        rev = 0
        for i in range(n):
            rev = c.put(f"/snap/{i:04d}", os.urandom(size)).revision
    return rev


def test_a_fresh_cluster_with_no_key_verifies(env: Env) -> None:
    # first in the module: the cluster has never stored a key. `snapshot status` reads revision 0
    # from such a file while etcd counts the store at 1; that is no corruption (the first
    # rehearsal on a new lab snapshots exactly this).
    with env.cluster.client() as c:
        assert c.range(b"\0", range_end=b"\0", count_only=True).count == 0
    inv = env.inv
    record, _ = service.snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
    assert record.verdict is Verdict.VERIFIED, record.reason
    assert record.revision == 1


def test_take_verify_catalog(env: Env) -> None:
    rev = _fill(env)
    inv = env.inv
    state = observe(inv, check_ssh=False)
    record, deleted = service.snapshot_cluster(inv, state, show_progress=False)
    assert deleted == []
    assert record.verdict is Verdict.VERIFIED, record.reason
    assert record.verified and record.member == "m1" and record.cluster == "loop"
    assert record.revision == rev  # nothing wrote while streaming: the bracket is exact
    assert record.revision_source == "bracket"
    assert record.path.parent == env.snapdir and record.path.is_file()
    assert not list(env.snapdir.glob("*.part")) and not list(env.snapdir.glob(".verify-*"))
    assert record.size == record.path.stat().st_size
    assert record.created.tzinfo is not None
    assert f"revision {rev}" in record.reason and "agrees with m1" in record.reason
    assert record.kv_hash is not None
    # the catalog API the readiness check uses
    cat = Catalog(env.snapdir)
    assert cat.newest("loop") == record
    assert cat.records("other") == []
    # the audit log holds the take and the verdict, with reasons, and its chain is intact
    lines = [json.loads(x) for x in Path(inv.audit_log).read_text().splitlines()]
    take = next(x for x in lines if x["action"] == "snapshot-take")
    assert take["outcome"] == "ok" and "in sync with leader m1" in take["reason"]
    assert any(x["action"] == "snapshot-verify" and x["outcome"] == "ok" for x in lines)
    assert verify_audit(inv.audit_log).ok

    # a stored snapshot verifies again against its record
    rec2, v = service.verify_stored(inv, record.id)
    assert v.verdict is Verdict.VERIFIED, v.reason
    # the throwaway etcd's memory, split: the db's mapped pages vs its own (Linux /proc)
    restore = next(c for c in v.checks if c.name == "restore")
    assert "of it the db's mapped file pages (reclaimable)" in restore.detail, restore.detail
    assert rec2 is not None and rec2.verified

    # one flipped byte in the stored file: CORRUPT, and the catalog says so
    data = bytearray(record.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    record.path.write_bytes(bytes(data))
    rec3, v = service.verify_stored(inv, str(record.path))
    assert v.verdict is Verdict.CORRUPT
    assert "sha256" in v.reason
    assert rec3 is not None and not rec3.verified and cat.newest("loop") is None
    assert cat.newest("loop", verified_only=False).verdict is Verdict.CORRUPT


def test_flipped_byte_without_catalog_is_corrupt(env: Env) -> None:
    """An uncataloged file has no recorded sha256: etcd's own trailing sha256 catches the flip."""
    _fill(env, 5)
    inv = env.inv
    record, _ = service.snapshot_cluster(
        inv, observe(inv, check_ssh=False), trial_restore=False, show_progress=False
    )
    assert record.verdict is Verdict.UNVERIFIED  # no trial restore: never called verified
    copy = env.dir / "loose.db"
    data = bytearray(record.path.read_bytes())
    data[4096 + 17] ^= 0x80
    copy.write_bytes(bytes(data))
    rec, v = service.verify_stored(inv, str(copy), version=env.cluster.bins.version)
    assert rec is None and v.verdict is Verdict.CORRUPT
    assert "sha256 at the end of the file" in v.reason


def test_writes_during_stream_revision_from_file(env: Env) -> None:
    """Writes land while streaming: the revision comes from the file (snapshot status), inside the
    bracket, and the snapshot still verifies against the member's hash at that revision."""
    _fill(env, 200, 50_000)  # ~10 MB: a stream long enough for writes to land in it
    stop = threading.Event()

    def writer() -> None:
        with env.cluster.client() as c:
            i = 0
            while not stop.is_set():
                c.put(f"/during/{i % 50}", str(i))
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        inv = env.inv
        taken = service.take(inv, observe(inv, check_ssh=False), show_progress=False)
    finally:
        stop.set()
        t.join()
    lo, hi = taken.result.revision_bracket
    if lo == hi:
        pytest.skip("no write landed during the stream on this run")
    assert taken.revision_source == "snapshot-status"
    assert lo <= taken.revision <= hi
    v = service.verify_taken(inv, taken)
    assert v.verdict is Verdict.VERIFIED, v.reason
    assert v.revision == taken.revision


def test_cli_snapshot_json_list_and_verify(env: Env) -> None:
    _fill(env, 10)
    base = [sys.executable, "-m", "etcd_dr.cli", "snapshot"]
    inv = ["-i", str(env.inventory_path)]
    r = subprocess.run([*base, *inv, "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["verdict"] == "verified" and rec["verified"] is True
    assert Path(rec["path"]).is_file() and rec["created"].endswith("Z")
    r = subprocess.run(
        [*base, "list", *inv, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0 and [x["id"] for x in json.loads(r.stdout)] == [rec["id"]]
    r = subprocess.run(
        [*base, "verify", rec["id"], *inv], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("verified:")
    r = subprocess.run(
        [*base, "verify", "no-such", *inv], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 2


def test_offsite_dir_copy_verified(env: Env) -> None:
    _fill(env, 5)
    path = write_inventory(env.cluster, env.dir, offsite={"dir": "elsewhere"})
    inv = Env(env.cluster, env.dir, path).inv
    record, _ = service.snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
    assert record.verified and len(record.offsite) == 1
    c = record.offsite[0]
    assert c.verified and c.sha256 == record.sha256
    assert Path(c.location) == env.dir / "elsewhere" / "loop" / record.path.name
    assert Catalog(env.snapdir).newest("loop").offsite == record.offsite
    # the copy rots: verify says so, and the CLI exits 1
    rotten = bytearray(Path(c.location).read_bytes())
    rotten[100] ^= 0xFF
    Path(c.location).write_bytes(bytes(rotten))
    rec, v = service.verify_stored(inv, record.id)
    assert v.verified and rec is not None and not rec.offsite[0].verified
    assert "differs" in rec.offsite[0].reason


def _no_scratch_left(d: Path) -> None:
    assert not list(d.glob(".verify-*")), "the trial restore's scratch dir was left behind"


def test_status_has_the_first_word_though_the_restore_runs_beside_it(env: Env, tmp_path: Path) -> None:
    """`snapshot status` runs beside the trial restore: a file etcd cannot read, whose trailer still
    matches, is CORRUPT for status's reason (not the restore's), and nothing is left behind."""
    from etcd_dr.snapshots.verify import Expected, verify_snapshot

    body = os.urandom(64 * 1024)
    bad = tmp_path / "garbage.db"
    bad.write_bytes(body + hashlib.sha256(body).digest())
    v = verify_snapshot(bad, version=env.cluster.bins.version, expected=Expected(), trial_restore=True)
    assert v.verdict is Verdict.CORRUPT and v.reason.startswith("etcd cannot read the file"), v.reason
    assert [c.name for c in v.checks][-1] == "status" and "restore" not in {c.name for c in v.checks}
    _no_scratch_left(tmp_path)


def test_a_wrong_revision_is_said_before_the_throwaway_is_asked(env: Env) -> None:
    from etcd_dr.snapshots.verify import Expected, verify_snapshot

    rev = _fill(env, 5)
    inv = env.inv
    record, _ = service.snapshot_cluster(
        inv, observe(inv, check_ssh=False), trial_restore=False, show_progress=False, prune=False
    )
    v = verify_snapshot(record.path, version=env.cluster.bins.version, expected=Expected(revision=rev + 1000))
    assert v.verdict is Verdict.CORRUPT and f"but it was taken at {rev + 1000}" in v.reason, v.reason
    assert {c.name for c in v.checks}.isdisjoint({"restore", "hashkv"})
    _no_scratch_left(record.path.parent)
