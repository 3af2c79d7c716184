"""One way to run a command on a host.

Every command etcd-dr runs on a host goes through an `Executor`: argv in, a typed `CommandResult`
out. Quoting, timeouts, retries of transport errors and the audit record happen here and nowhere
else. Commands are argv lists; where a shell is really needed, pass `["sh", "-c", script]`.

Logging: every command is logged at DEBUG on "etcd_dr.executor", redacted (etcd_dr.audit.redact).
Never logged: stdin, file contents, key material.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import secrets
import select
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from etcd_dr.audit import audit_log_for, redact, register_secret
from etcd_dr.errors import CommandError, EtcdDrError, HostKeyError, InputError, TransportError

if TYPE_CHECKING:
    import paramiko

    from etcd_dr.audit import AuditLog
    from etcd_dr.inventory import BastionSettings, Host, Inventory, SshSettings

log = logging.getLogger("etcd_dr.executor")
Sink = Callable[[bytes], object]  # where a command's stdout goes as it arrives (a file's write)


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
        idempotent: bool = False,
    ) -> CommandResult:
        """Run argv. Raises TransportError if the host is unreachable, CommandError if check and rc != 0
        or the command outlived its timeout. idempotent=True allows one re-run when the connection
        broke after the command was sent (its outcome unknown); without it only a command that
        certainly never started is retried."""
        ...

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        """Write data to remote_path atomically (temp file + rename), with mode."""
        ...

    def get(self, remote_path: str) -> bytes:
        """Read a whole file from the host."""
        ...

    def tunnel(self, address: str, port: int) -> contextlib.AbstractContextManager[tuple[str, int]]:
        """An (address, port) on this machine whose connections reach address:port as the host dials
        it (`ssh -L`): to ask a service the way its own host sees it. Open for the `with` block;
        TransportError when no tunnel can be made."""
        ...

    def close(self) -> None: ...


def command_failure(host: str, argv: Sequence[str], rc: int | None, stderr: str) -> CommandError:
    # Exceptions end up in logs and the Prefect UI: redact what the host printed, too.
    return CommandError(host, redact(shlex.join(argv)), rc, redact(stderr))


def audit_command(audit, host: str, argv, rc, dt: float, reason: str, outcome: str | None = None) -> None:
    if audit is not None:
        audit.command(host=host, argv=argv, rc=rc, duration_s=dt, reason=reason, outcome=outcome)


def audit_put(
    audit, host: str, path: str, mode: int, size: int, dt: float, reason: str, outcome: str
) -> None:
    if audit is not None:  # size only: a digest of a short secret would let one guess it
        audit.event(
            host=host,
            action="put",
            outcome=outcome,
            reason=reason,
            path=path,
            mode=f"{mode:04o}",
            size=size,
            duration_s=dt,
        )


def audit_get(audit, host: str, path: str, size: int, dt: float, reason: str) -> None:
    if audit is not None:
        audit.event(host=host, action="get", outcome="ok", reason=reason, path=path, size=size, duration_s=dt)


def _land(local_path: Path, fill: Callable[[Path], object]) -> int:
    """fill(a temp file beside local_path), fsync, rename over local_path: a reader never sees half a
    file. The temp file is removed when fill fails."""
    local_path = Path(local_path)
    tmp = local_path.with_name(f".{local_path.name}.{secrets.token_hex(4)}.part")
    try:
        fill(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, local_path)
    finally:
        tmp.unlink(missing_ok=True)
    return local_path.stat().st_size


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
        idempotent: bool = False,  # nothing to retry locally
    ) -> CommandResult:
        argv = tuple(argv)
        log.debug("%s$ %s", self.host, redact(shlex.join(argv)))
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
            rc, out, err = (
                None,
                (e.stdout or b"").decode(errors="replace"),
                (e.stderr or b"").decode(errors="replace"),
            )
        except FileNotFoundError as e:
            rc, out, err = 127, "", str(e)
        except OSError as e:  # not executable, ...: what a shell would report as 126
            rc, out, err = 126, "", str(e)
        dt = time.monotonic() - t0
        log.debug("%s: rc=%s in %.3f s", self.host, rc, dt)
        audit_command(self.audit, self.host, argv, rc, dt, reason)
        if rc is None or (check and rc != 0):
            raise command_failure(self.host, argv, rc, err)
        return CommandResult(self.host, argv, rc, out, err, dt)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        t0 = time.monotonic()
        # A unique temp name: two writers of one path must not share (and truncate) one temp file.
        tmp = f"{remote_path}.{secrets.token_hex(4)}.part"
        outcome = "failed"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o777)
            try:
                os.write(fd, data)
                os.fchmod(fd, mode)  # exact mode, whatever the umask
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, remote_path)
            outcome = "ok"
        finally:
            if outcome != "ok" and os.path.exists(tmp):
                os.unlink(tmp)
            audit_put(
                self.audit, self.host, remote_path, mode, len(data), time.monotonic() - t0, reason, outcome
            )

    def get(self, remote_path: str) -> bytes:
        with open(remote_path, "rb") as f:
            return f.read()

    @contextlib.contextmanager
    def tunnel(self, address: str, port: int) -> Iterator[tuple[str, int]]:
        yield address, port  # this machine dials it itself

    def get_to(self, remote_path: str, local_path: Path, *, reason: str = "") -> int:
        """Copy a (possibly large) file to local_path, streamed; returns its size."""
        t0 = time.monotonic()
        size = _land(local_path, lambda tmp: shutil.copyfile(remote_path, tmp))
        audit_get(self.audit, self.host, remote_path, size, time.monotonic() - t0, reason)
        return size

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# SSH


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey, known_other: bool) -> None:
        super().__init__(hostname)
        self.hostname, self.key, self.known_other = hostname, key, known_other


class _Refuse:
    """Missing-host-key policy: refuse (like paramiko's RejectPolicy) but say which key was offered."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key, client.get_host_keys().lookup(hostname) is not None)


_PID_WRAPPER = 'printf "etcd-dr-pid %s\\n" "$$" >&2; exec "$@"'
_PID_LINE_RE = re.compile(rb"^etcd-dr-pid (\d+)\n")
# TERM the command's process group (it leads one when the login shell exec'd it; else just the PID),
# give it a second, then KILL. kill -0 is true for a zombie too: the wait is bounded.
_KILL_SCRIPT = (
    'p=$1; kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || exit 0; i=0; '
    'while kill -0 "$p" 2>/dev/null && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done; '
    'kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; exit 0'
)


# After the exit status, how long to wait for the output's EOF (a backgrounded child that keeps
# stdout open would otherwise hold the command until its timeout).
_EOF_GRACE_S = 2.0


class _Lost(Exception):
    """The connection broke after the command was sent: its outcome is unknown. dead: the host
    stopped answering (drop the whole connection), not just this channel."""

    def __init__(self, message: str, *, dead: bool = False) -> None:
        super().__init__(message)
        self.dead = dead


def _fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def _pkey_from_bytes(data: bytes, what: str) -> paramiko.PKey:
    """A private key from its text (OpenSSH or PEM), as paramiko.PKey.from_path reads a file. Errors
    name the field, never the content (a parser's message could quote it)."""
    import io

    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise InputError(f"ssh.key_file: {what} is encrypted; etcd-dr needs an unencrypted key") from None
    except (ValueError, paramiko.SSHException) as e:
        why = e.__class__.__name__
        raise InputError(f"ssh.key_file: {what} is not a usable private key ({why})") from None
    classes = (
        (rsa.RSAPrivateKey, paramiko.RSAKey),
        (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
        (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
    )
    for kind, cls in classes:
        if isinstance(loaded, kind):
            try:
                return cls.from_private_key(io.StringIO(data.decode()))
            except (ValueError, paramiko.SSHException) as e:
                raise InputError(
                    f"ssh.key_file: {what} is not a usable private key ({e.__class__.__name__})"
                ) from None
    raise InputError(f"ssh.key_file: {what} is a key type paramiko cannot use; give ed25519, ECDSA or RSA")


def _add_host_keys(keys: paramiko.HostKeys, text: str) -> None:
    """known_hosts lines held in memory, as HostKeys.load reads a file (hashed names included)."""
    import paramiko
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = HostKeyEntry.from_line(line)
        except (paramiko.SSHException, InvalidHostKey, ValueError):  # its message would quote the line
            entry = None
        if entry is None:
            raise InputError(f"ssh.known_hosts: line {n} is not a known_hosts entry; fix it")
        if entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)


class _Forwarder:
    """A loopback port whose every connection is piped through a channel `open_channel` opens (a
    `direct-tcpip` channel: `ssh -L`), by daemon threads, until close(). A channel that cannot be
    opened closes that one connection (the client sees its connection end) and is remembered in
    `last_error`, so a caller can say why."""

    def __init__(self, name: str, target: str, open_channel: Callable[[], paramiko.Channel]) -> None:
        self.name, self.target, self._open = name, target, open_channel
        self.last_error: str | None = None
        self._done = threading.Event()
        self._lsock = socket.create_server(("127.0.0.1", 0))
        self._lsock.settimeout(0.2)
        self.local: tuple[str, int] = self._lsock.getsockname()[:2]
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name=f"{name}-accept")
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pump, args=(conn,), daemon=True, name=self.name).start()

    def _pump(self, conn: socket.socket) -> None:
        import paramiko

        try:
            chan = self._open()
        except (paramiko.SSHException, OSError, EOFError, EtcdDrError) as e:
            self.last_error = str(e) or e.__class__.__name__
            log.debug("%s: channel to %s refused: %s", self.name, self.target, self.last_error)
            conn.close()
            return
        self.last_error = None
        try:
            while not self._done.is_set():
                ready, _, _ = select.select([conn, chan], [], [], 0.2)
                for src, dst in ((conn, chan), (chan, conn)):
                    if src in ready:
                        data = src.recv(65536)
                        if not data:
                            return
                        dst.sendall(data)
        except OSError:
            pass  # either end closed: the client sees its connection end
        finally:
            chan.close()
            conn.close()

    def close(self) -> None:
        self._done.set()
        self._lsock.close()
        self._acceptor.join(1)


