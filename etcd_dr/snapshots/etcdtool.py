"""etcd's own tools on a snapshot file: `snapshot status` and `snapshot restore`, from the binaries
of the source member's etcd line (3.4: etcdctl; 3.5+: etcdutl, as etcdctl's copies are deprecated)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcdbin import EtcdBinaries, ensure_binaries


class ToolError(EtcdDrError):
    """etcd's tool failed on the file. `output` is its last lines (it prints no secrets)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class FileStatus:
    """`snapshot status -w json` of a file: what etcd itself reads from the db."""

    hash: int
    revision: int  # the newest revision of a stored key: 0 when no key was ever written
    total_key: int
    total_size: int

    @property
    def store_revision(self) -> int:
        """The revision etcd itself would report for this store: it counts from 1, so a store no key
        was ever written to (a fresh cluster: the first rehearsal's snapshot) is at 1, not 0."""
        return max(self.revision, 1)


def binaries_for(version: str, *, fetch: bool = True) -> EtcdBinaries:
    """The binaries of the member's etcd line ("3.4.23" -> 3.4, "3.5.16" -> 3.5)."""
    major_minor = ".".join(version.split(".")[:2]) if version else "3.4"
    return ensure_binaries(major_minor, fetch=fetch)


def _tool(bins: EtcdBinaries) -> list[str]:
    return [str(bins.etcdutl)] if bins.etcdutl else [str(bins.etcdctl)]


def _run(argv: list[str], what: str, timeout: float) -> str:
    env = {"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what}: no result within {timeout:.0f} s") from None
    except OSError as e:
        raise ToolError(f"{what}: cannot run {argv[0]}: {e.strerror}") from None
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        raise ToolError(f"{what} exited {p.returncode}: {tail}", tail)
    return p.stdout


def snapshot_status(bins: EtcdBinaries, path: Path, timeout: float = 600.0) -> FileStatus:
    out = _run([*_tool(bins), "snapshot", "status", "-w", "json", str(path)], "snapshot status", timeout)
    try:
        d = json.loads(out.strip().splitlines()[-1])
        return FileStatus(int(d["hash"]), int(d["revision"]), int(d["totalKey"]), int(d["totalSize"]))
    except (ValueError, KeyError, IndexError) as e:
        raise ToolError(
            f"snapshot status printed no JSON status ({e.__class__.__name__})", out[-300:]
        ) from None


def snapshot_restore(
    bins: EtcdBinaries,
    path: Path,
    data_dir: Path,
    *,
    name: str,
    peer_url: str,
    timeout: float = 1800.0,
    skip_hash_check: bool = False,
    durable: bool = True,
) -> None:
    """skip_hash_check: for a member's own `member/snap/db`, which carries no snapshot hash (NOTES).
    durable=False: a throwaway data dir (the trial restore): the tool's fsyncs are no-ops (nosync)."""
    argv = [
        *_tool(bins),
        "snapshot",
        "restore",
        str(path),
        f"--name={name}",
        f"--initial-cluster={name}={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--data-dir={data_dir}",
        *(["--skip-hash-check"] if skip_hash_check else []),
    ]
    if not durable:
        from etcd_dr.etcd.nosync import without_sync

        argv = without_sync(argv)
    _run(argv, "snapshot restore", timeout)
