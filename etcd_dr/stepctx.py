"""What every plan kind's step handlers share: one executor per host and one etcd client per
endpoint (cached for the run, closed once), one `wait`, one `Say`, and file verbs on a host
(`HostFS`) in the manner of Barman's fs.py: each verb is one command through the executor, so it is
audited, and what a check needs from a host is asked in one round trip (`HostFS.look`: several
`test`s, several small files, the host's clock).

    c = StepContext(inv, audit, say)
    fs = c.fs("master3")
    if not fs.is_dir(f"{src}/member"): ...
    fs.copy_atomic(src, dst, reason="back up the data dir")
    wait(lambda: not rt.is_running(), 15, "etcd on master3 stopped", error=RecoveryStepError)
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Self, TypeVar

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
# a regular file copied into a directory made first (mode $3 when new); exit 3: src is no file
_COPY_FILE = '[ -f "$1" ] || exit 3; mkdir -p -m "$3" -- "${2%/*}" && ' + _COPY
# one round trip for a check: the host's clock (or "-"), a line of 0/1 per `test`, then per file
# "1 <base64>" or "0" (absent, not a regular file, unreadable)
_LOOK = """c=$1 n=$2; shift 2
if [ "$c" = 1 ]; then date -u +%s.%N; else echo -; fi
while [ "$n" -gt 0 ]; do if test "$1" "$2"; then echo 1; else echo 0; fi; shift 2; n=$((n-1)); done
for f; do if [ -f "$f" ] && b=$(base64 -w0 -- "$f" 2>/dev/null); then echo "1 $b"; else echo 0; fi; done"""
# sha256 of each file under a directory, paths relative to it; exit 3: no such directory
_DIGESTS = '[ -d "$1" ] || exit 3; cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum --'
_TEST_FLAGS = frozenset({"-e", "-d", "-f", "-s", "-L"})
# renamed unless something is at dst already (never over it: nothing is lost); exit 4: no src
# every pair whose src is there renamed, none over something at its dst (all checked first);
# one line of 0/1 per pair
_RENAMES = """n=0
for a; do
  n=$((n+1)); if [ $((n % 2)) = 1 ]; then src=$a; continue; fi
  if { [ -e "$src" ] || [ -L "$src" ]; } && { [ -e "$a" ] || [ -L "$a" ]; }; then
    echo "$a exists already" >&2; exit 3
  fi
