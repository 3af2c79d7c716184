"""Append-only, hash-chained audit log (JSONL) and secret redaction.

One record per command run on a host and per membership change, one JSON object a line:

    {"time": "2026-11-27T09:41:00.123456Z", "seq": 7, "flow_run_id": "...", "cluster": "lab",
     "host": "master1", "action": "command", "argv": ["docker", "stop", "etcd"], "rc": 0,
     "duration_s": 0.052, "outcome": "ok", "reason": "...", "prev": "<sha256>", "hash": "<sha256>"}

`prev` is the sha256 of the previous line's exact bytes (without its newline; the first line uses
the sha256 of the empty string), so a removed, inserted, reordered or edited line breaks the chain at
the line after it. `hash` is the sha256 of the line's own bytes before `,"hash":...}`, so an edit is
also caught on the edited line itself (and on the last line, which has no successor). Cutting lines off
the end cannot be seen from the file alone: keep `VerifyResult.last_hash` elsewhere to anchor it.

Writers serialize with a lock (threads) and `fcntl.flock` on the file (processes), and read the last
line under the lock to chain. Everything written passes through `redact` first.
"""

from __future__ import annotations

import contextvars
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etcd_dr.inventory import Inventory

#: Set by the Prefect layer around a flow run; the core only reads it (it never imports prefect).
current_flow_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_flow_run_id", default=None
)

GENESIS = hashlib.sha256(b"").hexdigest()
MASK = "***"
OUTCOMES = ("ok", "failed", "timeout", "unreachable", "refused", "skipped")

# ---------------------------------------------------------------------------------------------
# Redaction

# Whole PEM private-key blocks (any type: RSA, EC, OPENSSH, ENCRYPTED...); an unterminated block
# (a truncated echo) is masked to the end of the text.
_PEM_RE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----(?:.*?-----END \1-----|.*\Z)",
    re.DOTALL,
)
# Flag names that mean a secret value (`--password=x`, `--auth-token x`, `--key-data=...`). A flag
# naming a *file* (`--key=/etc/.../key.pem`) is not a secret: paths stay readable.
_SECRET_WORDS = "password|passwd|passphrase|token|secret|key-data|api-key|apikey|credential"
# etcd's --initial-cluster-token only tells clusters apart; masking it would hide what ran.
_NOT_SECRET = r"(?!--initial-cluster-token(?![\w-]))"
_SECRET_FLAG = rf"{_NOT_SECRET}--?[A-Za-z0-9_.-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.-]*"
_SECRET_FLAG_RE = re.compile(rf"(?i)(?<![\w-])({_SECRET_FLAG})(=|[ \t]+)(?!-)(\S+)")
_SECRET_FLAG_ALONE_RE = re.compile(rf"(?i)^{_SECRET_FLAG}$")
# etcdctl --user=name:password
_USER_PASS_RE = re.compile(r"(?<![\w-])(--user)(=|[ \t]+)([^:\s]+):(\S+)")
# ETCDCTL_PASSWORD=x, AWS_SECRET_ACCESS_KEY=x, GITHUB_TOKEN=x
_ENV_SECRET_RE = re.compile(r"\b([A-Z0-9_]*(?:PASSWORD|PASSWD|TOKEN|SECRET|PRIVATE_KEY)[A-Z0-9_]*)=(\S+)")
_AUTH_HEADER_RE = re.compile(r"(?i)\b((?:proxy-)?authorization)(\s*:\s*)[^\r\n\"']+")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 4  # shorter strings would mask ordinary words


def register_secret(secret: str | bytes | None) -> None:
    """Mask this exact string wherever it appears in anything redacted from now on (process-wide).

    A multi-line secret (a PEM key) also registers each of its longer lines, so a partial echo of it
    (one line of base64 in an error message) is masked too."""
    if not secret:
        return
    if isinstance(secret, bytes):
        secret = secret.decode(errors="replace")
    # PEM armor lines ("-----BEGIN ... KEY-----") are not secret, and masking them would hide the
    # block from the PEM rule in redact().
    lines = [ln.strip() for ln in secret.splitlines()]
    parts = {ln for ln in lines if len(ln) >= 16 and not ln.startswith("-----")}
    if any(ln and not ln.startswith("-----") for ln in lines):  # not armor alone (a stub key file)
        parts.add(secret.strip())
    with _secrets_lock:
        _secrets.update(p for p in parts if len(p) >= _MIN_SECRET_LEN)


