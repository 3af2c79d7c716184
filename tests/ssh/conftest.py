"""A real sshd for executor tests: root, 127.0.0.1, a free port in 24000-24999, its own host key and
authorized client key in a tmp dir. Plus a network namespace `eb-ssh` (veth veb0/veb1,
10.231.2.0/24) for hosts that drop packets or lose power. Only processes started here are stopped,
by PID; the namespace and veth are removed after (and before, if a killed run left them)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcd_dr.inventory import Host, Role, SshSettings

SSHD = "/usr/sbin/sshd"
NS, VETH_ROOT, VETH_NS = "eb-ssh", "veb0", "veb1"
NET = "10.231.2"
ROOT_IP, NS_IP, DROP_IP = f"{NET}.1", f"{NET}.2", f"{NET}.99"

pytestmark = pytest.mark.ssh


def _require_root() -> None:
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        pytest.skip("needs root and /usr/sbin/sshd")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )


def _free_port() -> int:
    ports = list(range(24000, 25000))
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 24000-24999")


def _wait_port(addr: str, port: int, timeout: float, netns: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netns is None:
            try:
                socket.create_connection((addr, port), timeout=0.5).close()
                return
            except OSError:
                pass
        else:
            probe = ["ip", "netns", "exec", netns, "bash", "-c", f"exec 3<>/dev/tcp/{addr}/{port}"]
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {addr}:{port} did not come up in {timeout} s")


@dataclass
class Sshd:
    dir: Path
    address: str
    port: int
    host_pub: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen

    def host(self, name: str = "h1", **kw) -> Host:
        return Host(name=name, address=self.address, roles=frozenset({Role.ETCD}), port=self.port, **kw)

    def settings(self, known_hosts: Path | None = None, **kw) -> SshSettings:
        kw.setdefault("connect_timeout", 2.0)
        kw.setdefault("command_timeout", 10.0)
        kw.setdefault("key_file", self.client_key)
        return SshSettings(known_hosts=known_hosts or self.known_hosts, port=self.port, **kw)

    def known_hosts_line(self, pub: str | None = None) -> str:
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{name} {pub or self.host_pub}\n"


def _start_sshd(d: Path, address: str, port: int, client_pub: Path, netns: str | None = None) -> Sshd:
    d.mkdir(parents=True, exist_ok=True)
    hostkey = d / "ssh_host_ed25519_key"
    _keygen(hostkey, f"host-{address}")
    shutil.copy(client_pub, d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress {address}
HostKey {hostkey}
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 100:30:200
# root's .bashrc here runs pyenv init (+250 ms per command: bash sources it for sshd sessions while
# SHLVL < 2). Not what is measured: start sessions at SHLVL=1.
SetEnv SHLVL=1
Subsystem sftp /usr/lib/openssh/sftp-server
"""
    )
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation dir (Debian's unit creates it)
    cmd = [SSHD, "-D", "-e", "-f", str(d / "sshd_config")]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]  # execs sshd: the PID is sshd's
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(address, port, 5, netns)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise RuntimeError((d / "sshd.log").read_text()) from None
    host_pub = " ".join(Path(f"{hostkey}.pub").read_text().split()[:2])
    client_key = client_pub.with_suffix("")
    kh = d / "known_hosts"
    s = Sshd(d, address, port, host_pub, client_key, kh, proc)
    kh.write_text(s.known_hosts_line())
    return s


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # by PID: only the sshd this fixture started
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    _require_root()
    d = tmp_path_factory.mktemp("client")
    key = d / "id_ed25519"
    _keygen(key, "etcd-dr-test-client")
    return key


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, client_key) -> Sshd:
    _require_root()
    for _ in range(3):  # another process may take the port between the probe and sshd's bind
        try:
            s = _start_sshd(
                tmp_path_factory.mktemp("sshd"), "127.0.0.1", _free_port(), client_key.with_suffix(".pub")
            )
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError("could not start sshd")
    yield s
    _stop(s.proc)


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def _netns_down() -> None:
    _ip("netns", "del", NS, check=False)
    _ip("link", "del", VETH_ROOT, check=False)


@dataclass(frozen=True)
class Netns:
    name: str = NS
    drop_ip: str = DROP_IP  # SYNs to it vanish

    def unplug(self) -> None:
        """Power loss as the network sees it: the host's link goes down."""
        _ip("-n", NS, "link", "set", VETH_NS, "down")

    def plug(self) -> None:
        """Power back on, returning once the host's sshd answers: a SYN sent while the link is
        coming up (its ARP unanswered) is sent again only after 1 s, the executor's connect timeout
        in these tests (one quick-loop run on 6 workers: `no answer in 1 s` right after plug)."""
        _ip("-n", NS, "link", "set", VETH_NS, "up")
        _wait_port(NS_IP, 22, 10)


@pytest.fixture(scope="session")
def netns():
    """Namespace eb-ssh: veb1 (10.231.2.2) inside, veb0 (10.231.2.1) in the root namespace.
    10.231.2.99 answers nothing: a permanent neighbour entry sends its frames to veb1, whose kernel
    does not own the address and does not forward, so SYNs vanish without an ICMP (a dead host,
    not a refusing one)."""
    _require_root()
    if not shutil.which("ip"):
        pytest.skip("needs iproute2")
    _netns_down()  # left over by a killed run
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", VETH_ROOT, "type", "veth", "peer", "name", VETH_NS, "netns", NS)
        _ip("addr", "add", f"{ROOT_IP}/24", "dev", VETH_ROOT)
        _ip("link", "set", VETH_ROOT, "up")
        _ip("-n", NS, "addr", "add", f"{NS_IP}/24", "dev", VETH_NS)
        _ip("-n", NS, "link", "set", VETH_NS, "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        mac = subprocess.run(
            ["ip", "-n", NS, "-br", "link", "show", VETH_NS], check=True, capture_output=True, text=True
        ).stdout.split()[2]
        _ip("neigh", "replace", DROP_IP, "lladdr", mac, "dev", VETH_ROOT, "nud", "permanent")
        yield Netns()
    finally:
        _netns_down()


@pytest.fixture(scope="session")
def ns_sshd(tmp_path_factory, client_key, netns) -> Sshd:
    """An sshd inside eb-ssh at 10.231.2.2:22: a host that can lose power (link down)."""
    s = _start_sshd(tmp_path_factory.mktemp("ns-sshd"), NS_IP, 22, client_key.with_suffix(".pub"), netns.name)
    yield s
    _stop(s.proc)
