"""How an etcd member runs on its host: as RKE's Docker container (`DockerRuntime`) or as a plain
process (`ProcessRuntime`). Both work over an Executor, start a member from a `MemberSpec`, and read
back the arguments the member really runs with (the source of truth for rebuilding it).

    spec = MemberSpec.for_host(inv, host, inv.voters, data_dir=rt.data_dir_for(inv.etcd.data_dir))
    rt = runtime_for(inv, executor)
    rt.start(spec)             # docker run ... --restart=always | a unit started now and at boot
    old = rt.rename("etcd-old-20260101T000000")   # keep the old member, free the name
    old.set_restart(False)     # NOTES: a renamed container keeps --restart=always and returns at boot

Principle: never remove what cannot be rebuilt, so there is no remove() here: rename instead.
"""

from __future__ import annotations

import enum
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from etcd_dr.errors import CommandError, EtcdDrError, InputError
from etcd_dr.executor import Executor
from etcd_dr.inventory import Host, Inventory, RuntimeKind
from etcd_dr.plans import Params
from etcd_dr.stepctx import HostFS


class RuntimeStateError(EtcdDrError):
    """The member is not in the state the operation needs (e.g. start while running)."""


@dataclass(frozen=True)
class MemberStatus:
    """What one look at a member shows (one `docker inspect`, or one script for a unit): enough
    for a step's checks in one round trip."""

    name: str
    exists: bool
    running: bool = False
    restarts: bool = False  # comes back by itself (a restart policy but "no"; an enabled unit)
    args: tuple[str, ...] = ()  # etcd's arguments (empty when it does not exist)
    # docker: the whole `docker inspect` it was read from, so a start from it needs no second look
    inspected: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


class InitialClusterState(enum.StrEnum):
    NEW = "new"  # bootstrapping a cluster
    EXISTING = "existing"  # joining one (learner add, replacement)


def runtime_params(inv: Inventory, host: Host) -> dict[str, object]:
    """How the member on host runs, as plain data for a plan step's params (faults and recovery
    plans carry it; their handlers rebuild the runtime from it)."""
    e = inv.etcd
    return {
        "runtime": str(e.runtime),
        "name": e.container if e.runtime is RuntimeKind.DOCKER else "etcd",  # container or unit
        "image": e.image,
        "binary": e.binary,
        "data_dir": e.data_dir,
        "endpoint": inv.client_url(host),
    }


@dataclass(frozen=True)
class MemberParams(Params):
    """How the member on a step's host runs (runtime_params), as every step of every plan kind that
    touches the member carries it; its handler rebuilds the runtime from it."""

    runtime: str
    name: str  # container or unit
    image: str | None
    binary: str
    data_dir: str
    endpoint: str

    @staticmethod
    def fields_of(inv: Inventory, host: Host) -> dict[str, str | None]:
        """runtime_params(inv, host) as this class's fields (for `XParams(**fields_of(...), ...)`)."""
        return {k: None if v is None else str(v) for k, v in runtime_params(inv, host).items()}


def member_name(host: Host) -> str:
    """RKE names each member etcd-<node name>."""
    return f"etcd-{host.name}"


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True)
class MemberSpec:
    """One member's configuration: what `etcd_flags` turns into etcd's command line. Paths are as
    etcd sees them (inside the container for Docker: see `DockerRuntime.data_dir_for`)."""

    name: str
    address: str
    data_dir: str
    initial_cluster: tuple[tuple[str, str], ...]  # (member name, peer URL), this member included
    ca: str
    cert: str
    key: str
    initial_cluster_state: InitialClusterState = InitialClusterState.NEW
    token: str = "etcd-cluster-1"  # RKE's
    client_port: int = 2379
    peer_port: int = 2380
    heartbeat_interval: int = 500  # ms, RKE's
    election_timeout: int = 5000  # ms, RKE's
    listen_localhost: bool = True  # clients also on 127.0.0.1 (RKE's health checks use it)
    extra_flags: tuple[str, ...] = ()

    @property
    def client_url(self) -> str:
        return f"https://{_url_host(self.address)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{_url_host(self.address)}:{self.peer_port}"

    @classmethod
    def for_host(
        cls,
        inv: Inventory,
        host: Host,
        members: Sequence[Host],
        *,
        state: InitialClusterState = InitialClusterState.NEW,
        data_dir: str | None = None,
        extra_flags: Sequence[str] = (),
    ) -> MemberSpec:
        """The spec of host's member in a cluster of `members` (host included), from the inventory."""
        if host not in members:
            members = (*members, host)
        e = inv.etcd
        return cls(
            name=member_name(host),
            address=host.address,
            data_dir=data_dir or e.data_dir,
            initial_cluster=tuple((member_name(m), inv.peer_url(m)) for m in members),
            ca=e.ca_path(),
            cert=e.cert_path(host),
            key=e.key_path(host),
            initial_cluster_state=state,
            client_port=e.client_port,
            peer_port=e.peer_port,
            heartbeat_interval=e.heartbeat_interval,
            election_timeout=e.election_timeout,
            extra_flags=tuple(extra_flags),
        )


