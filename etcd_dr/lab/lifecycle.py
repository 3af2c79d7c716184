"""Bring the lab up and down, power hosts off and on, plug and unplug them, report its status.

`up` first removes whatever an earlier lab with the same prefix left (processes proven to be the
lab's, namespaces, veths, bridge, cgroups), so it is safe after a crash and rebuilds a lab that is up.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from etcd_dr.certs import CertKeyPair
from etcd_dr.errors import InputError
from etcd_dr.etcdbin import EtcdBinaries, ensure_binaries
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory, Role, RuntimeKind
from etcd_dr.lab import alerting, hosts, images, kube, members, net, standins
from etcd_dr.lab.config import (
    HOSTS,
    LEARNER_HOST,
    Build,
    HostSpec,
    LabConfig,
    LabState,
    incomplete,
)
from etcd_dr.lab.console import ConsoleExecutor
from etcd_dr.lab.inventory_file import DEPLOY_HOST, lab_inventory, write_inventory
from etcd_dr.runtime import DockerRuntime, InitialClusterState, MemberSpec, ProcessRuntime
from etcd_dr.stepctx import Say

SSH_PORT = 22


def require_root() -> None:
    if os.geteuid() != 0:
        raise InputError("the lab needs root (network namespaces, mounts, veths): run `etcd-dr lab` as root")


class _Clock:
    def __init__(self, say: Say) -> None:
        self.t0 = time.monotonic()
        self.say = say

    def __call__(self, msg: str) -> None:
        self.say(f"[{time.monotonic() - self.t0:6.2f}s] {msg}")


def load_state(cfg: LabConfig) -> LabState:
    return LabState.load(cfg.dir) or LabState(cfg)


def console(state: LabState, host: str) -> ConsoleExecutor:
    """The host's console; what it runs is recorded in the lab cluster's audit log like any command."""
    state.config.host(host)  # validates the name
    return ConsoleExecutor(host, state.hosts.get(host), audit=audit_log_for(inventory_of(state)))


def inventory_of(state: LabState) -> Inventory:
    return lab_inventory(
        state.config, image=state.image, binary=_host_binary(state), learner_runs=_learner_runs(state)
    )


def _binary_of(version: str | None) -> str:
    """Where the process runtime's etcd lives on the hosts: the system's 3.4, or an installed 3.5."""
    if version and not version.startswith("3.4"):
        return f"/opt/etcd-{version}/bin/etcd"
    return "/usr/bin/etcd"


def _host_binary(state: LabState) -> str:
    return _binary_of(state.etcd_version)


def _learner_runs(state: LabState) -> str | None:
    """What node1's learner runs (image or binary), when the lab has one."""
    v = state.learner_version
    if v is None:
        return None
    return f"{images.IMAGE_REPO}:{v}" if state.config.runtime == RuntimeKind.DOCKER else _binary_of(v)


def runtime(state: LabState, host: str) -> DockerRuntime | ProcessRuntime:
    ex = console(state, host)
    inv = inventory_of(state)
    h = inv.host(host)
    if state.config.runtime == RuntimeKind.DOCKER:
        return DockerRuntime(ex, "etcd", inv.etcd_image_for(h), docker=images.DOCKER)
    return ProcessRuntime(ex, inv.etcd_binary_for(h))


def clean(cfg: LabConfig, state: LabState | None, say: Say) -> None:
    """Remove what a lab with this prefix left: its processes (by PID, after proof), veths,
    namespaces, bridge and dockerd cgroups."""
    alerting.stop(cfg.dir / "alerting")  # its configs name the old lab's ports and files
    killed = hosts.kill_all(cfg, state)
    if note := net.down(cfg):
        say(note)
    cg = hosts.remove_cgroups(cfg)
    if killed or cg:
        say(f"cleaned a previous lab '{cfg.prefix}': {killed} processes killed, {cg} cgroup dirs removed")


