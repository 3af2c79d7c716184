"""The etcd image: built from the machine's own etcd binaries (no registry), loaded on each host with
`docker import`. The Debian binaries link only libc, so the image is etcd, etcdctl (and etcdutl on
3.5+), libc and the loader (~39 MB)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcdbin import EtcdBinaries
from etcd_dr.executor import Executor

IMAGE_REPO = "lab/etcd"
ENTRYPOINT = "/usr/local/bin/etcd"
DOCKER = "/usr/bin/docker"  # the hosts' 20.10 client (a newer one may come first on PATH)


class ImageError(EtcdDrError):
    """The etcd image could not be built or loaded."""


def image_tag(bins: EtcdBinaries) -> str:
    return f"{IMAGE_REPO}:{bins.version}"


def _libs(binary: Path) -> list[Path]:
    """Shared objects binary needs (ldd), including the loader."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            libs.append(Path(parts[0]))  # the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
    return libs


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, mode
    tar.addfile(ti)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), mode
    tar.addfile(ti, io.BytesIO(data))


def build_rootfs(bins: EtcdBinaries, out: Path) -> Path:
    """Write the image's root filesystem as a tarball (cached: rebuilt when the binaries change)."""
    stamp = {"version": bins.version, "etcd_mtime": bins.etcd.stat().st_mtime_ns, "bindir": str(bins.bindir)}
    stamp_file = out.with_suffix(".json")
    if out.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    with tarfile.open(tmp, "w") as tar:
        dirs = {"usr", "usr/local", "usr/local/bin", "etc", "var", "var/lib", "var/lib/etcd"}
        files: list[tuple[Path, str]] = []
        for b in (bins.etcd, bins.etcdctl, bins.etcdutl):
            if b is not None:
                files.append((b, f"usr/local/bin/{b.name}"))
        for lib in _libs(bins.etcd):
            name = str(lib).lstrip("/")
            parts = Path(name).parts[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
            files.append((lib.resolve(), name))
        for d in sorted(dirs):
            _add_dir(tar, d)
        _add_dir(tar, "tmp", 0o1777)
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        for src, name in files:
            ti = tar.gettarinfo(str(src), arcname=name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            with open(src, "rb") as f:
                tar.addfile(ti, f)
    tmp.replace(out)
    stamp_file.write_text(json.dumps(stamp))
    return out


def has_image(ex: Executor, tag: str) -> bool:
    return ex.run([DOCKER, "image", "inspect", "--format", "{{.Id}}", tag], check=False).ok


def load(ex: Executor, rootfs: Path, tag: str, *, visible_on_host: bool = False) -> bool:
    """docker import the rootfs on the host unless it has the tag already. True if it imported.
    visible_on_host: the host sees rootfs at the same path (lab hosts share /tmp with the machine):
    import from the file (~35% faster than streaming it through stdin)."""
    if has_image(ex, tag):
        return False
    changes = ["-c", f'ENTRYPOINT ["{ENTRYPOINT}"]', "-c", "ENV ETCDCTL_API=3"]
    if visible_on_host:
        ex.run([DOCKER, "import", *changes, str(rootfs), tag], timeout=120, reason=f"load image {tag}")
    else:
        ex.run(
            [DOCKER, "import", *changes, "-", tag],
            stdin=rootfs.read_bytes(),
            timeout=120,
            reason=f"load image {tag}",
        )
    return True