def etcd_flags(spec: MemberSpec) -> list[str]:
    """etcd's command line for spec (without the binary), in RKE's `--flag=value` form, mTLS on
    both the client and the peer side with the cluster CA as the only trusted one."""
    if not spec.initial_cluster:
        raise InputError(f"member {spec.name}: initial_cluster is empty")
    if spec.name not in {n for n, _ in spec.initial_cluster}:
        raise InputError(f"member {spec.name} is not in its own initial cluster")
    listen_client = spec.client_url
    if spec.listen_localhost:
        listen_client += f",https://127.0.0.1:{spec.client_port}"
    return [
        f"--name={spec.name}",
        f"--data-dir={spec.data_dir}",
        f"--listen-client-urls={listen_client}",
        f"--advertise-client-urls={spec.client_url}",
        f"--listen-peer-urls={spec.peer_url}",
        f"--initial-advertise-peer-urls={spec.peer_url}",
        "--initial-cluster=" + ",".join(f"{n}={u}" for n, u in spec.initial_cluster),
        f"--initial-cluster-state={spec.initial_cluster_state.value}",
        f"--initial-cluster-token={spec.token}",
        f"--heartbeat-interval={spec.heartbeat_interval}",
        f"--election-timeout={spec.election_timeout}",
        "--client-cert-auth",
        f"--trusted-ca-file={spec.ca}",
        f"--cert-file={spec.cert}",
        f"--key-file={spec.key}",
        "--peer-client-cert-auth",
        f"--peer-trusted-ca-file={spec.ca}",
        f"--peer-cert-file={spec.cert}",
        f"--peer-key-file={spec.key}",
        "--logger=zap",  # 3.4 warns about the old logger otherwise; the default on 3.5
        *spec.extra_flags,
    ]


class MemberRuntime(Protocol):
    kind: RuntimeKind

    def start(self, spec: MemberSpec, *, restart_always: bool = True) -> None: ...
    def restart(self) -> None: ...
    def stop(self, timeout: float = 10.0) -> bool:
        """TERM, then KILL once timeout passed; True when it exited by itself within the timeout."""
        ...

    def kill(self) -> None: ...
    def exists(self) -> bool: ...
    def is_running(self) -> bool: ...
    def args(self) -> list[str]: ...
    def rename(self, new_name: str) -> MemberRuntime: ...
    def set_restart(self, always: bool) -> None: ...
    def restarts(self) -> bool: ...
    def start_like(
        self, template: str, args: Sequence[str], *, restart_always: bool, seen: MemberStatus | None = None
    ) -> None: ...
    def data_dir_for(self, host_path: str) -> str: ...
    def host_path(self, runtime_path: str) -> str: ...
    def logs(self, tail: int = 50) -> str: ...
    def log_sh(self, *, follow: bool) -> str:
        """A shell command printing the member's log (stdout and stderr) to stdout: its recent past
        (docker: since "$since", epoch seconds, set by the caller's script), or from now on, following."""
        ...


# RKE's etcd container mounts: the data dir and the certificates.
RKE_BINDS: tuple[tuple[str, str], ...] = (
    ("/var/lib/etcd", "/var/lib/rancher/etcd"),
    ("/etc/kubernetes", "/etc/kubernetes"),
)


