"""Prune deletes exactly what retention decided and nothing else; off-site S3 copies go to a real
S3-compatible server (moto in server mode on 127.0.0.1) and are verified by reading them back."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcd_dr.snapshots import Catalog, SnapshotRecord, Verdict, service
from etcd_dr.snapshots import offsite as off
from etcd_dr.state import observe
from tests.snapshots.conftest import Env, write_inventory

pytestmark = pytest.mark.etcd


def _record(
    d: Path, created: dt.datetime, verdict: Verdict = Verdict.VERIFIED, size: int = 1000
) -> SnapshotRecord:
    sid = f"loop-{created:%Y%m%dT%H%M%S}-m1"
    p = d / f"{sid}.db"
    data = os.urandom(size)
    p.write_bytes(data)
    return SnapshotRecord(
        id=sid, cluster="loop", member="m1", endpoint="https://127.0.0.1:1", revision=5, raft_index=9,
        size=size, sha256=hashlib.sha256(data).hexdigest(), created=created,
        verified=verdict is Verdict.VERIFIED, verdict=verdict, reason="fixture", path=p,
    )  # fmt: skip


def test_prune_deletes_exactly_the_decided_files(env: Env) -> None:
    path = write_inventory(env.cluster, env.dir, keep_last=2, keep_daily=0, keep_weekly=0)
    snapdir = env.snapdir
    snapdir.mkdir()
    now = dt.datetime.now(dt.UTC)
    recs = [_record(snapdir, now - dt.timedelta(hours=h)) for h in range(5)]
    cat = Catalog(snapdir)
    for r in recs:
        cat.add(r)
    stray = snapdir / "not-cataloged.db"  # in the dir, not in the catalog: never touched
    stray.write_bytes(b"x")
    before = {p.name for p in snapdir.iterdir()}

    base = [sys.executable, "-m", "etcd_dr.cli", "snapshot", "prune", "-i", str(path), "--json"]
    r = subprocess.run([*base, "--dry-run"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["dry_run"] and [d["keep"] for d in plan["decisions"]] == [True, True, False, False, False]
    assert {p.name for p in snapdir.iterdir()} == before  # a dry run deletes nothing

    r = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    gone = {d["id"] for d in json.loads(r.stdout)["decisions"] if d["deleted"]}
    assert gone == {x.id for x in recs[2:]}
    assert {p.name for p in snapdir.iterdir()} == before - {f"{x.id}.db" for x in recs[2:]}
    assert stray.exists()
    assert [x.id for x in cat.records()] == [x.id for x in reversed(recs[:2])]
    audit = [json.loads(x) for x in (env.dir / "audit.jsonl").read_text().splitlines()]
    deletes = [x for x in audit if x["action"] == "snapshot-delete"]
    assert {x["snapshot"] for x in deletes} == gone
    assert all(x["outcome"] == "ok" and "outside the policy" in x["reason"] for x in deletes)


# -- S3 ----------------------------------------------------------------------------------------------

KEY_ENV, SECRET_ENV = "SA_TEST_S3_KEY", "SA_TEST_S3_SECRET"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch) -> dict:
    secret = "sEcReT-" + os.urandom(8).hex()
    monkeypatch.setenv(KEY_ENV, "AKIDTEST")
    monkeypatch.setenv(SECRET_ENV, secret)
    bucket = "etcd-dr-" + os.urandom(4).hex()
    target = {
        "endpoint": s3_endpoint,
        "bucket": bucket,
        "prefix": "backups/",
        "access_key_id_env": KEY_ENV,
        "secret_access_key_env": SECRET_ENV,
    }
    from etcd_dr.inventory import S3Target

    off.s3_client(S3Target(**target)).create_bucket(Bucket=bucket)
    return {"target": target, "secret": secret}


def test_s3_copy_verified_and_corruption_detected(env: Env, s3_env: dict) -> None:
    from etcd_dr.inventory import S3Target

    target = S3Target(**s3_env["target"])
    # 20 MB: boto3 uploads it in multipart, whose ETag is no plain hash of the object
    rec = _record(env.dir, dt.datetime.now(dt.UTC), size=20 << 20)
    copy = off.copy_to_s3(rec, target)
    assert copy.verified and copy.sha256 == rec.sha256
    assert copy.location == f"s3://{target.bucket}/backups/loop/{rec.path.name}"
    client = off.s3_client(target)
    key = copy.location.removeprefix(f"s3://{target.bucket}/")
    assert "-" in client.head_object(Bucket=target.bucket, Key=key)["ETag"]  # multipart indeed
    # someone (or bit rot) replaces the object: reading it back says so
    body = bytearray(rec.path.read_bytes())
    body[12345] ^= 0x01
    client.put_object(Bucket=target.bucket, Key=key, Body=bytes(body))
    again = off.verify_s3_copy(rec, copy, target)
    assert not again.verified and "differs" in again.reason
    client.delete_object(Bucket=target.bucket, Key=key)
    assert "missing" in off.verify_s3_copy(rec, copy, target).reason


def test_snapshot_with_s3_offsite_and_no_secret_leaks(env: Env, s3_env: dict) -> None:
    with env.cluster.client() as c:
        c.put("/s3/k", "v")
    path = write_inventory(env.cluster, env.dir, offsite={"s3": s3_env["target"]})
    inv = Env(env.cluster, env.dir, path).inv
    record, _ = service.snapshot_cluster(inv, observe(inv, check_ssh=False), show_progress=False)
    assert record.verified and len(record.offsite) == 1 and record.offsite[0].verified
    assert record.offsite[0].location.startswith("s3://")
    for f in (env.dir / "audit.jsonl", env.snapdir / "catalog.json"):
        assert s3_env["secret"] not in f.read_text()


def test_s3_missing_credentials_names_the_variable(env: Env, s3_env: dict, monkeypatch) -> None:
    from etcd_dr.errors import InputError
    from etcd_dr.inventory import S3Target

    monkeypatch.delenv(SECRET_ENV)
    rec = _record(env.dir, dt.datetime.now(dt.UTC))
    with pytest.raises(InputError, match=SECRET_ENV):
        off.copy_to_s3(rec, S3Target(**s3_env["target"]))