def _wait_dockerd(ex: ConsoleExecutor, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while True:
        r = ex.run([images.DOCKER, "version", "--format", "{{.Server.Version}}"], check=False, timeout=10)
        if r.ok:
            return
        if time.monotonic() > end:
            raise hosts.HostBootError(
                f"{ex.host}: dockerd not up after {timeout:.0f} s: {r.stderr.strip()[-200:]}"
            )
        time.sleep(0.1)


def up(cfg: LabConfig, *, resume: bool = False, say: Say = print) -> LabState:
    """Build the lab (fresh disks) or, with resume, boot it again on the disks `down` kept (and
    finish a build that stopped before its learner joined)."""
    require_root()
    clock = _Clock(say)
    old = LabState.load(cfg.dir)
    if resume and old is None:
        raise InputError(f"no lab to resume in {cfg.dir}: run `etcd-dr lab up` without --resume")
    if resume and old is not None:
        cfg = old.config
        if old.build is Build.HOSTS:
            raise InputError(f"cannot resume: {incomplete(old)}")
    # Every refusal before the first change: cleaning removes the old lab's routes and installs a
    # guard, which must not happen for an `up` that is then refused.
    net.check_subnet_free(cfg, own_bridges={old.config.bridge} if old is not None else ())
    if old is not None and old.config != cfg and not resume:
        say(
            f"replacing the lab in {cfg.dir} "
            f"(was: {old.config.runtime}, etcd {old.config.etcd}, {old.config.subnet})"
        )
    clean(cfg, old, clock)
    if old is not None and (old.config.prefix, old.config.subnet) != (cfg.prefix, cfg.subnet):
        # the dir was reused with another prefix or subnet: that lab's names and routes differ
        clean(old.config, old, clock)
    if not resume:
        hosts.wipe(cfg)
    bins = ensure_binaries(cfg.etcd.value)
    clock(f"etcd {bins.version} binaries in {bins.bindir}")
    hosts.prepare(cfg)
    net.up(cfg)
    clock(f"network up: bridge {cfg.bridge} {cfg.gateway}, {len(HOSTS)} namespaces")
    learner_bins = ensure_binaries(cfg.learner_etcd.value) if cfg.learner_etcd else None
    state = LabState(
        cfg,
        image=images.image_tag(bins) if cfg.runtime == RuntimeKind.DOCKER else None,
        etcd_version=bins.version,
        etcd_bindir=str(bins.bindir),
        learner_version=learner_bins.version if learner_bins else None,
        build=old.build if resume and old is not None else Build.HOSTS,
    )
    for h in HOSTS:
        proc = hosts.boot(cfg, h.name)
        state = state.with_host(h.name, proc)
        state.save()  # at once: cleanup must be able to prove this PID is ours
        clock(f"{h.name} booted ({cfg.address(h.name)}, pid {proc.pid})")
    for h in HOSTS:
        if not hosts.wait_port(cfg.address(h.name), SSH_PORT, 10):
            raise hosts.HostBootError(f"{h.name}: sshd not reachable on {cfg.address(h.name)}:22")
    clock("sshd reachable on every host")
    exs = {h.name: console(state, h.name) for h in HOSTS}
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        list(pool.map(_wait_dockerd, exs.values()))
    clock("dockerd up on every host")
    certs: _Certs | None = None
    if not resume:
        certs = _provision(state, bins, exs, clock)
        standins.provision(exs, clock)  # the stand-ins' files live on the hosts' disks: once
        if learner_bins is not None:
            _provision_learner(state, learner_bins, exs, clock)
    inv = inventory_of(state)
    # voters only: `endpoint health` is a linearizable read, which a learner refuses
    waited = members.wait_healthy(bins.etcdctl, members.etcdctl_env(cfg, inv, hosts=inv.voters))
    clock(f"etcd healthy on {len(inv.voters)} voters ({waited:.2f} s after start)")
    write_inventory(cfg, image=state.image, binary=_host_binary(state), learner_runs=_learner_runs(state))
    if certs is not None:
        _as_rke_left_it(state, inv, certs, exs, clock)
    if state.build is not Build.COMPLETE:
        state = _saved(state, Build.VOTERS)
        if learner_bins is not None:
            _add_learner(state, clock)  # on resume too: learner add continues where it stopped
    return _saved(state, Build.COMPLETE)


def _saved(state: LabState, build: Build) -> LabState:
    """The state at this stage of the build, on disk at once: an interrupted `up` says how far it got."""
    state = replace(state, build=build)
    state.save()
    return state


def _provision_learner(
    state: LabState, bins: EtcdBinaries, exs: dict[str, ConsoleExecutor], clock: Say
) -> None:
    """What an operator would have before adding node1: the learner's etcd image or binary, on node1
    and on the voters too (after a recovery onto the learner, the masters rejoin running its etcd:
    an older etcd cannot join a newer cluster)."""
    cfg = state.config
    targets = [LEARNER_HOST, *(h for h in state.hosts if cfg.roles(h) & {Role.ETCD})]
    where = ", ".join(targets)
    if cfg.runtime == RuntimeKind.DOCKER:
        rootfs = images.build_rootfs(bins, cfg.images_dir / f"etcd-{bins.version}.tar")
        tag = images.image_tag(bins)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda h: images.load(exs[h], rootfs, tag, visible_on_host=True), targets))
        clock(f"image {tag} on {where}")
    elif not bins.version.startswith("3.4"):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda h: members.install_binaries(bins, exs[h]), targets))
        clock(f"etcd {bins.version} installed in /opt/etcd-{bins.version} on {where}")


