"""What every plan kind's step handlers share: one executor per host and one etcd client per
endpoint (cached for the run, closed once), one `wait`, one `Say`, and file verbs on a host
(`HostFS`) in the manner of Barman's fs.py: each verb is one command through the executor, so it is
audited, and several checks can be asked in one round trip (`HostFS.tests`).

    c = StepContext(inv, audit, say)
    fs = c.fs("master3")
    if not fs.is_dir(f"{src}/member"): ...
    fs.copy_atomic(src, dst, reason="back up the data dir")
    wait(lambda: not rt.is_running(), 15, "etcd on master3 stopped", error=RecoveryStepError)
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from etcd_dr.audit import AuditLog
from etcd_dr.errors import CommandError, EtcdDrError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.executor import Executor, executor_for
from etcd_dr.inventory import Inventory
from etcd_dr.state import client_for

Say = Callable[[str], None]
POLL_S = 0.2


class WaitTimeout(EtcdDrError):
    """A condition a step waits for did not come true in time."""


def wait(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    error: type[EtcdDrError] = WaitTimeout,
    poll: float = POLL_S,
) -> None:
    """Poll cond until it holds; raise `error` ("<what>: not true after N s") once timeout passed."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise error(f"{what}: not true after {timeout:.0f} s")
        time.sleep(poll)


# copied to dst.part (our own: a leftover of an interrupted copy is replaced), synced, renamed
_COPY = 'rm -rf -- "$2.part" && cp -a -- "$1" "$2.part" && sync && mv -- "$2.part" "$2"'
# several `test` checks in one round trip: one line of 0/1 per check
_TESTS = 'while [ $# -gt 1 ]; do if test "$1" "$2"; then echo 1; else echo 0; fi; shift 2; done'
# sha256 of each file under a directory, paths relative to it; exit 3: no such directory
_DIGESTS = '[ -d "$1" ] || exit 3; cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum --'
_TEST_FLAGS = frozenset({"-e", "-d", "-f", "-s", "-L"})


