"""The project's error types: each says what went wrong, where, and what to do.

Messages never carry secrets (keys, tokens); callers pass only names and paths.
"""

from __future__ import annotations


class EtcdDrError(Exception):
    """Base of every error etcd-dr raises on purpose."""


class InputError(EtcdDrError):
    """Bad input from the operator (inventory, flags). Nothing on any host was touched. Exit code 2."""


class TransportError(EtcdDrError):
    """The host could not be reached or the connection broke: nothing is known about the command."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host} unreachable: {message}")
        self.host = host


class HostKeyError(TransportError):
    """The host presented a key that is not the one in known_hosts (or none is known): refused."""

    def __init__(self, host: str, message: str) -> None:
        EtcdDrError.__init__(self, f"{host}: {message}")
        self.host = host


class CommandError(EtcdDrError):
    """The command ran on the host and failed (non-zero exit or a timeout while it ran)."""

    def __init__(self, host: str, command: str, rc: int | None, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-3:] if stderr else []
        what = "timed out" if rc is None else f"exited {rc}"
        detail = (": " + " | ".join(tail)) if tail else ""
        super().__init__(f"{host}: `{command}` {what}{detail}")
        self.host = host
        self.command = command
        self.rc = rc
        self.stderr = stderr
