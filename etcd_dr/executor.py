"""One way to run a command on a host.

Every command etcd-dr runs on a host goes through an `Executor`: argv in, a typed `CommandResult`
out. Quoting, timeouts, retries of transport errors and the audit record happen here and nowhere
else. Commands are argv lists; where a shell is really needed, pass `["sh", "-c", script]`.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from etcd_dr.errors import CommandError


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one host."""

    host: str
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@runtime_checkable
class Executor(Protocol):
    """Runs commands and moves files on one host."""

    host: str

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: bytes | None = None,
        reason: str = "",
    ) -> CommandResult:
        """Run argv. Raises TransportError if the host is unreachable, CommandError if check and rc != 0
        or the command outlived its timeout."""
        ...

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        """Write data to remote_path atomically (temp file + rename), with mode."""
        ...

    def get(self, remote_path: str) -> bytes:
        """Read a whole file from the host."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs commands on this machine (the orchestrator's own host)."""

    def __init__(self, host: str = "localhost", *, default_timeout: float = 60.0, audit=None) -> None:
        self.host = host
        self.default_timeout = default_timeout
        self.audit = audit

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: bytes | None = None,
        reason: str = "",
    ) -> CommandResult:
        argv = tuple(argv)
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                timeout=timeout or self.default_timeout,
                check=False,
            )
            rc: int | None = p.returncode
            out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out, err = None, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace")
        except FileNotFoundError as e:
            rc, out, err = 127, "", str(e)
        dt = time.monotonic() - t0
        if self.audit is not None:
            self.audit.command(host=self.host, argv=argv, rc=rc, duration_s=dt, reason=reason)
        if rc is None or (check and rc != 0):
            raise CommandError(self.host, shlex.join(argv), rc, err)
        return CommandResult(self.host, argv, rc, out, err, dt)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        import os

        tmp = f"{remote_path}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, remote_path)

    def get(self, remote_path: str) -> bytes:
        with open(remote_path, "rb") as f:
            return f.read()

    def close(self) -> None:
        pass