def redact(text: str) -> str:
    """Mask secrets in free text: PEM private keys, secret-named flags and env vars, Authorization
    headers, and registered secret strings."""
    if not text:
        return text
    # PEM blocks first: a registered secret masked inside one must not break the block's match.
    text = _PEM_RE.sub(lambda m: f"-----BEGIN {m.group(1)}-----{MASK}-----END {m.group(1)}-----", text)
    with _secrets_lock:
        registered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    for s in registered:
        if s in text:
            text = text.replace(s, MASK)
    text = _USER_PASS_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}:{MASK}", text)
    text = _SECRET_FLAG_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _ENV_SECRET_RE.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _AUTH_HEADER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


def redact_argv(argv: Iterable[str]) -> list[str]:
    """Redact each argument; a secret-named flag given as its own argument masks the next one
    (`["--password", "x"]`, `["--user", "root:x"]`)."""
    out: list[str] = []
    mask_next = user_next = False
    for a in argv:
        a = str(a)
        if mask_next:
            out.append(MASK)
        elif user_next:
            out.append(a.split(":", 1)[0] + ":" + MASK if ":" in a else a)
        else:
            out.append(redact(a))
        mask_next = bool(_SECRET_FLAG_ALONE_RE.match(a)) and not mask_next
        user_next = a == "--user"
    return out


# ---------------------------------------------------------------------------------------------
# Writing


class AuditLog:
    """Append-only JSONL audit log at `path` (created 0600 with its directory if missing)."""

    def __init__(self, path: str | Path, *, cluster: str | None = None, fsync: bool = True) -> None:
        self.path = Path(path)
        self.cluster = cluster
        self.fsync = fsync  # an audit record that a crash can lose is not much of a record
        self._lock = threading.Lock()

    def command(
        self,
        *,
        host: str,
        argv: Sequence[str],
        rc: int | None,
        duration_s: float,
        reason: str = "",
        outcome: str | None = None,
    ) -> dict:
        """Record one command run on a host. rc None means it timed out (unless outcome says otherwise)."""
        if outcome is None:
            outcome = "timeout" if rc is None else ("ok" if rc == 0 else "failed")
        return self._append(
            host=host,
            action="command",
            argv=redact_argv(argv),
            rc=rc,
            duration_s=round(duration_s, 4),
            outcome=outcome,
            reason=reason,
            details={},
        )

    def event(self, *, host: str, action: str, outcome: str, reason: str = "", **details: object) -> dict:
        """Record a non-command event: a file put, a member add/remove/promote, a decision."""
        argv = details.pop("argv", None)
        rc = details.pop("rc", None)
        duration_s = details.pop("duration_s", None)
        return self._append(
            host=host,
            action=action,
            argv=redact_argv(argv) if argv is not None else None,  # type: ignore[arg-type]
            rc=rc,
            duration_s=round(duration_s, 4) if isinstance(duration_s, float) else duration_s,
            outcome=outcome,
            reason=reason,
            details=details,
        )

    def _append(self, *, host, action, argv, rc, duration_s, outcome, reason, details) -> dict:
        body: dict = {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "seq": 0,  # filled under the lock
            "flow_run_id": current_flow_run_id.get(),
            "cluster": self.cluster,
            "host": host,
            "action": action,
            "argv": argv,
            "rc": rc,
            "duration_s": duration_s,
            "outcome": outcome,
            "reason": redact(reason),
        }
        for k, v in details.items():
            if k not in body:
                body[k] = _redact_value(v)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
                last, last_seq, needs_nl = _last_line(fd)
                body["seq"] = last_seq + 1
                body["prev"] = hashlib.sha256(last).hexdigest() if last is not None else GENESIS
                line = _seal(body)
                # A torn last line (crash mid-write) stays as it is and verify() names it; ours
                # starts on a line of its own.
                os.write(fd, (b"\n" if needs_nl else b"") + line + b"\n")
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return json.loads(line)