class SSHExecutor:
    """Runs commands and moves files on one host over SSH (paramiko).

    - Host keys: only `ssh.known_hosts` is trusted (not ~/.ssh, never auto-added); an unknown or
      changed key raises HostKeyError before anything is sent.
    - Auth: the private key in `ssh.key_file` (a path, or its content held in memory from a Prefect
      block: never written to disk), then, only with `ssh.agent: true`, the ssh-agent's keys; never
      ~/.ssh keys or passwords.
    - Timeouts: connect_timeout bounds connecting (TCP, banner, key exchange, auth: each gets what is
      left of it); timeout/command_timeout bounds a command from exec to exit, enforced here by a
      deadline, because after a power loss paramiko itself would wait forever. Commands run as
      `sh -c 'report PID; exec "$@"' argv` so that one past its deadline can be killed (TERM to its
      process group, KILL a second later) over a new channel; if the host does not even open that
      channel, it is reported as unreachable (TransportError) rather than slow (CommandError).
    - sshd may send the exit status before the last output, so the end of a command is EOF; a
      command whose background child keeps stdout open is returned 2 s after it exited.
    - Connections are opened lazily, reused, and kept alive (`ssh.keepalive`).
    - Retries: a reused connection that turns out dead before the command is sent is replaced once
      (the command never ran, so this is always safe). If the connection breaks after the command
      was sent, nothing is known about it: that is retried once only with run(..., idempotent=True).
      A fresh connect that fails is not retried (the caller's retry policy decides).
    - sudo (host.sudo or ssh.sudo): commands run as `sudo -n -- argv` (never prompts); put/get then go
      through `sh`/`cat` under sudo instead of SFTP.
    """

    # Concurrent commands per connection. OpenSSH's MaxSessions is 10; the SFTP session and a
    # timed-out command's kill take the rest.
    MAX_SESSIONS = 8

    def __init__(
        self,
        host: Host,
        ssh: SshSettings,
        *,
        audit: AuditLog | None = None,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        bastion: Bastion | None = None,
    ) -> None:
        self.host = host.name  # the Executor protocol's host: a name for messages and audit records
        self.target = host
        self.ssh = ssh
        self.audit = audit
        self.connect_timeout = float(ssh.connect_timeout if connect_timeout is None else connect_timeout)
        self.command_timeout = float(ssh.command_timeout if command_timeout is None else command_timeout)
        self.sudo = host.sudo or ssh.sudo
        self.bastion = bastion
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._lock = threading.RLock()  # connect/close; channels themselves are thread-safe
        self._sftp_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.MAX_SESSIONS)

    def __enter__(self) -> SSHExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        via = f" via bastion {self.bastion.address}" if self.bastion is not None else ""
        return f"SSHExecutor({self.host}: {self.target.user}@{self.target.ssh_host}:{self.target.port}{via})"

    # -- connection

    def _key(self) -> paramiko.PKey | None:
        import paramiko

        from etcd_dr.inventory import InMemoryFile

        kf = self.ssh.key_file
        if kf is None:  # ssh.agent only
            if not os.environ.get("SSH_AUTH_SOCK"):
                raise InputError(
                    "ssh.agent: no ssh-agent (SSH_AUTH_SOCK is not set for this process); start one with "
                    "the key added (ssh-agent, ssh-add) in the worker's environment, or give ssh.key_file"
                )
            return None
        if self._pkey is None and isinstance(kf, InMemoryFile):
            register_secret(bytes(kf))  # before parsing: should it ever be echoed, redact() masks it
            self._pkey = _pkey_from_bytes(bytes(kf), str(kf))
        if self._pkey is None:
            path = Path(kf)
            try:
                text = path.read_text()
                self._pkey = paramiko.PKey.from_path(path)
            except FileNotFoundError:
                raise InputError(f"ssh.key_file: {path} does not exist; give the private key") from None
            except paramiko.PasswordRequiredException:
                raise InputError(
                    f"ssh.key_file: {path} is encrypted; etcd-dr needs an unencrypted key"
                ) from None
            except (OSError, ValueError, paramiko.SSHException) as e:
                # Our own words: a parser's message could quote the file.
                raise InputError(
                    f"ssh.key_file: {path} is not a usable private key ({e.__class__.__name__})"
                ) from None
            register_secret(text)  # should it ever be echoed somewhere, redact() masks it
        return self._pkey

    def _connect(self, within: float | None = None) -> paramiko.SSHClient:
        """`within`: a shorter bound than connect_timeout for this one connect (a shared bastion
        connection opened for a probe under a deadline)."""
        import paramiko

        from etcd_dr.inventory import InMemoryFile

        h = self.target
        ct = self.connect_timeout if within is None else min(within, self.connect_timeout)
        kh = self.ssh.known_hosts
        kh = kh if isinstance(kh, InMemoryFile) else Path(kh)
        pkey = self._key()
        client = paramiko.SSHClient()
        # and not load_system_host_keys(): only these keys are trusted
        if isinstance(kh, InMemoryFile):
            _add_host_keys(client.get_host_keys(), bytes(kh).decode(errors="replace"))
        elif not kh.is_file():
            raise HostKeyError(
                self.host, f"known_hosts file {kh} does not exist; create it with verified host keys"
            )
        else:
            client.load_host_keys(str(kh))
        client.set_missing_host_key_policy(_Refuse())
        where = f"{h.ssh_host}:{h.port}"
        t0 = time.monotonic()
        log.debug("%s: connecting to %s@%s", self.host, h.user, where)
        sock: socket.socket | paramiko.Channel
        try:
            if self.bastion is not None:  # a channel through the jump host carries this connection
                sock = self.bastion.channel(h.ssh_host, h.port, timeout=ct, for_host=self.host)
            else:
                sock = socket.create_connection((h.ssh_host, h.port), timeout=ct)
                # Each command is a few small SSH messages (channel open, exec, EOF, close) sent
                # before the last one is acked: with Nagle on, each waits out the peer's delayed ACK
                # (~40 ms). Measured on the lab: `true` 59 -> 8 ms, `docker inspect` 124 -> 24 ms
                # (medians of 15 on a reused connection). OpenSSH's client sets it too.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            raise TransportError(self.host, f"no answer in {ct:g} s from {where}") from None
        except ConnectionRefusedError:
            raise TransportError(self.host, f"{where} refused the connection (is sshd running?)") from None
        except OSError as e:
            raise TransportError(self.host, f"cannot connect to {where}: {e.strerror or e}") from None

        def left() -> float:
            return max(0.2, ct - (time.monotonic() - t0))

        try:
            client.connect(
                h.ssh_host,
                port=h.port,
                username=h.user,
                pkey=pkey,
                sock=sock,
                timeout=left(),
                banner_timeout=left(),
                auth_timeout=left(),
                channel_timeout=left(),
                allow_agent=self.ssh.agent,
                look_for_keys=False,
            )
        except _UnknownHostKey as e:
            client.close()
            if e.known_other:
                raise HostKeyError(
                    self.host,
                    f"host key refused: {e.hostname} offered {_fingerprint(e.key)}, a key type {kh} does "
                    "not list for it; verify the host's keys out of band and fix its line there",
                ) from None
            raise HostKeyError(
                self.host,
                f"host key refused: {e.hostname} ({_fingerprint(e.key)}) is not in {kh}; verify the key "
                f"out of band (ssh-keygen -lf on the host's console) and add it to {kh}",
            ) from None
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(
                self.host,
                f"host key refused: {e.hostname} offered {_fingerprint(e.key)}, which does not match {kh}; "
                f"if the host was reinstalled, verify its new key out of band and replace its line "
                f"(ssh-keygen -R '{e.hostname}' -f {kh}); otherwise the connection may be intercepted",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(
                self.host,
                f"authentication as {h.user} at {where} with {self._auth_means()} failed; "
                "add its public key to the host's authorized_keys",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            what = f"no answer in {ct:g} s" if isinstance(e, TimeoutError | socket.timeout) else str(e)
            raise TransportError(self.host, f"SSH handshake with {where} failed: {what}") from None
        t = client.get_transport()
        assert t is not None
        if self.ssh.keepalive > 0:
            t.set_keepalive(max(1, round(self.ssh.keepalive)))
        log.debug("%s: connected in %.3f s", self.host, time.monotonic() - t0)
        return client

    def _auth_means(self) -> str:
        means = [f"key {self.ssh.key_file}"] if self.ssh.key_file is not None else []
        return " or ".join([*means, "the ssh-agent's keys"] if self.ssh.agent else means)

    def _transport(self, within: float | None = None) -> tuple[paramiko.Transport, bool]:
        """The live transport and whether it was reused (vs. just opened)."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return t, True
                self.close()
            self._client = self._connect(within)
            t = self._client.get_transport()
            assert t is not None
            return t, False

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                with contextlib.suppress(Exception):  # closing a dead connection: nothing to save
                    self._sftp.close()
                self._sftp = None
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- commands

    def _wrap(self, argv: Sequence[str]) -> str:
        # The command reports its PID on stderr's first line (stripped again in _drive), then execs
        # argv unchanged: a timed-out command can then be killed. sshd refuses RFC 4254 "signal"
        # requests in root sessions ("session signalling requires privilege separation"), and closing
        # the channel does not stop a command that has no tty.
        wrapped = ("sh", "-c", _PID_WRAPPER, "etcd-dr", *argv)
        return shlex.join(("sudo", "-n", "--", *wrapped) if self.sudo else wrapped)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: bytes | None = None,
        reason: str = "",
        idempotent: bool = False,
    ) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("empty argv")
        tmo = self.command_timeout if timeout is None else float(timeout)
        log.debug("%s$ %s", self.host, redact(shlex.join(argv)))
        t0 = time.monotonic()
        try:
            rc, bout, berr = self._exec(self._wrap(argv), tmo, stdin, idempotent)
        except TransportError as e:
            dt = time.monotonic() - t0
            log.debug("%s: unreachable after %.3f s: %s", self.host, dt, e)
            audit_command(self.audit, self.host, argv, None, dt, reason, "unreachable")
            raise
        dt = time.monotonic() - t0
        out, err = bout.decode(errors="replace"), berr.decode(errors="replace")
        log.debug("%s: rc=%s in %.3f s", self.host, rc, dt)
        audit_command(self.audit, self.host, argv, rc, dt, reason)
        if rc is None or (check and rc != 0):
            raise command_failure(self.host, argv, rc, err)
        return CommandResult(self.host, argv, rc, out, err, dt)

    def run_streaming(
        self, argv: Sequence[str], on_output: Sink, *, timeout: float | None = None, reason: str = ""
    ) -> CommandResult:
        """Run argv with its stdout handed to on_output as it arrives (a long command's log, e.g.
        `rke up`'s); stderr is collected. Audited like run(); never re-run (part of its output was
        seen). rc None: it outlived its timeout (killed); the result's stdout is empty."""
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("empty argv")
        tmo = self.command_timeout if timeout is None else float(timeout)
        log.debug("%s$ %s", self.host, redact(shlex.join(argv)))
        t0 = time.monotonic()
        try:
            rc, _, berr = self._exec(self._wrap(argv), tmo, None, False, on_output)
        except TransportError:
            audit_command(self.audit, self.host, argv, None, time.monotonic() - t0, reason, "unreachable")
            raise
        dt = time.monotonic() - t0
        audit_command(self.audit, self.host, argv, rc, dt, reason)
        return CommandResult(self.host, argv, -1 if rc is None else rc, "", berr.decode(errors="replace"), dt)

    def _exec(
        self, command: str, timeout: float, stdin: bytes | None, idempotent: bool, sink: Sink | None = None
    ) -> tuple[int | None, bytes, bytes]:
        """`sink`: stdout goes there as it arrives (and b"" is returned), never whole in memory."""
        with self._slots:
            return self._exec_in_slot(command, timeout, stdin, idempotent, sink)

    def _exec_in_slot(
        self, command: str, timeout: float, stdin: bytes | None, idempotent: bool, sink: Sink | None
    ) -> tuple[int | None, bytes, bytes]:
        import paramiko

        for attempt in (1, 2):
            t, reused = self._transport()
            try:
                chan = self._open_channel(t)
            except paramiko.ChannelException as e:
                raise TransportError(
                    self.host, f"the host refused a new session ({e}); too many at once?"
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as e:
                # After a power loss an old transport still says is_active() but opening a channel
                # times out (NOTES). The command never started: replacing a reused connection is safe.
                self.close()
                if attempt == 1 and reused:
                    log.debug("%s: cached connection is dead (%s); reconnecting", self.host, e)
                    continue
                why = str(e) or e.__class__.__name__
                raise TransportError(self.host, f"no session in {self.connect_timeout:g} s ({why})") from None
            try:
                return self._drive(t, chan, command, timeout, stdin, sink)
            except _Lost as e:
                if e.dead or not t.is_active():
                    self.close()  # the connection is gone; a single failed channel does not close it
                if attempt == 1 and idempotent:
                    log.debug("%s: connection lost mid-command (%s); re-running (idempotent)", self.host, e)
                    continue
                raise TransportError(self.host, f"connection lost while the command ran ({e})") from None
        raise AssertionError("unreachable")

    def _open_channel(self, t: paramiko.Transport) -> paramiko.Channel:
        import paramiko

        deadline = time.monotonic() + self.connect_timeout
        delay = 0.02
        while True:
            try:
                return t.open_session(timeout=self.connect_timeout)
            except paramiko.SSHException as e:
                # Refused, with the connection fine: sshd frees a session slot (MaxSessions) a moment
                # after our close. Wait for it; never drop a connection other threads' commands use.
                # (paramiko hands a refusal to whichever thread asks first, so a refused open can
                # surface as a bare "Unable to open channel.": what counts is the transport.)
                if not t.is_active() or "Timeout" in str(e):
                    raise
                if time.monotonic() + delay > deadline:
                    raise paramiko.ChannelException(4, str(e)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _request(self, chan: paramiko.Channel, kind: str, arg: str | None) -> None:
        """Send a channel request ("exec", "subsystem") and wait for the reply within
        connect_timeout. paramiko's exec_command/invoke_subsystem wait without any timeout: a host
        that dies between channel open and reply would hang us forever."""
        import paramiko
        from paramiko.common import cMSG_CHANNEL_REQUEST

        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string(kind)
        m.add_boolean(True)
        if arg is not None:
            m.add_string(arg)
        chan._event_pending()
        chan.transport._send_user_message(m)
        if not chan.event.wait(self.connect_timeout):
            raise _Lost(f"no reply to {kind} in {self.connect_timeout:g} s", dead=True)
        if not chan.event_ready:
            raise _Lost(f"the host refused the {kind} request")

    def _drive(
        self,
        t: paramiko.Transport,
        chan: paramiko.Channel,
        command: str,
        timeout: float,
        stdin: bytes | None,
        sink: Sink | None = None,
    ) -> tuple[int | None, bytes, bytes]:
        import paramiko

        out, err = bytearray(), bytearray()
        keep = sink or out.extend
        try:
            chan.settimeout(max(0.5, min(timeout, self.connect_timeout)))
            self._request(chan, "exec", command)
            deadline = time.monotonic() + timeout
            pending = memoryview(stdin) if stdin else None
            pid: int | None = None
            exited_at = 0.0
            if pending is None:
                chan.shutdown_write()  # EOF on stdin: a command that reads it must not wait for us
            while True:
                busy = False
                if pending is not None and chan.send_ready():
                    n = chan.send(pending[:32768])  # interleaved with reads: no deadlock on full windows
                    pending = pending[n:] if len(pending) > n else None
                    if pending is None:
                        chan.shutdown_write()
                    busy = True
                while chan.recv_ready():
                    keep(chan.recv(65536))
                    busy = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                    if pid is None and b"\n" in err:
                        m = _PID_LINE_RE.match(err)
                        pid = int(m.group(1)) if m else 0  # 0: no PID line (not our wrapper)
                        if m:
                            del err[: m.end()]
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    # sshd may send the exit status before the last output: the end is EOF.
                    if chan.eof_received:
                        break
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > _EOF_GRACE_S:
                        log.warning(
                            "%s: command exited but its output stays open (a background process holding "
                            "stdout/stderr? redirect them): not waiting for it",
                            self.host,
                        )
                        break
                if not t.is_active():
                    raise _Lost("connection closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._timed_out(t, chan, timeout, pid, out, err)
                if not busy:
                    # The channel's fd wakes on stdout data and on close; stderr is polled.
                    select.select([chan], [], [], min(0.05, left))
            rc = chan.recv_exit_status()
            # Wait (briefly) for the server's close before freeing our slot: sshd counts the
            # session against MaxSessions until then, and the next open would be refused.
            until = time.monotonic() + 0.5
            while not chan.closed and time.monotonic() < until:
                select.select([chan], [], [], 0.05)
        except _Lost:
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise _Lost(
                str(e) or e.__class__.__name__, dead=isinstance(e, TimeoutError | socket.timeout)
            ) from None
        finally:
            chan.close()
        # -1: no exit status (killed by a signal, which paramiko does not report separately).
        return rc, bytes(out), bytes(err)

    def _timed_out(
        self,
        t: paramiko.Transport,
        chan: paramiko.Channel,
        timeout: float,
        pid: int | None,
        out: bytearray,
        err: bytearray,
    ) -> tuple[int | None, bytes, bytes]:
        import paramiko

        chan.close()
        # Kill it over a new channel. That is also the liveness probe: slow command or dead host?
        # A live host opens a channel at once.
        kill = ["sh", "-c", _KILL_SCRIPT, "etcd-dr-kill", str(pid or 0)]
        try:
            probe = t.open_session(timeout=min(self.connect_timeout, 2.0))
        except (paramiko.SSHException, OSError, EOFError):
            self.close()
            raise _Lost(
                f"no answer from the host since the command started ({timeout:g} s)", dead=True
            ) from None
        try:
            probe.settimeout(3.0)
            if pid:
                probe.exec_command(shlex.join(("sudo", "-n", "--", *kill) if self.sudo else kill))
                probe.status_event.wait(3.0)  # the script waits 1 s at most; never block on a dead host
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.debug("%s: could not kill the timed-out command (pid %s): %s", self.host, pid, e)
        finally:
            probe.close()
        what = "killed" if pid else "abandoned"
        note = f"\n(etcd-dr: {what} after its timeout of {timeout:g} s)"
        return None, bytes(out), bytes(err) + note.encode()

    # -- files

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        """Write atomically: a temp file beside the target (created with mode, never wider), then
        rename over it. Idempotent, so a broken connection is retried once."""
        t0 = time.monotonic()
        outcome = "failed"
        try:
            if self.sudo:
                self._put_sudo(data, remote_path, mode)
            else:
                self._with_sftp(
                    lambda sftp: self._put_sftp(sftp, data, remote_path, mode), f"put {remote_path}"
                )
            outcome = "ok"
        except TransportError:
            outcome = "unreachable"
            raise
        finally:
            dt = time.monotonic() - t0
            log.debug(
                "%s: put %s (%d bytes, %04o): %s in %.3f s",
                self.host,
                remote_path,
                len(data),
                mode,
                outcome,
                dt,
            )
            audit_put(self.audit, self.host, remote_path, mode, len(data), dt, reason, outcome)

    @contextlib.contextmanager
    def tunnel(self, address: str, port: int) -> Iterator[tuple[str, int]]:
        """A loopback port whose connections this host's sshd makes to address:port (a direct-tcpip
        channel each, as `ssh -L`), pumped by daemon threads until the block ends. Audited: what was
        reached through which host."""
        t, _ = self._transport()

        def open_channel() -> paramiko.Channel:
            return t.open_channel(
                "direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=self.connect_timeout
            )

        fwd = _Forwarder(f"tunnel-{self.host}", f"{address}:{port}", open_channel)
        t0 = time.monotonic()
        try:
            yield fwd.local
        finally:
            fwd.close()
            if self.audit is not None:
                self.audit.event(
                    host=self.host, action="tunnel", outcome="closed", reason=f"to {address}:{port}",
                    duration_s=round(time.monotonic() - t0, 3),
                )  # fmt: skip

    def get(self, remote_path: str) -> bytes:
        log.debug("%s: get %s", self.host, remote_path)
        if self.sudo:
            rc, out, err = self._exec_bytes(["cat", "--", remote_path])
            if rc != 0:
                raise command_failure(self.host, ["cat", remote_path], rc, err.decode(errors="replace"))
            return out

        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(remote_path, "rb") as f:
                f.prefetch()
                return f.read()

        return self._with_sftp(read, f"get {remote_path}")

    def get_to(self, remote_path: str, local_path: Path, *, reason: str = "") -> int:
        """Copy a (possibly large) file from the host to local_path, streamed (over SFTP; under sudo
        through `cat`, written as it arrives): memory stays flat; landed atomically; returns its size."""
        t0 = time.monotonic()
        log.debug("%s: get %s -> %s", self.host, remote_path, local_path)

        def fetch(tmp: Path) -> None:
            if self.sudo:  # `cat` under sudo, streamed into the file (a db can be gigabytes)
                with open(tmp, "wb") as f:
                    rc, _, err = self._exec_bytes(["cat", "--", remote_path], idempotent=False, sink=f.write)
                if rc != 0:
                    raise command_failure(self.host, ["cat", remote_path], rc, err.decode(errors="replace"))
            else:
                self._with_sftp(lambda sftp: sftp.get(remote_path, str(tmp)), f"get {remote_path}")

        size = _land(local_path, fetch)
        audit_get(self.audit, self.host, remote_path, size, time.monotonic() - t0, reason)
        return size

    def _with_sftp(self, fn, what: str):
        import paramiko

        for attempt in (1, 2):
            with self._sftp_lock:
                try:
                    with self._lock:
                        if self._sftp is None:
                            # Not SFTPClient.from_transport: its subsystem request waits forever on
                            # a host that died; _request bounds it.
                            t, _ = self._transport()
                            chan = self._open_channel(t)
                            chan.settimeout(self.command_timeout)
                            try:
                                self._request(chan, "subsystem", "sftp")
                            except _Lost as e:
                                chan.close()
                                raise paramiko.SSHException(str(e)) from None
                            self._sftp = paramiko.SFTPClient(chan)
                        sftp = self._sftp
                    return fn(sftp)
                except OSError as e:
                    if isinstance(e, TimeoutError | socket.timeout):
                        self.close()
                        if attempt == 1:
                            continue
                        raise TransportError(
                            self.host, f"{what}: no answer in {self.command_timeout:g} s"
                        ) from None
                    if e.errno is None:
                        # paramiko's "Socket is closed": the channel went away under us (another
                        # thread's timeout closed the connection): a lost connection, retried once
                        self.close()
                        if attempt == 1:
                            continue
                        raise TransportError(self.host, f"{what}: connection lost ({e})") from None
                    # The SFTP server answered: the file operation itself failed.
                    raise CommandError(self.host, what, 1, e.strerror or str(e)) from None
                except (paramiko.SSHException, EOFError) as e:
                    self.close()
                    if attempt == 1:
                        continue
                    raise TransportError(self.host, f"{what}: connection lost ({e})") from None
        raise AssertionError("unreachable")

    def _put_sftp(self, sftp: paramiko.SFTPClient, data: bytes, path: str, mode: int) -> None:
        from paramiko import SFTPAttributes, SFTPFile
        from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE

        d, base = posixpath.split(path)
        tmp = posixpath.join(d, f".{base}.{secrets.token_hex(4)}.part")
        # paramiko's open() sends no permissions, so the file would start as 0666 & umask: a reader
        # could open it before the chmod. Send the mode in the OPEN request (sftp-server honours it).
        attrs = SFTPAttributes()
        attrs.st_mode = mode & 0o777
        kind, msg = sftp._request(CMD_OPEN, tmp, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL, attrs)
        if kind != CMD_HANDLE:
            raise OSError(f"unexpected SFTP reply to open {tmp}")
        try:
            with SFTPFile(sftp, msg.get_binary(), "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            sftp.chmod(tmp, mode)  # exact mode: the open was subject to the server's umask
            sftp.posix_rename(tmp, path)  # atomic replace (plain SFTP rename refuses an existing target)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                sftp.remove(tmp)
            raise

    def _put_sudo(self, data: bytes, path: str, mode: int) -> None:
        d, base = posixpath.split(path)
        tmp = posixpath.join(d, f".{base}.{secrets.token_hex(4)}.part")
        script = 'umask 077; cat > "$1" && chmod "$2" "$1" && mv -f "$1" "$3" || { rm -f "$1"; exit 1; }'
        argv = ["sh", "-c", script, "sh", tmp, f"{mode:04o}", path]
        rc, _, err = self._exec_bytes(argv, stdin=data, idempotent=True)
        if rc != 0:
            raise command_failure(self.host, ["put", path], rc, err.decode(errors="replace"))

    def _exec_bytes(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        idempotent: bool = True,
        sink: Sink | None = None,
    ) -> tuple[int | None, bytes, bytes]:
        """For put/get under sudo: like run() but bytes out (or into `sink`), no audit of its own (the
        caller's put/get record stands for it). With a sink, never re-run: it has had part of it."""
        rc, out, err = self._exec(self._wrap(argv), self.command_timeout, stdin, idempotent, sink)
        if rc is None:
            raise command_failure(self.host, argv, None, err.decode(errors="replace"))
        return rc, out, err


class Bastion:
    """The jump host (inventory `bastion:`, RKE's bastion_host) that every connection to a host of
    the cluster goes through: each host's sshd (the SSH connection runs inside a `direct-tcpip`
    channel, as `ssh -J`) and each member's etcd client port (a loopback forward per member, which
    the etcd client dials while TLS still checks the member's certificate for its own address).

    One SSH connection to the bastion, shared by every executor and etcd client of the process
    (bastion_for), opened on first use and again after it broke. Its host key is checked against
    its known_hosts like any host's. A failure that is the bastion's (no answer, auth, host key) is
    raised naming the bastion, for the host that was being reached."""

    def __init__(
        self,
        settings: BastionSettings,
        ssh: SshSettings,
        *,
        audit: AuditLog | None = None,
        dial_timeout: float = 2.0,
    ) -> None:
        from etcd_dr.inventory import Host, Role

        self.settings = settings
        self.address = f"{settings.address}:{settings.port}"
        self.where = f"the bastion {self.address}"  # for messages
        own = dataclasses.replace(
            ssh,
            user=settings.user,
            port=settings.port,
            key_file=settings.key_file if settings.key_file is not None else ssh.key_file,
            known_hosts=settings.known_hosts if settings.known_hosts is not None else ssh.known_hosts,
            sudo=False,  # it runs no command: it only opens channels
        )
        host = Host(
            "bastion", settings.address, frozenset({Role.WORKER}), user=settings.user, port=settings.port
        )
        self._ssh = SSHExecutor(host, own, audit=audit)
        self._lock = threading.Lock()
        self._connecting = threading.Lock()
        self._failed: tuple[float, TransportError] | None = None  # the last failed connect: when, why
        self._forwards: dict[tuple[str, int], _Forwarder] = {}
        # a forwarded connection (etcd's) waits no longer than etcd's own dial would
        self.dial_timeout = min(dial_timeout, self._ssh.connect_timeout)

    def __repr__(self) -> str:
        return f"Bastion({self.settings.user}@{self.address})"

    def _fail(self, for_host: str, e: TransportError) -> TransportError:
        """The bastion's own failure, reworded for the host that was being reached through it."""
        why = str(e).removeprefix(f"{self._ssh.host} unreachable: ").removeprefix(f"{self._ssh.host}: ")
        cls = HostKeyError if isinstance(e, HostKeyError) else TransportError
        return cls(for_host, f"through {self.where}: {why}")

    def channel(self, address: str, port: int, *, timeout: float, for_host: str) -> paramiko.Channel:
        """A channel whose other end is address:port as the bastion dials it, within timeout (the
        bastion's connect, when it is not open yet, included)."""
        import paramiko

        t0 = time.monotonic()
        with self._connecting:
            # A connect that failed while this caller waited for it is this caller's answer too:
            # N hosts probed at once behind a dead bastion cost one connect timeout, not N.
            if self._failed is not None and self._failed[0] >= t0:
                raise self._fail(for_host, self._failed[1])
            try:
                t, _ = self._ssh._transport(within=timeout)
            except TransportError as e:
                self._failed = (time.monotonic(), e)
                raise self._fail(for_host, e) from None
            except InputError as e:  # its key: name the field it came from
                if self.settings.key_file is None:
                    raise
                raise InputError(str(e).replace("ssh.key_file:", "bastion.key_file:", 1)) from None
        left = max(0.2, timeout - (time.monotonic() - t0))
        try:
            return t.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=left)
        except paramiko.ChannelException as e:  # the bastion answered: it could not connect
            raise TransportError(
                for_host,
                f"{self.where} could not connect to {address}:{port} ({e.text or e.code}); "
                "is the host up, and its port open to the bastion?",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            # No answer in time: the host is slow to answer the bastion's connect (powered off), or
            # the bastion itself died under a connection that still looks open. A live bastion
            # opens a session at once.
            if not self._alive(t, min(left, 1.0)):
                self._ssh.close()
                raise TransportError(
                    for_host, f"through {self.where}: the bastion stopped answering ({e})"
                ) from None
            raise TransportError(
                for_host,
                f"no answer in {left:g} s from {address}:{port} (reached through {self.where})",
            ) from None

    @staticmethod
    def _alive(t: paramiko.Transport, timeout: float) -> bool:
        import paramiko

        try:
            t.open_session(timeout=timeout).close()
            return True
        except (paramiko.SSHException, OSError, EOFError):
            return False

    def forward(self, address: str, port: int) -> tuple[str, int]:
        """A loopback (address, port) on this machine whose connections reach address:port through
        the bastion; made once per target and kept for the process (an etcd client reconnects to it)."""
        with self._lock:
            fwd = self._forwards.get((address, port))
            if fwd is None:
                target = f"{address}:{port}"

                def open_channel() -> paramiko.Channel:
                    return self.channel(address, port, timeout=self.dial_timeout, for_host=target)

                fwd = self._forwards[(address, port)] = _Forwarder(f"bastion-{target}", target, open_channel)
            return fwd.local

    def why_not(self, address: str, port: int) -> str | None:
        """Why the last connection through the forward to address:port could not be made, if it could not."""
        fwd = self._forwards.get((address, port))
        return fwd.last_error if fwd is not None else None

    def close(self) -> None:
        with self._lock:
            forwards, self._forwards = list(self._forwards.values()), {}
        for f in forwards:
            f.close()
        self._ssh.close()


_BASTIONS: dict[tuple, Bastion] = {}
_BASTIONS_LOCK = threading.Lock()


def bastion_for(inv: Inventory, *, audit: AuditLog | None = None) -> Bastion | None:
    """The inventory's bastion, one per process and set of bastion credentials (shared: one SSH
    connection to the jump host carries every host's); None when the inventory has none."""
    b = inv.bastion
    if b is None:
        return None
    key = (b, inv.ssh.key_file, inv.ssh.known_hosts, inv.ssh.agent)
    with _BASTIONS_LOCK:
        found = _BASTIONS.get(key)
        if found is None:
            audit = audit if audit is not None else audit_log_for(inv)
            found = _BASTIONS[key] = Bastion(b, inv.ssh, audit=audit, dial_timeout=inv.etcd.dial_timeout)
        return found


def close_bastions() -> None:
    """Close every shared bastion connection and its forwards (tests; a process that is done)."""
    with _BASTIONS_LOCK:
        found = list(_BASTIONS.values())
        _BASTIONS.clear()
    for b in found:
        b.close()


def executor_for(
    inv: Inventory, host: Host | str, *, audit: AuditLog | None = None, connect_timeout: float | None = None
) -> SSHExecutor:
    """The one way the core reaches a host of a cluster: SSH with the inventory's settings (through
    its bastion when it has one), every command recorded in the inventory's audit log.
    `connect_timeout`: a shorter bound for a look under a deadline (never longer than the inventory's)."""
    h = inv.host(host) if isinstance(host, str) else host
    t = inv.ssh.connect_timeout if connect_timeout is None else min(connect_timeout, inv.ssh.connect_timeout)
    audit = audit if audit is not None else audit_log_for(inv)
    return SSHExecutor(h, inv.ssh, audit=audit, connect_timeout=t, bastion=bastion_for(inv, audit=audit))