def _add_learner(state: LabState, clock: Say) -> None:
    """node1 joins through the product's own learner add (SSH, the CA read from master1), not a
    lab shortcut; the inventory just written names it etcd-learner."""
    from etcd_dr.inventory import load_inventory
    from etcd_dr.learner import add_learner

    inv = load_inventory(state.config.inventory_path)
    res = add_learner(inv, LEARNER_HOST, say=lambda m: clock(f"learner: {m}"))
    if not res.ok:
        raise members.LabEtcdError(f"{LEARNER_HOST} did not join as a learner: {res.verdict}")
    clock(res.verdict)


@dataclass(frozen=True, repr=False)
class _Certs:
    """What `_provision` issued, for RKE's state file: kube-ca, the members' and the control plane's."""

    ca: CertKeyPair
    members: dict[str, CertKeyPair]
    kube: dict[str, CertKeyPair]


def _as_rke_left_it(
    state: LabState, inv: Inventory, certs: _Certs, exs: dict[str, ConsoleExecutor], clock: Say
) -> None:
    """Kubernetes' objects in etcd (counted), RKE's files here and on the deploy host with the
    stand-in rke, the stand-in kube-apiserver on each controlplane host (etcd_dr.lab.kube)."""
    from etcd_dr.state import client_for

    cfg = state.config
    with client_for(inv, [inv.client_url(h) for h in inv.voters]) as c:
        counts = kube.seed(c, cfg)
    kube.save_counts(cfg, counts)
    clock(f"{sum(counts.values())} Kubernetes objects under /registry ({len(counts)} resources)")
    files = kube.write_rke_files(cfg, certs.ca, certs.members, certs.kube)
    with ThreadPoolExecutor(2) as pool:
        done = [
            pool.submit(kube.install_deploy_host, exs[DEPLOY_HOST], files),
            pool.submit(kube.start_apiservers, cfg, exs),
        ]
        for f in done:
            f.result()
    clock(f"RKE's files in {cfg.dir} and {DEPLOY_HOST}:{kube.REMOTE_DIR}; stand-in kube-apiserver started")


def _provision(state: LabState, bins: EtcdBinaries, exs: dict[str, ConsoleExecutor], clock: Say) -> _Certs:
    cfg = state.config
    if cfg.runtime == RuntimeKind.DOCKER:
        rootfs = images.build_rootfs(bins, cfg.images_dir / f"etcd-{bins.version}.tar")
        clock(f"image rootfs {rootfs} ({rootfs.stat().st_size / 1e6:.0f} MB)")
        tag = images.image_tag(bins)
        # every host gets it: node1 becomes a learner later
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda ex: images.load(ex, rootfs, tag, visible_on_host=True), exs.values()))
        clock(f"image {tag} loaded on every host")
    elif not bins.version.startswith("3.4"):
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda ex: members.install_binaries(bins, ex), exs.values()))
        clock(f"etcd {bins.version} installed in /opt/etcd-{bins.version} on every host")
    ca = members.make_certs(cfg)
    kube_certs = kube.kube_certs(cfg, ca)

    def install(h: HostSpec) -> CertKeyPair | None:
        # node1's learner certificate is issued by `learner add` itself (with the key on the masters)
        pair = members.install_host_certs(
            cfg, ca, h.name, exs[h.name], member=h.runs_etcd, ca_key=Role.CONTROLPLANE in h.roles
        )
        kube.install_kube_certs(exs[h.name], kube_certs, controlplane=Role.CONTROLPLANE in h.roles)
        return pair

    with ThreadPoolExecutor(len(HOSTS)) as pool:  # one host's files after another cost ~1 s more
        pairs = dict(zip((h.name for h in HOSTS), pool.map(install, HOSTS), strict=True))
    member_certs = {
        f"kube-etcd-{cfg.address(name).replace('.', '-')}": p for name, p in pairs.items() if p is not None
    }
    clock("kube-ca, member and control plane certificates installed")
    inv = inventory_of(state)
    voters = inv.voters
    for host in voters:
        rt = runtime(state, host.name)
        spec = MemberSpec.for_host(
            inv, host, voters, state=InitialClusterState.NEW, data_dir=rt.data_dir_for(inv.etcd.data_dir)
        )
        rt.start(spec)
    clock(f"etcd started on {', '.join(h.name for h in voters)} ({cfg.runtime})")
    return _Certs(ca, member_certs, kube_certs)


