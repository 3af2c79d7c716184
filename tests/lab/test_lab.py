"""The lab for real: hosts, sshd, dockerd, etcd over mTLS, power loss. Needs root; one lab is shared
by the tests in this file, in file order (the last ones rebuild it). Those that need it running take
`running_lab`, rebuilt if a file before this one left a host powered off (one run with the files in
another order found master1 off and etcd without quorum here)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from etcd_dr.errors import TransportError
from etcd_dr.inventory import RuntimeKind
from etcd_dr.lab import hosts, lifecycle, net, procs
from etcd_dr.lab.config import HOSTS
from etcd_dr.runtime import DockerRuntime, ProcessRuntime

from .conftest import Lab, lab_config

pytestmark = pytest.mark.lab

MASTERS = ("master1", "master2", "master3")


def _port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_healthy(lab: Lab, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = lab.etcdctl("endpoint", "health")
        if r.returncode == 0:
            return time.monotonic() - t0
        time.sleep(0.2)
    pytest.fail(f"cluster not healthy after {timeout} s: {r.stderr.strip()[-300:]}")


def _assert_three_voters_tls(lab: Lab) -> None:
    r = lab.etcdctl("endpoint", "health")
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).count("is healthy") == 3
    r = lab.etcdctl("member", "list", "-w", "json")
    assert r.returncode == 0, r.stderr
    ms = json.loads(r.stdout)["members"]
    assert sorted(m["name"] for m in ms) == [f"etcd-{h}" for h in MASTERS]
    assert not any(m.get("isLearner") for m in ms)
    cfg = lab.cfg
    for m in ms:
        host = m["name"].removeprefix("etcd-")
        assert m["peerURLs"] == [f"https://{cfg.address(host)}:2380"]
        assert m["clientURLs"] == [f"https://{cfg.address(host)}:2379"]


def test_up_gives_three_healthy_voters_over_mtls(running_lab: Lab) -> None:
    lab = running_lab
    _assert_three_voters_tls(lab)
    # client-cert-auth: the CA alone is not enough
    env = lab.etcdctl_env()
    env.pop("ETCDCTL_CERT")
    env.pop("ETCDCTL_KEY")
    r = subprocess.run(
        [str(lab.etcdctl_bin), "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert r.returncode != 0
    assert lab.cfg.inventory_path.exists()
    text = lab.cfg.inventory_path.read_text()
    assert "rehearsal: true" in text and "runtime: docker" in text


def test_master1_runs_etcd_the_rke_way(running_lab: Lab) -> None:
    lab = running_lab
    state = lab.state
    ex = lifecycle.console(state, "master1")
    r = ex.run(
        ["docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.NetworkMode}}", "etcd"]
    )
    assert r.stdout.split() == ["always", "host"]
    args = DockerRuntime(ex, "etcd", state.image).args()
    assert "" not in args
    ip = lab.cfg.address("master1")
    for flag in (
        "--client-cert-auth",
        "--peer-client-cert-auth",
        "--heartbeat-interval=500",
        "--election-timeout=5000",
        "--initial-cluster-token=etcd-cluster-1",
        "--trusted-ca-file=/etc/kubernetes/ssl/kube-ca.pem",
        f"--cert-file=/etc/kubernetes/ssl/kube-etcd-{ip.replace('.', '-')}.pem",
        f"--key-file=/etc/kubernetes/ssl/kube-etcd-{ip.replace('.', '-')}-key.pem",
        f"--listen-client-urls=https://{ip}:2379,https://127.0.0.1:2379",
    ):
        assert flag in args
    # the certificates are at RKE's paths on the host, the member key not world-readable
    ls = ex.run(["stat", "-c", "%n %a", f"/etc/kubernetes/ssl/kube-etcd-{ip.replace('.', '-')}-key.pem"])
    assert ls.stdout.split()[1] == "600"
    # the shared kernel clock and the machine are out of reach: no CAP_SYS_TIME/SYS_BOOT/SYS_MODULE
    # in the host's bounding set (read, not tried: a regression must not set the machine's clock)
    status = ex.run(["grep", "^CapBnd:", "/proc/1/status"]).stdout.split()[1]
    for cap in (25, 22, 16):  # CAP_SYS_TIME, CAP_SYS_BOOT, CAP_SYS_MODULE
        assert not int(status, 16) & (1 << cap)


def test_ssh_with_strict_host_keys(running_lab: Lab) -> None:
    lab = running_lab
    r = lab.cli("ssh", "master2", "--", "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "master2"
    # a known_hosts without master2's key is refused, not trusted on first use
    kh = hosts.known_hosts(lab.cfg)
    saved = kh.read_text()
    try:
        kh.write_text("".join(line for line in saved.splitlines(True) if "master2" not in line))
        r = lab.cli("ssh", "master2", "--", "true")
        assert r.returncode == 1 and "master2" in r.stderr
    finally:
        kh.write_text(saved)


def test_power_cycle_master1(running_lab: Lab) -> None:
    lab = running_lab
    cfg = lab.cfg
    ip = cfg.address("master1")
    pid1 = lab.state.hosts["master1"].pid
    r = lab.cli("power", "master1", "off")
    assert r.returncode == 0, r.stderr
    assert not _port_open(ip, 2379) and not _port_open(ip, 22)
    assert not procs.alive(pid1)
    assert procs.pids_in_netns(net.NETNS_DIR / cfg.netns("master1")) == []
    with pytest.raises(TransportError, match="powered off"):
        lifecycle.console(lab.state, "master1").run(["true"])
    # two of three voters keep quorum
    env = lab.etcdctl_env()
    env["ETCDCTL_ENDPOINTS"] = ",".join(f"https://{cfg.address(h)}:2379" for h in ("master2", "master3"))
    # (if master1 led, the others elect a new leader first: 5-10 s with RKE's election timeout)
    end = time.monotonic() + 30
    while True:
        ok = subprocess.run(
            [str(lab.etcdctl_bin), "--command-timeout=3s", "put", "k", "v"],
            env=env,
            capture_output=True,
            check=False,
        )
        if ok.returncode == 0 or time.monotonic() > end:
            break
    assert ok.returncode == 0, ok.stderr
    t0 = time.monotonic()
    r = lab.cli("power", "master1", "on")
    assert r.returncode == 0, r.stderr
    # nobody starts etcd: dockerd's restart=always does
    waited = _wait_healthy(lab)
    print(f"power on -> healthy in {time.monotonic() - t0:.2f} s ({waited:.2f} s after sshd)")
    _assert_three_voters_tls(lab)


def test_unplug_and_plug(running_lab: Lab) -> None:
    lab = running_lab
    ip = lab.cfg.address("master3")
    assert lab.cli("unplug", "master3").returncode == 0
    assert not _port_open(ip, 22, timeout=0.5)
    assert lifecycle.console(lab.state, "master3").run(["true"]).ok  # the console needs no network
    assert lab.cli("plug", "master3").returncode == 0
    assert hosts.wait_port(ip, 22, 5)
    _wait_healthy(lab)


def test_up_again_over_a_half_torn_lab(running_lab: Lab) -> None:
    lab = running_lab
    cfg = lab.cfg
    state = lab.state
    # an aborted lab: some hosts' PID 1s killed by PID, a namespace name dropped with its host still running
    procs.kill_pids([state.hosts["master1"].pid, state.hosts["node2"].pid], signal.SIGKILL)
    net.ip("netns", "del", cfg.netns("node1"))
    t0 = time.monotonic()
    new = lifecycle.up(cfg, say=print)
    print(f"lab up over a half-torn lab: {time.monotonic() - t0:.1f} s")
    assert not procs.alive(state.hosts["node1"].pid, state.hosts["node1"].start_ticks)
    assert all(hosts.is_up(new.hosts[h.name]) for h in HOSTS)
    _assert_three_voters_tls(lab)


def test_process_runtime_survives_a_power_cycle(lab: Lab) -> None:
    cfg = lab_config(RuntimeKind.PROCESS)
    t0 = time.monotonic()
    state = lifecycle.up(cfg, say=print)
    print(f"lab up --runtime process: {time.monotonic() - t0:.1f} s")
    _assert_three_voters_tls(lab)
    rt = lifecycle.runtime(state, "master2")
    assert isinstance(rt, ProcessRuntime)
    pid = rt.pid()
    assert pid is not None and "--client-cert-auth" in rt.args()
    assert lab.cli("power", "master2", "off").returncode == 0
    assert not _port_open(cfg.address("master2"), 2379)
    assert lab.cli("power", "master2", "on").returncode == 0
    _wait_healthy(lab)  # the host's init started the enabled unit at boot
    assert lifecycle.runtime(lab.state, "master2").is_running()
    _assert_three_voters_tls(lab)


def test_down_leaves_nothing_running(lab: Lab) -> None:
    cfg = lab.cfg
    state = lab.state
    lifecycle.down(cfg, say=print)
    assert not net.link_exists(cfg.bridge)
    assert not any(net.netns_exists(cfg.netns(h.name)) for h in HOSTS)
    # with the bridge gone, lab addresses must not follow the default route off the machine
    routes = net.ip("route", "show", "type", "unreachable").stdout
    assert str(cfg.network) in routes
    with pytest.raises(OSError) as e:
        socket.create_connection((cfg.address("master1"), 2379), timeout=2)
    assert e.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)  # refused here, at once
    assert not any(procs.alive(p.pid, p.start_ticks) for p in state.hosts.values())
    assert (cfg.dir / "hosts" / "master1" / "ovl").is_dir()  # disks kept without --wipe
    assert os.path.exists(cfg.state_path)
    r = lab.cli("status")
    assert r.returncode == 1 and "off" in r.stdout
