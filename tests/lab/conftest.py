"""The lab, once per test session: brought up by the `lab` fixture, down (wiped) at the end.

Which lab comes from the environment so parallel developers never collide:
ETCD_DR_LAB_PREFIX, ETCD_DR_LAB_SUBNET, ETCD_DR_LAB_DIR (defaults: prefix `edrtest`, subnet
10.231.254.0/24, dir /tmp/etcd-dr/lab-<prefix>; not the `edr` lab a developer may have up)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcd_dr.inventory import RuntimeKind
from etcd_dr.lab import hosts, lifecycle
from etcd_dr.lab.config import LabConfig, LabState, default_lab_dir

TEST_PREFIX = "edrtest"
TEST_SUBNET = "10.231.254.0/24"


def _worker() -> int:
    """The pytest-xdist worker's number (gw0 -> 0; 0 without xdist): each worker's lab gets its own
    prefix and subnet (the next /24 down), so `pytest -n 2` runs two labs side by side."""
    w = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(w[2:]) if w.startswith("gw") and w[2:].isdigit() else 0


def lab_config(runtime: RuntimeKind = RuntimeKind.DOCKER) -> LabConfig:
    n = _worker()
    prefix = (os.environ.get("ETCD_DR_LAB_PREFIX") or TEST_PREFIX) + (str(n) if n else "")
    net = ipaddress.IPv4Network(os.environ.get("ETCD_DR_LAB_SUBNET") or TEST_SUBNET)
    subnet = (
        net
        if not n
        else ipaddress.IPv4Network((int(net.network_address) - n * net.num_addresses, net.prefixlen))
    )
    lab_dir = os.environ.get("ETCD_DR_LAB_DIR")
    return LabConfig(
        prefix=prefix,
        subnet=str(subnet),
        dir=Path(lab_dir + (f"-{n}" if n else "")) if lab_dir else default_lab_dir(prefix),
        runtime=runtime,
    )


@dataclass
class Lab:
    cfg: LabConfig
    etcdctl_bin: Path

    @property
    def state(self) -> LabState:
        return lifecycle.load_state(self.cfg)

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ETCD_DR_LAB_PREFIX": self.cfg.prefix,
            "ETCD_DR_LAB_SUBNET": self.cfg.subnet,
            "ETCD_DR_LAB_DIR": str(self.cfg.dir),
        }

    def etcd_dr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`etcd-dr ARGS` in a subprocess against this lab, as an operator would run it."""
        return subprocess.run(
            [sys.executable, "-m", "etcd_dr.cli", *args],
            env=self.cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`etcd-dr lab ARGS`."""
        return self.etcd_dr("lab", *args, timeout=timeout)

    def etcdctl_env(self) -> dict[str, str]:
        """The values `etcd-dr lab env` prints."""
        r = self.cli("env")
        assert r.returncode == 0, r.stderr
        env = dict(os.environ)
        for line in r.stdout.splitlines():
            if line.startswith("export ETCDCTL_"):
                k, v = line.removeprefix("export ").split("=", 1)
                env[k] = v
        return env

    def etcdctl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.etcdctl_bin), "--dial-timeout=1s", "--command-timeout=3s", *args],
            env=self.etcdctl_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces, mounts, veths)")
    cfg = lab_config()
    state = lifecycle.up(cfg, say=lambda m: print(m))
    yield Lab(cfg, Path(state.etcd_bindir or "/usr/bin") / "etcdctl")
    lifecycle.down(cfg, wipe=True, say=lambda m: print(m))


@pytest.fixture
def running_lab(lab: Lab) -> Lab:
    """The session's lab with every host up and etcd in containers: rebuilt if an earlier test took
    it down or left it on the process runtime."""
    try:
        state = lab.state
        fine = (
            state.config.runtime is RuntimeKind.DOCKER
            and state.config.learner_etcd is None  # other tests expect three voters and no learner
            and len(state.hosts) == 5
            and all(hosts.is_up(p) for p in state.hosts.values())
        )
    except Exception:
        fine = False
    if not fine:
        lifecycle.up(lab.cfg, say=print)
    return lab
