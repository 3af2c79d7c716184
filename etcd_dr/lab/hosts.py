"""Lab hosts: their disks and keys, booting (a PID 1 in fresh PID/mount/UTS namespaces inside the
host's netns), power loss (SIGKILL of that PID 1: the kernel kills every process of the host at once),
graceful stop, and the cleanup of whatever an aborted lab with the same prefix left behind."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from etcd_dr.errors import EtcdDrError
from etcd_dr.lab import net, procs
from etcd_dr.lab.config import HOSTS, HostProc, LabConfig, LabState

# The kernel clock and the machine are shared: `date -s`, `ntpdate -b`, `reboot -f` and module loads
# inside a host must fail, not hit the machine.
DROPPED_CAPS = "-sys_time,-sys_boot,-sys_module"
INIT_SCRIPT = "host-init.sh"


class HostBootError(EtcdDrError):
    """A lab host did not come up."""


# --- disks and keys ----------------------------------------------------------------------------


def _write_ssh_key(path: Path, comment: str) -> None:
    """An ed25519 key pair in OpenSSH format (what ssh-keygen writes), without a subprocess."""
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(priv)
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(pub + b" " + comment.encode() + b"\n")


def client_key(cfg: LabConfig) -> Path:
    return cfg.keys_dir / "id_ed25519"


def known_hosts(cfg: LabConfig) -> Path:
    return cfg.keys_dir / "known_hosts"


def prepare(cfg: LabConfig) -> None:
    """Write keys (first time only), sshd configs, known_hosts, /etc/hosts lines, the host env files
    and the init script into the lab dir. The hosts read them from there at boot."""
    cfg.dir.mkdir(parents=True, exist_ok=True)
    k = cfg.keys_dir
    if not client_key(cfg).exists():
        _write_ssh_key(client_key(cfg), f"etcd-dr-lab-{cfg.prefix}")
    (k / "authorized_keys").write_bytes(client_key(cfg).with_suffix(".pub").read_bytes())
    kh, hosts_txt = [], []
    for h in HOSTS:
        hd, ip = cfg.host_dir(h.name), cfg.address(h.name)
        hostkey = hd / "ssh" / "ssh_host_ed25519_key"
        if not hostkey.exists():
            _write_ssh_key(hostkey, f"host-{h.name}")
        (hd / "sshd_config").write_text(
            f"ListenAddress {ip}\n"
            f"HostKey {hostkey}\n"
            "PidFile /run/sshd.pid\n"
            f"AuthorizedKeysFile {k / 'authorized_keys'}\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "MaxStartups 100:30:200\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        )
        env = {
            "HOST": h.name,
            "IP": ip,
            "LAB_DIR": str(cfg.dir),
            "DOCKER": "1",
            "CGROUP_PARENT": cfg.cgroup_parent(h.name),
        }
        (hd / "host.env").write_text("".join(f"{n}={shlex.quote(v)}\n" for n, v in env.items()))
        pub = " ".join(hostkey.with_suffix(".pub").read_text().split()[:2])
        kh.append(f"{ip},{h.name} {pub}\n")
        hosts_txt.append(f"{ip} {h.name} # etcd-dr-lab\n")
    (k / "known_hosts").write_text("".join(kh))
    (cfg.dir / "hosts.txt").write_text("".join(hosts_txt))
    # 'ip netns exec' hides /sys/fs/cgroup behind a fresh /sys: the init script replays these mounts
    mounts = subprocess.run(
        ["findmnt", "-rn", "-R", "/sys/fs/cgroup", "-o", "TARGET,FSTYPE,OPTIONS"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (cfg.dir / "cgroup-mounts").write_text(mounts)
    script = resources.files("etcd_dr.lab").joinpath(INIT_SCRIPT).read_bytes()
    (cfg.dir / INIT_SCRIPT).write_bytes(script)
    (cfg.dir / INIT_SCRIPT).chmod(0o755)


def wipe(cfg: LabConfig) -> None:
    """Delete host disks, keys, certs, the inventory, RKE's files and the state (only inside the lab dir; the
    image tarballs in images/ stay as a cache, the audit log stays as a record). What belonged to
    the old cluster goes too: its snapshots, its fault ledger and recovery journal would otherwise
    describe the new lab (a stale fault refuses the next rehearsal's fault injection)."""
    for sub in ("hosts", "keys", "certs", "snapshots"):
        shutil.rmtree(cfg.dir / sub, ignore_errors=True)
    for f in (cfg.inventory_path, cfg.state_path, cfg.dir / "hosts.txt", cfg.dir / "cgroup-mounts"):
        f.unlink(missing_ok=True)
    # RKE's files as lab up left them (etcd_dr.lab.kube): the state file holds every private key
    for name in ("cluster.yml", "cluster.rkestate", "kube_config_cluster.yml", "registry-counts.json"):
        (cfg.dir / name).unlink(missing_ok=True)
    for pattern in ("faults-*.json*", "recover-*.json"):
        for f in cfg.dir.glob(pattern):
            f.unlink(missing_ok=True)
    (cfg.dir / INIT_SCRIPT).unlink(missing_ok=True)


# --- power ---------------------------------------------------------------------------------------


def boot(cfg: LabConfig, host: str, timeout: float = 15.0) -> HostProc:
    """Start the host's PID 1 and wait until it says it booted (sshd listening). Returns its PID."""
    ns_file = net.NETNS_DIR / cfg.netns(host)
    if procs.pids_in_netns(ns_file):
        raise HostBootError(f"{host}: processes already run in its network namespace: power it off first")
    hd = cfg.host_dir(host)
    log = hd / "init.log"
    argv = [
        "setsid", "-f",  # fork and detach: the host outlives this command and is not our zombie
        "ip", "netns", "exec", cfg.netns(host),
        "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--uts",
        "--propagation", "private",
        "setpriv", "--bounding-set", DROPPED_CAPS,
        "bash", str(cfg.dir / INIT_SCRIPT), str(hd),
    ]  # fmt: skip
    with open(log, "wb") as out:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=True)
    end = time.monotonic() + timeout
    pid = None
    while time.monotonic() < end:
        if pid is None:
            pid = procs.find_ns_init(ns_file)
        text = log.read_text(errors="replace")
        if f"booted {host}" in text and pid is not None:
            ticks = procs.start_ticks(pid)
            if ticks is not None:
                return HostProc(pid, ticks)
        if pid is not None and not procs.alive(pid):
            break
        time.sleep(0.01)
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    raise HostBootError(f"{host} did not boot within {timeout:.0f} s: {tail or 'no output'}")


