"""A real TLS etcd cluster as local processes on 127.0.0.1: for tests and benchmarks.

Ports come from 23000-23999 (free ones, checked by binding). Members run with fast timings (by
default heartbeat 100 ms, election 1000 ms; the trial restore's throwaway 1/5 ms, without fsync);
readiness is polled, never slept for (startup is bimodal: ~0.3 s or ~2.5 s). Only processes started
here are killed, by the PID they were started with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from etcd_dr.certs import CertKeyPair
from etcd_dr.etcd import EtcdClient, EtcdError
from etcd_dr.etcdbin import EtcdBinaries

T = TypeVar("T")

PORT_RANGE = (23000, 24000)
HEARTBEAT_MS = 100
ELECTION_MS = 1000
START_TIMEOUT_S = 20.0


def wait_for(what: str, fn: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call fn until it returns a truthy value without raising EtcdError; return that value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except EtcdError as e:
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:.1f} s (last: {last!r})")
        time.sleep(interval)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_next_port = [PORT_RANGE[0] + (os.getpid() % 40) * 20]


def free_ports(n: int) -> list[int]:
    """n free loopback ports in 23000-23999, never handed out twice by this process."""
    out: list[int] = []
    tried = 0
    while len(out) < n:
        p = _next_port[0]
        _next_port[0] = PORT_RANGE[0] + (p + 1 - PORT_RANGE[0]) % (PORT_RANGE[1] - PORT_RANGE[0])
        tried += 1
        if tried > PORT_RANGE[1] - PORT_RANGE[0]:
            raise RuntimeError("no free ports in 23000-23999")
        if _port_free(p):
            out.append(p)
    return out


@dataclass
class Node:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    bins: EtcdBinaries
    root: Path
    ca: CertKeyPair
    member_pair: CertKeyPair  # server+peer cert for 127.0.0.1 (all members share the address)
    client_pair: CertKeyPair
    nodes: list[Node] = field(default_factory=list)
    extra_nodes: list[Node] = field(default_factory=list)  # started later (learners)
    token: str = "etcd-dr-test"
    heartbeat_ms: int = HEARTBEAT_MS
    election_ms: int = ELECTION_MS
    durable: bool = True  # False: a throwaway's members run with their fsyncs as no-ops (nosync)

    # -- files and processes --

    def _write_certs(self) -> None:
        d = self.root / "pki"
        d.mkdir(parents=True, exist_ok=True)
        for name, data in (
            ("ca.pem", self.ca.cert_pem),
            ("member.pem", self.member_pair.cert_pem),
            ("member-key.pem", self.member_pair.key_pem),
        ):
            (d / name).write_bytes(data)
        os.chmod(d / "member-key.pem", 0o600)

    def new_node(self, name: str) -> Node:
        c, p = free_ports(2)
        # A fresh data dir per node, also when a name is reused: an old one holds an old identity.
        node = Node(name, c, p, self.root / f"{name}-{c}")
        return node

    def start(self, node: Node, initial_cluster: str, state: str) -> None:
        pki = self.root / "pki"
        args = [
            str(self.bins.etcd),
            f"--name={node.name}",
            f"--data-dir={node.data_dir}",
            f"--listen-client-urls={node.client_url}",
            f"--advertise-client-urls={node.client_url}",
            f"--listen-peer-urls={node.peer_url}",
            f"--initial-advertise-peer-urls={node.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            f"--cert-file={pki / 'member.pem'}",
            f"--key-file={pki / 'member-key.pem'}",
            f"--trusted-ca-file={pki / 'ca.pem'}",
            "--client-cert-auth",
            f"--peer-cert-file={pki / 'member.pem'}",
            f"--peer-key-file={pki / 'member-key.pem'}",
            f"--peer-trusted-ca-file={pki / 'ca.pem'}",
            "--peer-client-cert-auth",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if not self.durable:
            from etcd_dr.etcd.nosync import without_sync

            args = without_sync(args)  # the launcher execs etcd: node.proc.pid is etcd's
        log = open(self.root / f"{node.name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            node.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()

    def kill(self, node: Node) -> None:
        """SIGKILL the member, by the PID we started it with, and reap it."""
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)

    def restart(self, node: Node) -> None:
        self.kill(node)
        # The data dir has a member: initial-cluster flags are ignored, but must parse.
        self.start(node, f"{node.name}={node.peer_url}", "existing")

    def initial_cluster(self, nodes: list[Node]) -> str:
        return ",".join(f"{n.name}={n.peer_url}" for n in nodes)

    def log_tail(self, node: Node, lines: int = 15) -> str:
        p = self.root / f"{node.name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    # -- clients and health --

    @property
    def endpoints(self) -> list[str]:
        return [n.client_url for n in self.nodes]

    def client(self, endpoints: list[str] | None = None, **kw: float) -> EtcdClient:
        kw.setdefault("dial_timeout", 1.0)
        kw.setdefault("request_timeout", 3.0)
        return EtcdClient(
            endpoints or self.endpoints,
            ca_cert=self.ca.cert_pem,
            cert=self.client_pair.cert_pem,
            key=self.client_pair.key_pem,
            **kw,
        )

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Every member runs, answers Status, agrees on one leader, and a linearizable read works."""
        for n in self.nodes:
            if not n.running:
                raise RuntimeError(f"{n.name} is not running:\n{self.log_tail(n)}")
        with self.client(request_timeout=1.0, dial_timeout=0.5) as c:

            def healthy() -> bool:
                leaders = {c.status(ep, timeout=0.5).leader for ep in self.endpoints}
                if len(leaders) != 1 or 0 in leaders:
                    return False
                c.range("health", timeout=1.0)
                return True

            try:
                wait_for("cluster healthy", healthy, timeout)
            except TimeoutError:
                tails = "\n".join(f"--- {n.name}\n{self.log_tail(n)}" for n in self.nodes)
                raise TimeoutError(f"cluster not healthy within {timeout} s\n{tails}") from None

    def ensure_running(self) -> None:
        """Restart any member a test killed, then wait for health."""
        dead = [n for n in self.nodes if not n.running]
        for n in dead:
            self.restart(n)
        if dead:
            self.wait_healthy()

    def stop_all(self) -> None:
        for n in [*self.nodes, *self.extra_nodes]:
            self.kill(n)

    @classmethod
    def launch(
        cls,
        bins: EtcdBinaries,
        root: Path,
        ca: CertKeyPair,
        member_pair: CertKeyPair,
        client_pair: CertKeyPair,
        *,
        size: int = 3,
        timeout: float = START_TIMEOUT_S,
    ) -> LocalCluster:
        """Start `size` members m1..mN under root and wait until healthy (all killed on failure)."""
        cluster = cls(bins, root, ca, member_pair, client_pair)
        cluster._write_certs()
        cluster.nodes = [cluster.new_node(f"m{i}") for i in range(1, size + 1)]
        initial = cluster.initial_cluster(cluster.nodes)
        try:
            for n in cluster.nodes:
                cluster.start(n, initial, "new")
            cluster.wait_healthy(timeout)
        except BaseException:
            cluster.stop_all()
            raise
        return cluster
