"""STAND-INS for the programs of an RKE cluster that cannot run in the lab (`rke`, `kube-apiserver`):
scripts for the hosts' own python3 (standard library, PyYAML and cryptography from Debian's
packages), installed by `etcd-dr lab up`. What each does and does not do is in its module's
docstring and in README "The lab's stand-ins".

- `rke` on the deploy host: /opt/etcd-dr-standins/{rke,etcdgw}.py and /usr/local/bin/rke;
- `kube-apiserver`: a Docker image `lab/kube-apiserver-standin:1` (the script, and the host's /usr
  mounted read-only for python3: nothing to download), run by the stand-in rke (and by `lab up`) as
  the container `kube-apiserver`, RKE's name.
"""

from __future__ import annotations

import io
import tarfile
from importlib import resources
from pathlib import Path

from etcd_dr.executor import Executor
from etcd_dr.lab import images
from etcd_dr.lab.standins.rke import APISERVER_IMAGE

REMOTE_DIR = "/opt/etcd-dr-standins"
RKE_BIN = "/usr/local/bin/rke"
_IMAGE_DIR = "/opt/standin"


def _source(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def install_rke(ex: Executor) -> None:
    """The stand-in rke on a host (the deploy host): its scripts and the `rke` command."""
    ex.run(["mkdir", "-p", REMOTE_DIR])
    for name in ("etcdgw.py", "rke.py"):
        ex.put(_source(name), f"{REMOTE_DIR}/{name}", mode=0o644, reason=f"install the stand-in {name}")
    wrapper = (
        f'#!/bin/sh\n# etcd-dr lab: STAND-IN for RKE\'s rke\nexec /usr/bin/python3 {REMOTE_DIR}/rke.py "$@"\n'
    )
    ex.put(wrapper.encode(), RKE_BIN, mode=0o755, reason="install the stand-in rke")


def build_apiserver_rootfs(out: Path) -> Path:
    """The stand-in kube-apiserver image's root filesystem: the scripts, and the directories and
    links through which the host's /usr (mounted read-only at run time) gives it python3."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("usr", "etc", "opt", "opt/standin", "proc", "sys", "dev", "tmp", "etc/kubernetes"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(ti)
        for link, target in (
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("sbin", "usr/sbin"),
        ):
            ti = tarfile.TarInfo(link)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tar.addfile(ti)
        for name in ("etcdgw.py", "kube_apiserver.py"):
            data = _source(name)
            ti = tarfile.TarInfo(f"opt/standin/{name}")
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        ti = tarfile.TarInfo("etc/passwd")
        ti.size = len(passwd)
        tar.addfile(ti, io.BytesIO(passwd))
    data = buf.getvalue()
    if not out.exists() or out.read_bytes() != data:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


def load_apiserver_image(ex: Executor, rootfs: Path) -> None:
    """docker import the stand-in kube-apiserver image on a host (the lab's hosts see rootfs)."""
    if images.has_image(ex, APISERVER_IMAGE):
        return
    ex.run(
        [
            images.DOCKER, "import",
            "-c", f'ENTRYPOINT ["/usr/bin/python3", "{_IMAGE_DIR}/kube_apiserver.py"]',
            str(rootfs), APISERVER_IMAGE,
        ],
        timeout=120,
        reason="load the stand-in kube-apiserver image",
    )  # fmt: skip