def power_off(proc: HostProc | None, timeout: float = 10.0) -> None:
    """Power loss: SIGKILL of the host's PID 1 (proven by its start time). Its PID namespace dies
    with it: every process of the host, containers included, is killed at once. Disk is kept."""
    if proc is None or not procs.alive(proc.pid, proc.start_ticks):
        return
    procs.kill_pids([proc.pid])
    if procs.wait_gone([proc.pid], timeout):
        raise HostBootError(f"host PID {proc.pid} still alive {timeout:.0f} s after SIGKILL")


def shutdown(proc: HostProc | None, timeout: float = 5.0) -> None:
    """Graceful: SIGTERM to PID 1 (it TERMs every process of the host), then power off."""
    if proc is None or not procs.alive(proc.pid, proc.start_ticks):
        return
    procs.kill_pids([proc.pid], signal.SIGTERM)
    procs.wait_gone([proc.pid], timeout)
    power_off(proc)


def is_up(proc: HostProc | None) -> bool:
    return proc is not None and procs.alive(proc.pid, proc.start_ticks)


def wait_port(address: str, port: int, timeout: float) -> bool:
    """A TCP connect from the root namespace (needs the link up)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --- cleanup -------------------------------------------------------------------------------------


def owned_pids(cfg: LabConfig, state: LabState | None) -> list[int]:
    """Processes provably the lab's: everything inside its named network namespaces, plus the host
    PID 1s recorded in its state file whose start time still matches (a netns whose name was
    deleted keeps running with its processes, but no other process can have that PID and start time)."""
    pids: set[int] = set()
    for h in HOSTS:
        pids.update(procs.pids_in_netns(net.NETNS_DIR / cfg.netns(h.name)))
    if state is not None:
        for p in state.hosts.values():
            if procs.alive(p.pid, p.start_ticks):
                pids.add(p.pid)
    return sorted(pids)


def kill_all(cfg: LabConfig, state: LabState | None, timeout: float = 15.0) -> int:
    """SIGKILL every process owned by the lab (PID 1s first: their namespaces die with them)."""
    pids = owned_pids(cfg, state)
    inits = [p for p in pids if len(procs.ns_pids(p)) == 2 and procs.ns_pids(p)[1] == 1]
    procs.kill_pids(inits)
    procs.kill_pids([p for p in pids if p not in inits])
    left = procs.wait_gone(pids, timeout)
    if left:
        raise HostBootError(f"lab processes still alive {timeout:.0f} s after SIGKILL: {left}")
    return len(pids)


def remove_cgroups(cfg: LabConfig) -> int:
    """Remove the cgroup dirs the hosts' dockerds made (left behind by killed containers). rmdir only:
    a cgroup that still has tasks refuses, which is what we want."""
    n = 0
    root = Path("/sys/fs/cgroup")
    for h in HOSTS:
        name = cfg.cgroup_parent(h.name)
        for top in [root / name, *root.glob(f"*/{name}")]:
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            try:
                top.rmdir()
                n += 1
            except OSError:
                pass
    return n