done
while [ $# -gt 1 ]; do
  if [ -e "$1" ] || [ -L "$1" ]; then mv -- "$1" "$2" || exit 1; echo 1; else echo 0; fi; shift 2
done"""
_RENAME = """[ -e "$1" ] || [ -L "$1" ] || { echo "$1 does not exist" >&2; exit 4; }
[ ! -e "$2" ] || { echo "$2 exists already" >&2; exit 3; }
mv -- "$1" "$2"
"""


@dataclass(frozen=True)
class HostLook:
    """What one `HostFS.look` saw on a host, in the order asked."""

    tests: tuple[bool, ...]
    files: tuple[bytes | None, ...]  # None: no readable regular file there
    clock: float | None  # the host's UTC time (epoch s) at the round trip's midpoint, when asked
    skew_s: float | None  # the host's clock minus this machine's
    rtt_s: float


class HostFS:
    """File verbs on one host, each one command through its executor (audited). Paths are the
    host's. Nothing here deletes: `move_aside` renames, `copy_atomic` and `write_atomic` land
    complete files only."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    def look(
        self,
        *,
        tests: Sequence[tuple[str, str]] = (),
        files: Sequence[str] = (),
        clock: bool = False,
        reason: str = "",
    ) -> HostLook:
        """Several `test FLAG PATH` checks (-e, -d, -f, -s, -L), several small files (a certificate,
        a key: read whole, into memory) and the host's clock, in one round trip."""
        for flag, _ in tests:
            if flag not in _TEST_FLAGS:
                raise ValueError(f"test flag {flag!r}: use one of {', '.join(sorted(_TEST_FLAGS))}")
        argv = ["1" if clock else "0", str(len(tests)), *(a for t in tests for a in t), *files]
        t0 = time.time()
        r = self.ex.run(["sh", "-c", _LOOK, "look", *argv], timeout=30, reason=reason or "look at the host")
        t1 = time.time()
        lines = r.stdout.split("\n")
        if len(lines) < 1 + len(tests) + len(files):
            raise CommandError(self.ex.host, r.command, r.rc, f"a short answer: {len(lines)} lines")
        host_t: float | None = None
        if clock:
            try:
                host_t = float(lines[0])
            except ValueError:
                raise CommandError(
                    self.ex.host, "date -u +%s.%N", r.rc, f"not a timestamp: {lines[0][:40]!r}"
                ) from None
        got_tests = tuple(x == "1" for x in lines[1 : 1 + len(tests)])
        got_files: list[bytes | None] = []
        for path, line in zip(files, lines[1 + len(tests) : 1 + len(tests) + len(files)], strict=True):
            if not line.startswith("1 "):
                got_files.append(None)
                continue
            try:
                got_files.append(base64.b64decode(line[2:], validate=True))
            except binascii.Error:
                raise CommandError(self.ex.host, r.command, r.rc, f"{path}: not read whole") from None
        skew = host_t - (t0 + t1) / 2 if host_t is not None else None
        return HostLook(got_tests, tuple(got_files), host_t, skew, t1 - t0)

    def tests(self, *checks: tuple[str, str]) -> tuple[bool, ...]:
        """Several `test FLAG PATH` checks (-e, -d, -f, -s, -L) in one round trip."""
        return self.look(tests=checks, reason="check paths").tests

    def read_optional(self, *paths: str, reason: str = "") -> tuple[bytes | None, ...]:
        """Several small files in one round trip: each one's content, None where it is absent."""
        return self.look(files=paths, reason=reason or "read files").files

    def exists(self, path: str) -> bool:
        return self.ex.run(["test", "-e", path], check=False).ok

    def is_dir(self, path: str) -> bool:
        return self.ex.run(["test", "-d", path], check=False).ok

    def is_file(self, path: str) -> bool:
        return self.ex.run(["test", "-f", path], check=False).ok

    def makedirs(self, path: str, mode: int = 0o700, *, reason: str = "") -> None:
        """The directory and its parents (mode applies to the last one when it is created)."""
        self.ex.run(["mkdir", "-p", "-m", f"{mode:o}", path], reason=reason or f"create {path}")

    def rename(self, src: str, dst: str, *, reason: str = "", missing_ok: bool = False) -> bool:
        """Rename src to dst (one filesystem: atomic), never over something at dst. With missing_ok,
        no src is no error: False is returned (one round trip either way)."""
        r = self.ex.run(
            ["sh", "-c", _RENAME, "rename", src, dst], check=False, reason=reason or f"rename {src} to {dst}"
        )
        if r.rc == 4 and missing_ok:
            return False
        if not r.ok:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)
        return True

    def renames(self, *pairs: tuple[str, str], reason: str = "") -> tuple[bool, ...]:
        """Rename each (src, dst) whose src is there, in one round trip; none over something at its
        dst (all are checked before any is moved). Whether each src was there and moved."""
        r = self.ex.run(
            ["sh", "-c", _RENAMES, "renames", *(a for p in pairs for a in p)],
            check=False,
            reason=reason or "rename " + ", ".join(f"{s} to {d}" for s, d in pairs),
        )
        if not r.ok:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)
        got = r.stdout.split()
        if len(got) != len(pairs):
            raise CommandError(
                self.ex.host, r.command, r.rc, f"expected {len(pairs)} answers, got {r.stdout!r}"
            )
        return tuple(g == "1" for g in got)

    def move_aside(self, path: str, suffix: str, *, reason: str = "", missing_ok: bool = False) -> str | None:
        """Rename path to `path.suffix` (never over something there: nothing is deleted); returns
        the new path (None when missing_ok and there was nothing at path)."""
        aside = f"{path}.{suffix}"
        moved = self.rename(path, aside, reason=reason or f"set {path} aside", missing_ok=missing_ok)
        return aside if moved else None

    def copy_atomic(self, src: str, dst: str, *, timeout: float = 600, reason: str = "") -> None:
        """A complete copy (file or dir, `cp -a`) appears at dst at once: copied to dst.part, synced,
        renamed."""
        self.ex.run(
            ["sh", "-c", _COPY, "copy", src, dst], timeout=timeout, reason=reason or f"copy {src} to {dst}"
        )

    def copy_file_atomic(
        self, src: str, dst: str, *, dir_mode: int = 0o700, timeout: float = 600, reason: str = ""
    ) -> bool:
        """copy_atomic of a regular file, its destination directory created first (dir_mode when
        new), in one round trip; False (nothing done) when src is no regular file."""
        r = self.ex.run(
            ["sh", "-c", _COPY_FILE, "copy", src, dst, f"{dir_mode:o}"],
            check=False,
            timeout=timeout,
            reason=reason or f"copy {src} to {dst}",
        )
        if r.rc == 3:
            return False
        if not r.ok:
            raise CommandError(self.ex.host, r.command, r.rc, r.stderr)
        return True

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

    def write_atomic(
        self, data: bytes, path: str, *, mode: int = 0o600, dir_mode: int = 0o700, reason: str = ""
    ) -> None:
        """data at path, complete or not at all (the executor writes a temp file and renames it);
        the parent directory is created (dir_mode, when it is new) first."""
        self.makedirs(posixpath.dirname(path), dir_mode, reason=f"directory for {path}")
        self.ex.put(data, path, mode=mode, reason=reason)

    def mode(self, path: str) -> int | None:
        """The file's permission bits, or None when there is nothing at path."""
        r = self.ex.run(["stat", "-c", "%a", "--", path], check=False, reason=f"mode of {path}")
        return int(r.stdout.strip(), 8) if r.ok and r.stdout.strip() else None


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

    def forget_client(self, endpoint: str) -> None:
        """Close and drop the endpoint's client: the next client() dials afresh. After a refused
        connect gRPC's channel waits out its reconnect backoff (up to 1 s) before it dials again,
        so a member that just started would be seen that much late."""
        c = self._clients.pop(endpoint, None)
        if c is not None:
            c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()
        for c in self._clients.values():
            c.close()
        self._executors.clear()
        self._clients.clear()


C = TypeVar("C", bound=StepContext)


class Handler(Generic[C]):
    """The base of a vocabulary's step handlers: each is made with its plan's context (`VOCABULARY`
    pairs an action with its params type and its handler class, called with the context)."""

    def __init__(self, c: C) -> None:
        self.c = c


__all__: Sequence[str] = [
    "POLL_S",
    "Handler",
    "HostFS",
    "HostLook",
    "Say",
    "StepContext",
    "WaitTimeout",
    "wait",
]