def down(cfg: LabConfig, *, wipe: bool = False, say: Say = print) -> None:
    """Power every host off (SIGKILL of each PID 1), remove the network and cgroups. Disks stay
    unless wipe (then keys, certs, inventory and state go too)."""
    require_root()
    clock = _Clock(say)
    state = LabState.load(cfg.dir)
    if stopped := alerting.stop(cfg.dir / "alerting"):
        clock(f"alerting stopped (PIDs {', '.join(map(str, stopped))})")
    n = hosts.kill_all(cfg, state)
    if note := net.down(cfg):
        clock(note)
    hosts.remove_cgroups(cfg)
    if wipe:
        hosts.wipe(cfg)
        clock(f"lab '{cfg.prefix}' down ({n} processes killed), disks and keys wiped")
    else:
        if state is not None:
            replace(state, hosts={}).save()
        clock(f"lab '{cfg.prefix}' down ({n} processes killed), disks kept in {cfg.dir / 'hosts'}")


running_lab = net.running_lab


def _require_lab(cfg: LabConfig) -> LabState:
    state = LabState.load(cfg.dir)
    if state is None or not net.link_exists(cfg.bridge):
        raise InputError(f"no lab '{cfg.prefix}' is up (state {cfg.state_path}): run `etcd-dr lab up`")
    return state


def power_off(cfg: LabConfig, host: str, say: Say = print) -> LabState:
    """Power loss: cable out, then SIGKILL of the host's PID 1 (all its processes die at once)."""
    require_root()
    cfg.host(host)
    state = _require_lab(cfg)
    t0 = time.monotonic()
    net.set_link(cfg, host, up=False)
    hosts.power_off(state.hosts.get(host))
    state = state.with_host(host, None)
    state.save()
    say(f"{host} powered off ({time.monotonic() - t0:.2f} s)")
    return state


def power_on(cfg: LabConfig, host: str, say: Say = print) -> LabState:
    """Boot the host on its disk, plug it in, wait for sshd."""
    require_root()
    cfg.host(host)
    state = _require_lab(cfg)
    if hosts.is_up(state.hosts.get(host)):
        say(f"{host} is already on")
        return state
    t0 = time.monotonic()
    proc = hosts.boot(cfg, host)
    state = state.with_host(host, proc)
    state.save()
    net.set_link(cfg, host, up=True)
    if not hosts.wait_port(cfg.address(host), SSH_PORT, 10):
        raise hosts.HostBootError(f"{host}: sshd not reachable after power on")
    say(f"{host} powered on (pid {proc.pid}, sshd up in {time.monotonic() - t0:.2f} s)")
    return state


def set_plugged(cfg: LabConfig, host: str, plugged: bool, say: Say = print) -> None:
    require_root()
    cfg.host(host)
    _require_lab(cfg)
    net.set_link(cfg, host, up=plugged)
    say(f"{host} {'plugged in' if plugged else 'unplugged'}")


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    power: bool
    pid: int | None
    link: bool | None
    etcd: bool | None  # None: the host is off or runs no member


def status(cfg: LabConfig) -> list[HostStatus]:
    state = LabState.load(cfg.dir) or LabState(cfg)
    out = []
    for h in HOSTS:
        proc = state.hosts.get(h.name)
        on = hosts.is_up(proc)
        etcd = None
        if on and (h.runs_etcd or Role.ETCD_LEARNER in cfg.roles(h.name)):
            try:
                etcd = runtime(state, h.name).is_running()
            except Exception:  # a status line must not fail on one host
                etcd = None
        out.append(
            HostStatus(
                h.name,
                cfg.address(h.name),
                on,
                proc.pid if on and proc else None,
                net.link_is_up(cfg, h.name),
                etcd,
            )
        )
    return out


def ssh_argv(cfg: LabConfig, host: str, command: list[str], *, tty: bool = False) -> list[str]:
    """The system ssh client with strict host-key checking against the lab's known_hosts."""
    return [
        "ssh", "-i", str(hosts.client_key(cfg)),
        "-o", f"UserKnownHostsFile={hosts.known_hosts(cfg)}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR",
        *(["-t"] if tty else []),
        f"root@{cfg.address(host)}", *command,
    ]  # fmt: skip


def env_lines(cfg: LabConfig) -> list[str]:
    """Shell exports so the machine's etcdctl talks to the lab (mTLS with etcd-dr's client cert)."""
    state = load_state(cfg)
    inv = inventory_of(state)
    # voters only: a learner refuses etcdctl's writes and linearizable reads (`rpc not supported
    # for learner`), and etcdctl may pick any endpoint of the list
    e = members.etcdctl_env(cfg, inv, inv.voters)
    lines = [f"export {k}={v}" for k, v in e.items()]
    if state.etcd_bindir and Path(state.etcd_bindir) != Path("/usr/bin"):
        lines.append(f"export PATH={state.etcd_bindir}:$PATH  # etcdctl {state.etcd_version}")
    return lines