class HostFS:
    """File verbs on one host, each one command through its executor (audited). Paths are the
    host's. Nothing here deletes: `move_aside` renames, `copy_atomic` and `write_atomic` land
    complete files only."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    def tests(self, *checks: tuple[str, str]) -> tuple[bool, ...]:
        """Several `test FLAG PATH` checks (-e, -d, -f, -s, -L) in one round trip."""
        for flag, _ in checks:
            if flag not in _TEST_FLAGS:
                raise ValueError(f"test flag {flag!r}: use one of {', '.join(sorted(_TEST_FLAGS))}")
        argv = [a for c in checks for a in c]
        r = self.ex.run(["sh", "-c", _TESTS, "tests", *argv], reason="check paths")
        got = r.stdout.split()
        if len(got) != len(checks):
            raise CommandError(
                self.ex.host, r.command, r.rc, f"expected {len(checks)} answers, got {r.stdout!r}"
            )
        return tuple(g == "1" for g in got)

    def exists(self, path: str) -> bool:
        return self.ex.run(["test", "-e", path], check=False).ok

    def is_dir(self, path: str) -> bool:
        return self.ex.run(["test", "-d", path], check=False).ok

    def is_file(self, path: str) -> bool:
        return self.ex.run(["test", "-f", path], check=False).ok

    def makedirs(self, path: str, mode: int = 0o700, *, reason: str = "") -> None:
        """The directory and its parents (mode applies to the last one when it is created)."""
        self.ex.run(["mkdir", "-p", "-m", f"{mode:o}", path], reason=reason or f"create {path}")

    def rename(self, src: str, dst: str, *, reason: str = "") -> None:
        """Rename src to dst (one filesystem: atomic), never over something at dst."""
        r = self.ex.run(
            ["sh", "-c", '[ ! -e "$2" ] || { echo "$2 exists already" >&2; exit 3; }; mv -- "$1" "$2"',
             "rename", src, dst],
            check=False,
            reason=reason or f"rename {src} to {dst}",
        )  # fmt: skip
        if not r.ok:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)

    def move_aside(self, path: str, suffix: str, *, reason: str = "") -> str:
        """Rename path to `path.suffix` (never over something there: nothing is deleted); returns
        the new path."""
        aside = f"{path}.{suffix}"
        self.rename(path, aside, reason=reason or f"set {path} aside")
        return aside

    def copy_atomic(self, src: str, dst: str, *, timeout: float = 600, reason: str = "") -> None:
        """A complete copy (file or dir, `cp -a`) appears at dst at once: copied to dst.part, synced,
        renamed."""
        self.ex.run(
            ["sh", "-c", _COPY, "copy", src, dst], timeout=timeout, reason=reason or f"copy {src} to {dst}"
        )

    def sha256(self, path: str, *, timeout: float = 600) -> str | None:
        """The file's sha256 (hex), or None when it cannot be read (absent)."""
        r = self.ex.run(["sha256sum", "--", path], check=False, timeout=timeout)
        return r.stdout.split()[0] if r.ok and r.stdout.strip() else None

    def digests(self, path: str, *, timeout: float = 120) -> dict[str, str] | None:
        """sha256 of every file under the directory path, by path relative to it (one round trip);
        None when path is no directory."""
        r = self.ex.run(["sh", "-c", _DIGESTS, "digests", path], check=False, timeout=timeout)
        if r.rc == 3:
            return None
        if not r.ok:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)
        out: dict[str, str] = {}
        for line in r.stdout.splitlines():
            digest, _, rel = line.partition("  ")
            if rel:
                out[rel.removeprefix("./")] = digest
        return out

    def matches_manifest(self, path: str, manifest: str, *, timeout: float = 120) -> bool:
        """Whether the directory path holds every file its manifest (sha256sum's format, a file in
        path) lists, each with that digest: one round trip. False when either is missing."""
        r = self.ex.run(
            [
                "sh",
                "-c",
                'cd "$1" 2>/dev/null && [ -s "$2" ] && sha256sum --quiet --strict -c "$2"',
                "check",
                path,
                manifest,
            ],
            check=False,
            timeout=timeout,
        )
        return r.ok

    def read(self, path: str) -> bytes:
        return self.ex.get(path)

    def write_atomic(self, data: bytes, path: str, *, mode: int = 0o600, reason: str = "") -> None:
        """data at path, complete or not at all (the executor writes a temp file and renames it);
        the parent directory is created (0700) first."""
        self.makedirs(posixpath.dirname(path), reason=f"directory for {path}")
        self.ex.put(data, path, mode=mode, reason=reason)


@dataclass
class StepContext:
    """The handlers' shared means for one run of a plan: executors, etcd clients, file verbs."""

    inv: Inventory
    audit: AuditLog | None
    say: Say
    _executors: dict[str, Executor] = field(default_factory=dict)
    _clients: dict[str, EtcdClient] = field(default_factory=dict)

    def executor(self, host: str) -> Executor:
        if host not in self._executors:
            self._executors[host] = executor_for(self.inv, host, audit=self.audit)
        return self._executors[host]

    def fs(self, host: str) -> HostFS:
        return HostFS(self.executor(host))

    def client(self, endpoint: str, timeout: float = 2.0) -> EtcdClient:
        """A client of this one endpoint (dial and request timeouts capped at `timeout`: a step
        asks one member, and a dead one must not cost the inventory's longer timeouts)."""
        if endpoint not in self._clients:
            e = self.inv.etcd
            self._clients[endpoint] = client_for(
                self.inv,
                [endpoint],
                dial_timeout=min(e.dial_timeout, timeout),
                request_timeout=min(e.request_timeout, timeout),
            )
        return self._clients[endpoint]

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()
        for c in self._clients.values():
            c.close()
        self._executors.clear()
        self._clients.clear()


__all__: Sequence[str] = ["POLL_S", "HostFS", "Say", "StepContext", "WaitTimeout", "wait"]
