"""The lab's etcd: a kube-ca and member certificates at RKE's paths on each host, a client
certificate for etcd-dr itself, etcd members started the RKE way, and a health check."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.certs import CertKeyPair, issue_cert, new_ca
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcdbin import EtcdBinaries
from etcd_dr.executor import Executor
from etcd_dr.inventory import Host, Inventory
from etcd_dr.lab.config import HOSTS, LabConfig

CERT_DIR = "/etc/kubernetes/ssl"  # RKE's


class LabEtcdError(EtcdDrError):
    """The lab's etcd did not become healthy."""


@dataclass(frozen=True)
class ClientFiles:
    ca_cert: Path
    cert: Path
    key: Path


def client_files(cfg: LabConfig) -> ClientFiles:
    d = cfg.certs_dir
    return ClientFiles(d / "kube-ca.pem", d / "kube-etcd-client.pem", d / "kube-etcd-client-key.pem")


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_certs(cfg: LabConfig) -> CertKeyPair:
    """A new kube-ca (cert and key kept in <labdir>/certs: RKE keeps it in cluster.rkestate, not on
    nodes) and etcd-dr's client certificate. Returns the CA."""
    ca = new_ca("kube-ca")
    d = cfg.certs_dir
    _write(d / "kube-ca.pem", ca.cert_pem, 0o644)
    _write(d / "kube-ca-key.pem", ca.key_pem, 0o600)
    client = issue_cert(ca, "etcd-dr", server=False, client=True)
    files = client_files(cfg)
    _write(files.cert, client.cert_pem, 0o644)
    _write(files.key, client.key_pem, 0o600)
    return ca


def install_host_certs(
    cfg: LabConfig, ca: CertKeyPair, host: str, ex: Executor, *, member: bool, ca_key: bool = False
) -> CertKeyPair | None:
    """kube-ca.pem on every host; a member certificate (IP + name SANs, server and client auth) on
    the hosts that run etcd, named after the address like RKE: kube-etcd-10-231-0-11.pem. ca_key
    (the masters): kube-ca-key.pem too (0600), where the inventory's default `ca:` reads it to sign
    a new member's certificate. A real RKE cluster keeps that key in cluster.rkestate instead.
    Returns the member certificate (for cluster.rkestate), None when the host runs no member."""
    ex.run(["mkdir", "-p", CERT_DIR])
    ex.put(ca.cert_pem, f"{CERT_DIR}/kube-ca.pem", reason="install kube-ca")
    if ca_key:
        ex.put(ca.key_pem, f"{CERT_DIR}/kube-ca-key.pem", mode=0o600, reason="install kube-ca key")
    if member:
        ip = cfg.address(host)
        pair = issue_cert(
            ca, f"kube-etcd-{ip.replace('.', '-')}", ips=(ip, "127.0.0.1"), dns=(host, "localhost")
        )
        base = f"{CERT_DIR}/kube-etcd-{ip.replace('.', '-')}"
        ex.put(pair.cert_pem, f"{base}.pem", reason="install member certificate")
        ex.put(pair.key_pem, f"{base}-key.pem", mode=0o600, reason="install member key")
        return pair
    return None


def install_binaries(bins: EtcdBinaries, ex: Executor) -> str:
    """Install etcd's binaries on a host for the process runtime (3.5 is not a system package on
    Debian 12). Returns the etcd path on the host."""
    d = f"/opt/etcd-{bins.version}/bin"
    ex.run(["mkdir", "-p", d])
    for b in (bins.etcd, bins.etcdctl, bins.etcdutl):
        if b is not None:
            ex.put(b.read_bytes(), f"{d}/{b.name}", mode=0o755, reason=f"install {b.name} {bins.version}")
    return f"{d}/etcd"


def etcdctl_env(cfg: LabConfig, inv: Inventory, hosts: Sequence[Host] | None = None) -> dict[str, str]:
    """etcdctl's environment for the lab; endpoints of `hosts` (default: every etcd host)."""
    files = client_files(cfg)
    return {
        "ETCDCTL_API": "3",
        "ETCDCTL_ENDPOINTS": ",".join(
            inv.client_url(h) for h in (inv.etcd_hosts if hosts is None else hosts)
        ),
        "ETCDCTL_CACERT": str(files.ca_cert),
        "ETCDCTL_CERT": str(files.cert),
        "ETCDCTL_KEY": str(files.key),
    }


def wait_healthy(etcdctl: Path, env: Mapping[str, str], timeout: float = 60.0) -> float:
    """Poll `etcdctl endpoint health` on every member until all are healthy (NOTES: startup is
    bimodal, never sleep a fixed time). Returns seconds waited."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        p = subprocess.run(
            [str(etcdctl), "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        if p.returncode == 0:
            return time.monotonic() - t0
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
        last = last[0]
        time.sleep(0.2)
    raise LabEtcdError(f"etcd not healthy after {timeout:.0f} s: {last[:300]}")


def etcd_hosts() -> list[str]:
    return [h.name for h in HOSTS if h.runs_etcd]
