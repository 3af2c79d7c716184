"""Off-site copies: a directory (a mount of another site) or an S3-compatible bucket, each verified
by reading the copy back and hashing it. For S3 an ETag is not enough (a multipart upload's ETag is
not a hash of the object), so the object is downloaded and hashed.

Credentials come from the environment variables the inventory names; they never reach a log, a
record or an error message (errors name the variable, not its value).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.inventory import OffsiteKind, OffsiteSettings, S3Target
from etcd_dr.snapshots.record import OffsiteCopy

_CHUNK = 8 << 20


class Shippable(Protocol):
    """What an off-site copy needs of a file: a snapshot record, or a sealed delta log segment
    (etcd_dr.deltalog.offsite), whose `cluster` is `<cluster>/deltalog` so it lands beside them."""

    @property
    def cluster(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def revision(self) -> int: ...


class OffsiteError(EtcdDrError):
    """The copy could not be made or read back."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy(record: Shippable, location: str, read_sha: str, kind: OffsiteKind) -> OffsiteCopy:
    ok = read_sha == record.sha256
    reason = (
        "read back and its sha256 matches"
        if ok
        else f"read back sha256 {read_sha[:12]}… differs from the snapshot's {record.sha256[:12]}…"
    )
    return OffsiteCopy(str(kind), location, read_sha, ok, datetime.now(UTC), reason)


# -- directory ---------------------------------------------------------------------------------------


def _dir_dest(root: Path, record: Shippable) -> Path:
    return root / record.cluster / Path(record.path).name


def copy_to_dir(record: Shippable, root: Path) -> OffsiteCopy:
    dest = _dir_dest(root, record)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with open(record.path, "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(part, dest)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise OffsiteError(f"off-site copy to {dest}: {e.strerror or e}") from None
    # Read the copy back from its own file: the hash proves what landed there, not what we sent.
    return _copy(record, str(dest), _sha256_file(dest), OffsiteKind.DIR)


def verify_dir_copy(record: Shippable, copy: OffsiteCopy) -> OffsiteCopy:
    p = Path(copy.location)
    if not p.is_file():
        return OffsiteCopy(copy.kind, copy.location, "", False, datetime.now(UTC), f"{p} is missing")
    return _copy(record, copy.location, _sha256_file(p), OffsiteKind.DIR)


# -- S3 ----------------------------------------------------------------------------------------------


def s3_client(target: S3Target, env: Mapping[str, str] | None = None) -> Any:
    """A boto3 client for the target, with credentials from the env vars the inventory names."""
    import boto3
    from botocore.config import Config

    env = os.environ if env is None else env
    missing = [n for n in (target.access_key_id_env, target.secret_access_key_env) if not env.get(n)]
    if missing:
        raise InputError(f"off-site S3: set the environment variable(s) {', '.join(missing)}")
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint,
        region_name=target.region,
        aws_access_key_id=env[target.access_key_id_env],
        aws_secret_access_key=env[target.secret_access_key_env],
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def _key(target: S3Target, record: Shippable) -> str:
    prefix = target.prefix.strip("/")
    name = f"{record.cluster}/{Path(record.path).name}"
    return f"{prefix}/{name}" if prefix else name


def _s3_sha256(client: Any, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for chunk in body.iter_chunks(_CHUNK):
            h.update(chunk)
    finally:
        body.close()
    return h.hexdigest()


def _s3_error(what: str, e: Exception) -> OffsiteError:
    # botocore's messages name the operation, bucket and code, never the credentials
    return OffsiteError(f"off-site S3 {what}: {e.__class__.__name__}: {e}")


def copy_to_s3(record: Shippable, target: S3Target, env: Mapping[str, str] | None = None) -> OffsiteCopy:
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(target, env)
    key = _key(target, record)
    location = f"s3://{target.bucket}/{key}"
    try:
        client.upload_file(
            str(record.path),
            target.bucket,
            key,
            ExtraArgs={"Metadata": {"sha256": record.sha256, "revision": str(record.revision)}},
            # 64 MiB parts, 2 at a time: memory stays bounded for any snapshot size
            Config=TransferConfig(multipart_chunksize=64 << 20, max_concurrency=2),
        )
        return _copy(record, location, _s3_sha256(client, target.bucket, key), OffsiteKind.S3)
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(f"upload to {location}", e) from None


def verify_s3_copy(
    record: Shippable, copy: OffsiteCopy, target: S3Target, env: Mapping[str, str] | None = None
) -> OffsiteCopy:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(target, env)
    key = copy.location.removeprefix(f"s3://{target.bucket}/")
    try:
        return _copy(record, copy.location, _s3_sha256(client, target.bucket, key), OffsiteKind.S3)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return OffsiteCopy(
                copy.kind, copy.location, "", False, datetime.now(UTC), "the object is missing"
            )
        raise _s3_error(f"read back {copy.location}", e) from None
    except BotoCoreError as e:
        raise _s3_error(f"read back {copy.location}", e) from None


# -- either ------------------------------------------------------------------------------------------


def copy_offsite(
    record: Shippable, settings: OffsiteSettings, env: Mapping[str, str] | None = None
) -> OffsiteCopy:
    if settings.kind is OffsiteKind.DIR:
        assert settings.dir is not None
        return copy_to_dir(record, settings.dir)
    assert settings.s3 is not None
    return copy_to_s3(record, settings.s3, env)


def verify_copy(
    record: Shippable, copy: OffsiteCopy, settings: OffsiteSettings, env: Mapping[str, str] | None = None
) -> OffsiteCopy:
    if copy.kind == OffsiteKind.DIR:
        return verify_dir_copy(record, copy)
    if settings.s3 is None:
        raise InputError(f"{copy.location}: the inventory has no snapshots.offsite.s3 to read it from")
    return verify_s3_copy(record, copy, settings.s3, env)


def delete_copy(
    copy: OffsiteCopy, settings: OffsiteSettings | None, env: Mapping[str, str] | None = None
) -> None:
    """Remove one cataloged off-site copy (retention's delete step only)."""
    if copy.kind == OffsiteKind.DIR:
        Path(copy.location).unlink(missing_ok=True)
        return
    if settings is None or settings.s3 is None:
        raise InputError(f"{copy.location}: the inventory has no snapshots.offsite.s3 to delete it from")
    from botocore.exceptions import BotoCoreError, ClientError

    t = settings.s3
    try:
        s3_client(t, env).delete_object(Bucket=t.bucket, Key=copy.location.removeprefix(f"s3://{t.bucket}/"))
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(f"delete {copy.location}", e) from None