def _redact_value(v: object) -> object:
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, list | tuple):
        return [_redact_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _redact_value(x) for k, x in v.items()}
    if v is None or isinstance(v, bool | int | float):
        return v
    return redact(str(v))


def _seal(body: dict) -> bytes:
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    digest = hashlib.sha256(raw).hexdigest()
    return raw[:-1] + f',"hash":"{digest}"}}'.encode()


def _last_line(fd: int) -> tuple[bytes | None, int, bool]:
    """(last line's bytes without newline or None if empty, its seq, whether the file lacks a final
    newline). Reads backwards from the end, so cost does not grow with the file."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, 0, False
    needs_nl = os.pread(fd, 1, size - 1) != b"\n"
    end = size if needs_nl else size - 1  # the last line's content is [.., end)
    buf = b""
    pos = end
    while pos > 0:
        step = min(8192, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        cut = buf.rfind(b"\n")
        if cut != -1:
            buf = buf[cut + 1 :]
            break
    last = buf
    try:
        seq = int(json.loads(last)["seq"])
    except (ValueError, KeyError, TypeError):
        # Unreadable last line: number after however many lines there are.
        seq = sum(1 for _ in _iter_lines(fd))
    return last, seq, needs_nl


def _iter_lines(fd: int) -> Iterable[bytes]:
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        yield from f


# ---------------------------------------------------------------------------------------------
# Verifying

_HASH_SUFFIX_RE = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int  # lines that verified
    first_bad_line: int | None = None  # 1-based
    reason: str = ""
    last_hash: str | None = None  # sha256 of the last good line: anchor it elsewhere to detect truncation


def verify(path: str | Path) -> VerifyResult:
    """Check every line's own hash, its link to the line before and the sequence numbers."""
    prev = GENESIS
    n = 0
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return VerifyResult(True, 0)
    lines = data.split(b"\n")
    complete = lines[-1] == b""
    if complete:
        lines.pop()
    for i, line in enumerate(lines, start=1):
        problem = _check_line(line, i, prev, n + 1, last=i == len(lines) and not complete)
        if problem:
            return VerifyResult(False, n, i, problem, prev if n else None)
        prev = hashlib.sha256(line).hexdigest()
        n += 1
    return VerifyResult(True, n, None, "", prev)


def _check_line(line: bytes, i: int, prev: str, seq: int, *, last: bool) -> str:
    """Why line i is bad, or "" if it is good."""
    if last:
        return "last line is incomplete (no newline): a write was cut off"
    m = _HASH_SUFFIX_RE.search(line)
    if not m:
        return "not an audit record (no hash field at the end)"
    if hashlib.sha256(line[: m.start()] + b"}").hexdigest() != m.group(1).decode():
        return "record was changed after it was written (its hash does not match)"
    try:
        rec = json.loads(line)
    except ValueError as e:
        return f"not valid JSON ({e})"
    if rec.get("prev") != prev:
        what = "the start of the log" if i == 1 else f"line {i - 1}"
        return f"prev does not match {what}: a line was removed, inserted or reordered before it"
    if rec.get("seq") != seq:
        return f"seq is {rec.get('seq')!r}, expected {seq}"
    return ""


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets (redact()) in every record it sees: attach it to handlers
    that ship logs elsewhere (Prefect's console and API handlers), so a key that reaches a log call
    by mistake still never leaves the process."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # the formatted traceback carries the exception's text: format it now, redacted
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def redact_log_handlers(*loggers: logging.Logger) -> int:
    """Attach one RedactingFilter to every handler of these loggers (idempotent); returns how many
    handlers got it."""
    added = 0
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in h.filters):
                h.addFilter(RedactingFilter())
                added += 1
    return added


def audit_log_for(inv: Inventory) -> AuditLog | None:
    """The inventory's audit log, or None when it names none. Here, not in the executor (which
    re-exports it): a snapshot writes audit records without importing SSH's machinery."""
    return AuditLog(inv.audit_log, cluster=inv.cluster) if inv.audit_log else None
