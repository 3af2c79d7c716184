"""The lab's console: an Executor that runs commands inside a lab host through nsenter into its
PID 1's namespaces (network, mount, UTS, PID). No network and no sshd needed, so it bootstraps hosts
(certificates, images, members) and works while a host is unplugged. A powered-off host raises
TransportError, as an unreachable SSH host would."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence

from etcd_dr.audit import redact
from etcd_dr.errors import TransportError
from etcd_dr.executor import CommandResult, audit_command, audit_put, command_failure
from etcd_dr.lab import procs
from etcd_dr.lab.config import HostProc
from etcd_dr.lab.hosts import DROPPED_CAPS

# A login-like environment: the caller's (a venv, pyenv shims) must not leak into the host.
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "USER": "root",
}
log = logging.getLogger("etcd_dr.lab.console")


class ConsoleExecutor:
    """Executor protocol over nsenter. `proc` is the host's PID 1 with its start time (proof that the
    PID still names that host's init, not a reused PID)."""

    def __init__(
        self, host: str, proc: HostProc | None, *, default_timeout: float = 60.0, audit=None
    ) -> None:
        self.host = host
        self.proc = proc
        self.default_timeout = default_timeout
        self.audit = audit

    def _check_up(self) -> HostProc:
        if self.proc is None or not procs.alive(self.proc.pid, self.proc.start_ticks):
            raise TransportError(self.host, "powered off (its PID 1 is gone)")
        return self.proc

    def _exec(
        self, argv: tuple[str, ...], timeout: float | None, stdin: bytes | None
    ) -> tuple[int | None, bytes, bytes, float]:
        proc = self._check_up()
        full = [
            "nsenter", "-t", str(proc.pid), "-n", "-m", "-u", "-p", "--",
            "setpriv", "--bounding-set", DROPPED_CAPS, "--", *argv,
        ]  # fmt: skip
        t0 = time.monotonic()
        # own session: on timeout the whole group (nsenter and its child in the host) is killed
        p = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=HOST_ENV,
            cwd="/",
            start_new_session=True,
        )
        try:
            out, err = p.communicate(stdin, timeout=timeout or self.default_timeout)
            rc: int | None = p.returncode
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            rc = None
        dt = time.monotonic() - t0
        if rc != 0:
            self._check_up()  # the host died under the command: a transport failure, not the command's
        return rc, out, err, dt

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: bytes | None = None,
        reason: str = "",
        idempotent: bool = False,  # no connection to lose: nothing to retry
    ) -> CommandResult:
        argv = tuple(argv)
        log.debug("%s$ %s", self.host, redact(shlex.join(argv)))
        try:
            rc, out, err, dt = self._exec(argv, timeout, stdin)
        except TransportError:
            audit_command(self.audit, self.host, argv, None, 0.0, reason, "unreachable")
            raise
        audit_command(self.audit, self.host, argv, rc, dt, reason)
        serr = err.decode(errors="replace")
        if rc is None or (check and rc != 0):
            raise command_failure(self.host, argv, rc, serr)
        return CommandResult(self.host, argv, rc, out.decode(errors="replace"), serr, dt)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        # a unique temp name beside the target (same filesystem: the rename is atomic); the content
        # goes through stdin, never into argv or the audit record
        script = (
            't="$1.$(head -c4 /dev/urandom | od -An -tx1 | tr -d " \\n").part"; '
            'cat > "$t" && chmod "$2" "$t" && mv -f "$t" "$1" || { rm -f "$t"; exit 1; }'
        )
        t0 = time.monotonic()
        outcome = "failed"
        try:
            rc, _, err, _ = self._exec(("sh", "-c", script, "put", remote_path, f"{mode:o}"), None, data)
            if rc != 0:
                raise command_failure(self.host, ("put", remote_path), rc, err.decode(errors="replace"))
            outcome = "ok"
        finally:
            audit_put(
                self.audit, self.host, remote_path, mode, len(data), time.monotonic() - t0, reason, outcome
            )

    def get(self, remote_path: str) -> bytes:
        argv = ("cat", "--", remote_path)
        rc, out, err, _ = self._exec(argv, None, None)
        if rc != 0:
            raise command_failure(self.host, argv, rc, err.decode(errors="replace"))
        return out

    def tunnel(self, address: str, port: int) -> contextlib.AbstractContextManager[tuple[str, int]]:
        raise TransportError(self.host, f"no tunnel to {address}:{port} through the lab's console; use SSH")

    def close(self) -> None:
        pass
