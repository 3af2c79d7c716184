"""What a readiness check finds: frozen results, and the raw facts gathered before judging them."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcd_dr.deltalog.stream import StreamStatus
from etcd_dr.etcd.client import Alarm
from etcd_dr.hostcare import ClockSample
from etcd_dr.snapshots import SnapshotRecord
from etcd_dr.state import ClusterState


class Check(enum.StrEnum):
    QUORUM = "quorum"
    FORK = "fork"  # in place of quorum when the members form two clusters that each lead
    ALARMS = "alarms"
    LEARNER = "learner"
    SNAPSHOT = "snapshot"
    DELTALOG = "deltalog"  # only where a delta log watcher has run (its status.json exists)
    CERT = "cert"
    CLOCK = "clock"
    DISK = "disk"
    SSH = "ssh"  # only a refusal: the other probes of a host tell that it answers


@dataclass(frozen=True)
class CheckResult:
    """One finding. critical: whether this result, when not ok, makes the cluster "not ready"
    (exit 1, the flow fails); a non-critical failure is a warning."""

    check: Check
    host: str | None  # None: about the cluster as a whole
    ok: bool
    critical: bool
    detail: str  # one sentence: what was found
    hint: str = ""  # what to do about it (failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": str(self.check),
            "host": self.host,
            "ok": self.ok,
            "critical": self.critical,
            "detail": self.detail,
            "hint": self.hint,
        }


def result_word(ok: bool, critical: bool) -> str:
    """How a result reads in a table or an artifact: ok, FAIL (critical) or warn."""
    return "ok" if ok else ("FAIL" if critical else "warn")


def passed(check: Check, host: str | None, detail: str, *, critical: bool = True) -> CheckResult:
    return CheckResult(check, host, True, critical, detail)


def failed(check: Check, host: str | None, detail: str, hint: str, *, critical: bool = True) -> CheckResult:
    return CheckResult(check, host, False, critical, detail, hint)


@dataclass(frozen=True)
class Readiness:
    cluster: str
    checked_at: dt.datetime
    results: tuple[CheckResult, ...]
    deadline_s: float
    duration_s: float = field(compare=False, default=0.0)

    @property
    def critical_failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.ok and r.critical)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.ok and not r.critical)

    @property
    def ok(self) -> bool:
        return not self.critical_failures

    @property
    def summary(self) -> str:
        """One sentence: `not ready: 1 critical failure (cert master1); 1 warning (learner)`."""

        def names(rs: tuple[CheckResult, ...]) -> str:
            return ", ".join(f"{r.check} {r.host}" if r.host else str(r.check) for r in rs)

        crit, warn = self.critical_failures, self.warnings
        w = f"; {len(warn)} warning{'s' * (len(warn) != 1)} ({names(warn)})" if warn else ""
        if crit:
            return f"not ready: {len(crit)} critical failure{'s' * (len(crit) != 1)} ({names(crit)}){w}"
        return f"ready: {len(self.results) - len(warn)} of {len(self.results)} checks ok{w}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "critical_failures": len(self.critical_failures),
            "warnings": len(self.warnings),
            "summary": self.summary,
            "cluster": self.cluster,
            "checked_at": self.checked_at.isoformat(),
            "deadline_s": self.deadline_s,
            "duration_s": round(self.duration_s, 3),
            "results": [r.to_json() for r in self.results],
        }


class FailCause(enum.StrEnum):
    ERROR = "error"
    DEADLINE = "deadline"
    # SSH refused the host's key (changed or unknown): nothing was read from the host, so its
    # certificates, clock and disk are unknown, not broken
    HOST_KEY = "host-key"


@dataclass(frozen=True)
class Failed:
    """A probe that raised, or did not answer before the deadline."""

    reason: str
    cause: FailCause = FailCause.ERROR


class CertKind(enum.StrEnum):
    MEMBER = "member"
    CA = "ca"


@dataclass(frozen=True)
class CertFile:
    """A certificate file as read from a host (PEM; never its key)."""

    host: str
    kind: CertKind
    path: str
    pem: bytes | None  # None when it could not be read (error says why)
    error: str | None = None


@dataclass(frozen=True)
class DiskFree:
    host: str
    path: str  # what df was asked about: the data dir, or its nearest existing parent
    mount: str
    avail: int  # bytes
    size: int


@dataclass(frozen=True)
class Gathered:
    """Raw results of one readiness round, before any judgement: the input of assess()."""

    state: ClusterState | Failed
    alarms: tuple[Alarm, ...] | Failed
    snapshot: SnapshotRecord | Failed | None
    clocks: Mapping[str, ClockSample | Failed]  # every host
    certs: Mapping[str, tuple[CertFile, ...] | Failed]  # etcd hosts
    disks: Mapping[str, DiskFree | Failed]  # etcd hosts
    snapshot_dir: Path
    deadline_s: float
    started: float
    finished: float
    deltalog: StreamStatus | Failed | None = None  # None: no watcher ever ran for this inventory