def _map_path(path: str, binds: Sequence[tuple[str, str]], reverse: bool) -> str:
    for host_dir, ctr_dir in binds:
        src, dst = (ctr_dir, host_dir) if reverse else (host_dir, ctr_dir)
        src = src.rstrip("/")
        if path.rstrip("/") == src or path.startswith(src + "/"):
            return dst.rstrip("/") + path.rstrip("/")[len(src) :]
    return path


class DockerRuntime:
    """An etcd member as RKE runs it: container `etcd`, --network=host, --restart=always."""

    kind = RuntimeKind.DOCKER

    def __init__(
        self,
        executor: Executor,
        container: str = "etcd",
        image: str | None = None,
        *,
        docker: str = "docker",
        binds: Sequence[tuple[str, str]] = RKE_BINDS,
    ) -> None:
        self.ex = executor
        self.container = container
        self.image = image
        self.docker = docker
        self.binds = tuple(binds)

    def _docker(self, *args: str, check: bool = True, timeout: float | None = None, reason: str = ""):
        return self.ex.run([self.docker, *args], check=check, timeout=timeout, reason=reason)

    def data_dir_for(self, host_path: str) -> str:
        return _map_path(host_path, self.binds, reverse=False)

    def host_path(self, runtime_path: str) -> str:
        return _map_path(runtime_path, self.binds, reverse=True)

    def start(self, spec: MemberSpec, *, restart_always: bool = True) -> None:
        if not self.image:
            raise InputError(
                f"container {self.container}: no image to start etcd from (inventory etcd.image)"
            )
        argv = ["run", "-d", "--name", self.container, "--network=host"]
        argv.append("--restart=always" if restart_always else "--restart=no")
        for host_dir, ctr_dir in self.binds:
            argv += ["-v", f"{host_dir}:{ctr_dir}"]
        argv += [self.image, *etcd_flags(spec)]
        self._docker(*argv, timeout=120, reason=f"start etcd member {spec.name}")

    def restart(self) -> None:
        """Start the existing (stopped) container again, with the arguments it was created with."""
        self._docker("start", self.container, reason="start etcd container")

    def stop(self, timeout: float = 10.0) -> bool:
        # NOTES: a leader whose peers are gone stalls the whole timeout (leadership transfer)
        self._docker(
            "stop", "-t", str(int(timeout)), self.container, timeout=timeout + 30, reason="stop etcd"
        )
        # docker stop sends KILL after the timeout: the container then exits 137 (128 + SIGKILL)
        return (self._inspect("{{.State.ExitCode}}") or "").strip() != "137"

    def kill(self) -> None:
        r = self._docker("kill", self.container, check=False, reason="kill etcd")
        if not r.ok and "is not running" not in r.stderr:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)

    def _inspect(self, template: str) -> str | None:
        r = self._docker("inspect", "--type", "container", "-f", template, self.container, check=False)
        if r.ok:
            return r.stdout
        if "No such" in r.stderr:
            return None
        raise CommandError(self.ex.host, r.command, r.rc, r.stderr)

    def exists(self) -> bool:
        return self._inspect("{{.Id}}") is not None

    def is_running(self) -> bool:
        return (self._inspect("{{.State.Running}}") or "").strip() == "true"

    def args(self) -> list[str]:
        out = self._inspect("{{range .Args}}{{println .}}{{end}}")
        if out is None:
            raise RuntimeStateError(f"{self.ex.host}: no container named {self.container}")
        # NOTES: the template ends with a blank line, which would become an empty flag
        return [a for a in out.split("\n") if a != ""]

    def rename(self, new_name: str) -> DockerRuntime:
        """Rename the container; returns the runtime of the renamed one (self keeps the freed name)."""
        self._docker("rename", self.container, new_name, reason=f"rename etcd container to {new_name}")
        return DockerRuntime(self.ex, new_name, self.image, docker=self.docker, binds=self.binds)

    def set_restart(self, always: bool) -> None:
        self._docker("update", f"--restart={'always' if always else 'no'}", self.container)

    def restarts(self) -> bool:
        """Whether the container comes back by itself (any restart policy but "no")."""
        policy = (self._inspect("{{.HostConfig.RestartPolicy.Name}}") or "").strip()
        return policy not in ("", "no")

    def statuses(self, *names: str) -> dict[str, MemberStatus]:
        """The status of each container named (this one when none is), in one `docker inspect`."""
        names = names or (self.container,)
        r = self._docker("inspect", "--type", "container", "-f", "{{json .}}", *names, check=False)
        if not r.ok and "No such" not in r.stderr:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)
        found: dict[str, MemberStatus] = {}
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            name = str(d.get("Name") or "").lstrip("/")
            policy = str(((d.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "")
            found[name] = MemberStatus(
                name,
                True,
                bool((d.get("State") or {}).get("Running")),
                policy not in ("", "no"),
                # NOTES: an empty argument would become an empty flag (as args() drops it)
                tuple(str(a) for a in d.get("Args") or () if a != ""),
                d,
            )
        return {n: found.get(n, MemberStatus(n, False)) for n in names}

    def inspect(self) -> dict:
        """`docker inspect` of the container, parsed."""
        out = self._inspect("{{json .}}")
        if out is None:
            raise RuntimeStateError(f"{self.ex.host}: no container named {self.container}")
        return json.loads(out)

    def start_like(
        self, template: str, args: Sequence[str], *, restart_always: bool, seen: MemberStatus | None = None
    ) -> None:
        """`docker run` this container as a copy of container `template` (image, entrypoint, mounts,
        network, environment, all from its `docker inspect`), with etcd arguments `args`. `seen`:
        the template's status just read (its inspect is used instead of asking again)."""
        if seen is not None and seen.name == template and seen.inspected is not None:
            t = dict(seen.inspected)
        else:
            t = DockerRuntime(self.ex, template, docker=self.docker).inspect()
        cfg, host_cfg = t.get("Config") or {}, t.get("HostConfig") or {}
        argv = ["run", "-d", "--name", self.container, f"--network={host_cfg.get('NetworkMode') or 'host'}"]
        argv.append("--restart=always" if restart_always else "--restart=no")
        for bind in host_cfg.get("Binds") or []:
            argv += ["-v", bind]
        for env in cfg.get("Env") or []:
            argv += ["-e", env]
        argv += ["--entrypoint", str(t["Path"]), str(cfg["Image"]), *args]
        self._docker(*argv, timeout=120, reason=f"start etcd container {self.container} like {template}")

    def logs(self, tail: int = 50) -> str:
        r = self._docker("logs", "--tail", str(tail), self.container, check=False)
        return r.stdout + r.stderr

    def log_sh(self, *, follow: bool) -> str:
        d, c = shlex.quote(self.docker), shlex.quote(self.container)
        return f'{d} logs {"-f " if follow else ""}--since "$since" {c} 2>&1'


class ProcessRuntime:
    """An etcd member as a plain process, managed like a minimal service unit: UNIT_DIR/NAME.sh execs
    etcd with its flags (the source of truth for args()), NAME.enabled beside it means "start at boot"
    (the lab's host init runs enabled units; on a systemd host a unit file would do it), the PID in
    RUN_DIR/NAME.pid (wiped with /run by a power loss), output appended to LOG_DIR/NAME.log."""

    kind = RuntimeKind.PROCESS

    def __init__(
        self,
        executor: Executor,
        binary: str = "/usr/bin/etcd",
        name: str = "etcd",
        *,
        unit_dir: str = "/etc/etcd-dr/units",
        run_dir: str = "/run/etcd-dr",
        log_dir: str = "/var/log/etcd-dr",
    ) -> None:
        self.ex = executor
        self.binary = binary
        self.name = name
        self.unit_dir, self.run_dir, self.log_dir = unit_dir, run_dir, log_dir

    @property
    def unit(self) -> str:
        return f"{self.unit_dir}/{self.name}.sh"

    @property
    def enabled_marker(self) -> str:
        return f"{self.unit_dir}/{self.name}.enabled"

    @property
    def pidfile(self) -> str:
        return f"{self.run_dir}/{self.name}.pid"

    @property
    def logfile(self) -> str:
        return f"{self.log_dir}/{self.name}.log"

    def data_dir_for(self, host_path: str) -> str:
        return host_path

    def host_path(self, runtime_path: str) -> str:
        return runtime_path

    def _sh(
        self, script: str, *args: str, check: bool = True, timeout: float | None = None, reason: str = ""
    ):
        return self.ex.run(
            ["sh", "-c", script, self.name, *args], check=check, timeout=timeout, reason=reason
        )

    def _launch(self) -> None:
        # NOTES: `;` not `&&` before the background job, and all three std streams redirected, or a
        # remote shell never returns; setsid so the member outlives the session that started it.
        self._sh(
            'mkdir -p "$2" "$3"; setsid nohup /bin/sh "$1" </dev/null >>"$4" 2>&1 & echo $! > "$5"',
            self.unit, self.run_dir, self.log_dir, self.logfile, self.pidfile,
            reason=f"start {self.name}",
        )  # fmt: skip

    def start(self, spec: MemberSpec, *, restart_always: bool = True) -> None:
        self._start_argv([self.binary, *etcd_flags(spec)], spec.name, restart_always)

    def _start_argv(self, argv: Sequence[str], member: str, restart_always: bool) -> None:
        if self.is_running():
            raise RuntimeStateError(f"{self.ex.host}: {self.name} is already running")
        unit = (
            "#!/bin/sh\n"
            f"# etcd-dr unit {self.name}: etcd member {member}.\n"
            f"# {self.name}.enabled beside this file: started at boot.\n"
            f"exec {shlex.join(argv)}\n"
        )
        HostFS(self.ex).write_atomic(
            unit.encode(), self.unit, mode=0o755, dir_mode=0o755, reason=f"write unit for member {member}"
        )
        self.set_restart(restart_always)
        self._launch()

    def start_like(
        self, template: str, args: Sequence[str], *, restart_always: bool, seen: MemberStatus | None = None
    ) -> None:
        """Start this unit as a copy of unit `template` (its binary) with etcd arguments `args`."""
        tmpl = ProcessRuntime(
            self.ex, self.binary, template, unit_dir=self.unit_dir, run_dir=self.run_dir, log_dir=self.log_dir
        )
        binary = tmpl.exec_line()[0]
        name = next((a.split("=", 1)[1] for a in args if a.startswith("--name=")), self.name)
        self._start_argv([binary, *args], name, restart_always)

    def restart(self) -> None:
        if self.is_running():
            raise RuntimeStateError(f"{self.ex.host}: {self.name} is already running")
        self._launch()

    def pid(self) -> int | None:
        """The member's PID if it runs: its pidfile names a live, non-zombie process of the binary."""
        r = self._sh(
            'p=$(cat "$1" 2>/dev/null) || exit 1; s=$(sed "s/.*) //" /proc/"$p"/stat 2>/dev/null) || exit 1;'
            ' case $s in Z*|X*) exit 1;; esac; echo "$p"; tr "\\0" "\\n" < /proc/"$p"/cmdline',
            self.pidfile,
            check=False,
        )
        if not r.ok:
            return None
        lines = r.stdout.split("\n")
        return int(lines[0]) if len(lines) > 1 and lines[1] == self.binary else None

    def exists(self) -> bool:
        return HostFS(self.ex).is_file(self.unit)

    def statuses(self, *names: str) -> dict[str, MemberStatus]:
        """The status of each unit named (this one when none is), in one script."""
        names = names or (self.name,)
        r = self._sh(_UNIT_STATUS, self.unit_dir, self.run_dir, self.binary, *names, check=False)
        if not r.ok:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)
        out: dict[str, MemberStatus] = {}
        for block in r.stdout.split("\x1e")[1:]:  # one record per unit, separated by RS
            head, _, unit = block.partition("\n")
            name, exists, running, enabled = head.split(" ")
            exec_line = next((ln for ln in unit.splitlines() if ln.startswith("exec ")), "")
            argv = shlex.split(exec_line)[2:] if exec_line else []  # drop "exec" and the binary
            out[name] = MemberStatus(name, exists == "1", running == "1", enabled == "1", tuple(argv))
        return {n: out.get(n, MemberStatus(n, False)) for n in names}

    def is_running(self) -> bool:
        return self.pid() is not None

    def _signal_and_wait(self, sig: str, timeout: float) -> bool:
        """Signal, wait up to timeout, then KILL: True when it exited without the KILL."""
        pid = self.pid()
        if pid is None:
            return True
        r = self._sh(
            'kill -"$1" "$2" 2>/dev/null; i=0; while [ "$i" -lt "$3" ]; do'
            ' s=$(sed "s/.*) //" /proc/"$2"/stat 2>/dev/null) || exit 0; case $s in Z*|X*) exit 0;; esac;'
            ' sleep 0.1; i=$((i+1)); done; kill -KILL "$2" 2>/dev/null; echo killed; exit 0',
            sig, str(pid), str(int(timeout * 10)),
            timeout=timeout + 10,
        )  # fmt: skip
        return "killed" not in r.stdout

    def stop(self, timeout: float = 10.0) -> bool:
        return self._signal_and_wait("TERM", timeout)

    def kill(self) -> None:
        self._signal_and_wait("KILL", 5.0)

    def exec_line(self) -> list[str]:
        """The unit's command: the binary, then etcd's arguments."""
        try:
            text = self.ex.get(self.unit).decode()
        except CommandError as e:
            raise RuntimeStateError(f"{self.ex.host}: no unit {self.unit}") from e
        for line in text.splitlines():
            if line.startswith("exec "):
                return shlex.split(line)[1:]  # drop "exec"
        raise RuntimeStateError(f"{self.ex.host}: {self.unit} has no exec line")

    def args(self) -> list[str]:
        return self.exec_line()[1:]  # drop the binary

    def rename(self, new_name: str) -> ProcessRuntime:
        """Move the unit (and its boot marker, pidfile) to new_name; returns that runtime."""
        new = ProcessRuntime(
            self.ex, self.binary, new_name, unit_dir=self.unit_dir, run_dir=self.run_dir, log_dir=self.log_dir
        )
        unit, _, _ = HostFS(self.ex).renames(
            (self.unit, new.unit), (self.enabled_marker, new.enabled_marker), (self.pidfile, new.pidfile),
            reason=f"rename unit {self.name} to {new_name}",
        )  # fmt: skip
        if not unit:
            raise RuntimeStateError(f"{self.ex.host}: no unit {self.unit} to rename")
        return new

    def set_restart(self, always: bool) -> None:
        # the marker is the unit's boot switch (systemctl enable/disable), not data: removed freely
        if always:
            self.ex.run(["touch", self.enabled_marker])
        else:
            self.ex.run(["rm", "-f", self.enabled_marker])

    def restarts(self) -> bool:
        return HostFS(self.ex).exists(self.enabled_marker)

    def logs(self, tail: int = 50) -> str:
        return self.ex.run(["tail", "-n", str(tail), self.logfile], check=False).stdout

    def log_sh(self, *, follow: bool) -> str:
        # no timestamps to filter by: the last 2000 lines (etcd logs a campaign every few seconds)
        return f"tail -n {'0 -F' if follow else '2000'} {shlex.quote(self.logfile)} 2>/dev/null"


# per unit: "<RS>name exists running enabled" then the unit's text; running as pid() decides it
_UNIT_STATUS = r"""u=$1 r=$2 b=$3; shift 3
for n in "$@"; do
  e=0; [ -f "$u/$n.sh" ] && e=1
  en=0; [ -e "$u/$n.enabled" ] && en=1
  run=0
  if p=$(cat "$r/$n.pid" 2>/dev/null) && s=$(sed "s/.*) //" /proc/"$p"/stat 2>/dev/null); then
    case $s in Z*|X*) ;; *) [ "$(tr "\0" "\n" < /proc/"$p"/cmdline | sed -n 1p)" = "$b" ] && run=1;; esac
  fi
  printf '\036%s %s %s %s\n' "$n" "$e" "$run" "$en"
  [ "$e" = 1 ] && cat "$u/$n.sh"
done
exit 0"""


def runtime_for(
    inv: Inventory,
    executor: Executor,
    *,
    docker: str = "docker",
    host: Host | None = None,
    image: str | None = None,
    binary: str | None = None,
) -> DockerRuntime | ProcessRuntime:
    """The runtime the inventory says the members use, over executor. With host, its own
    etcd_image/etcd_binary apply; image/binary (a caller's explicit choice) win over both."""
    e = inv.etcd
    if e.runtime == RuntimeKind.DOCKER:
        img = image or (inv.etcd_image_for(host) if host else e.image)
        return DockerRuntime(executor, e.container, img, docker=docker)
    return ProcessRuntime(executor, binary or (inv.etcd_binary_for(host) if host else e.binary))
