"""Alertmanager's webhook, decided: parse and validate a notification (version "4"), map its alerts to
clusters, and keep one incident per cluster. Pure except for the incident file; no Prefect, no HTTP.

An incident is a cluster's firing episode: it opens with the first firing alert of a watched name
for that cluster and closes when every alert that fired in it has been resolved. Alertmanager's
repeats (every repeat_interval), a group's other alerts (fan-out), resends after a failed delivery
and the same notification to two receivers all land in the open incident: one incident, one event,
one recovery run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

#: The etcd mixin's alerts that mean a control plane may be losing its etcd (etcd-io/etcd
#: contrib/mixin): etcdInsufficientMembers (critical, for 3m), etcdNoLeader (critical, 1m),
#: etcdMembersDown (warning, 20m). More names come from --alert-name.
MIXIN_ALERTS = ("etcdInsufficientMembers", "etcdNoLeader", "etcdMembersDown")

#: An open incident that no notification has named for this long is closed as stale: Alertmanager
#: repeats a firing group every repeat_interval (4 h by default), so silence this long means its
#: resolution was lost (an Alertmanager restart without its data), and the next firing is new.
STALE_AFTER_S = 6 * 3600
INCIDENTS_FILE = "receiver-incidents.json"  # in the server's data directory


class BadRequest(Exception):
    """A notification refused: `status` (400, 413, 415, 422) and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    status: AlertStatus
    name: str
    labels: dict[str, str]
    key: str  # Alertmanager's fingerprint, else a hash of the labels: one alert across notifications


@dataclass(frozen=True)
class Notification:
    receiver: str
    status: AlertStatus
    group_key: str
    alerts: tuple[Alert, ...]


def _field(obj: dict, name: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    if name not in obj:
        if required:
            raise BadRequest(422, f"{where}{name}: missing; Alertmanager's webhook (version 4) sends it")
        return None
    v = obj[name]
    if not isinstance(v, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequest(422, f"{where}{name}: expected {want}, got {type(v).__name__}")
    return v


def _labels(v: object, where: str) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise BadRequest(422, f"{where}: expected an object of string labels")
    return v


def _status(v: str, where: str) -> AlertStatus:
    try:
        return AlertStatus(v)
    except ValueError:
        raise BadRequest(422, f"{where}: {v[:40]!r} is not firing or resolved") from None


def parse_notification(body: bytes, content_type: str | None) -> Notification:
    """A webhook body, checked field by field (BadRequest names the first bad one)."""
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, f"Content-Type: {content_type[:60]!r}; send application/json")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(
            400, f"body: not JSON ({e.__class__.__name__}); send Alertmanager's webhook JSON"
        ) from None
    if not isinstance(data, dict):
        raise BadRequest(422, "body: expected a JSON object (Alertmanager's webhook, version 4)")
    version = _field(data, "version", str, "")
    if version != "4":
        raise BadRequest(422, f"version: {version[:20]!r}; this receiver reads Alertmanager's version 4")
    status = _status(_field(data, "status", str, ""), "status")
    raw = _field(data, "alerts", list, "")
    alerts = []
    for i, a in enumerate(raw):
        where = f"alerts[{i}]."
        if not isinstance(a, dict):
            raise BadRequest(422, f"alerts[{i}]: expected an object")
        st = _status(_field(a, "status", str, where), f"{where}status")
        labels = _labels(_field(a, "labels", dict, where), f"{where}labels")
        name = labels.get("alertname")
        if not name:
            raise BadRequest(422, f"{where}labels.alertname: missing; every Alertmanager alert has one")
        fp = _field(a, "fingerprint", str, where, required=False)
        key = fp or hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
        alerts.append(Alert(st, name, labels, key))
    return Notification(
        receiver=str(data.get("receiver", ""))[:200],
        status=status,
        group_key=str(data.get("groupKey", ""))[:500],
        alerts=tuple(alerts),
    )


@dataclass(frozen=True)
class Mapping:
    """Which alerts count and how an alert names its cluster."""

    alert_names: frozenset[str]
    label: str
    clusters: frozenset[str]


@dataclass(frozen=True)
class Sorted:
    """A notification's alerts by cluster; the rest with why they were ignored."""

    by_cluster: dict[str, list[Alert]]
    ignored: list[str]  # one sentence each (label values shortened: they are the sender's text)


def sort_alerts(n: Notification, m: Mapping) -> Sorted:
    by: dict[str, list[Alert]] = {}
    ignored: list[str] = []
    for a in n.alerts:
        if a.name not in m.alert_names:
            continue  # not an alert that starts a recovery: nothing to say
        cluster = a.labels.get(m.label)
        if cluster is None:
            ignored.append(f"{a.name}: no {m.label!r} label; the receiver cannot tell which cluster it is")
        elif cluster not in m.clusters:
            ignored.append(f"{a.name}: {m.label}={cluster[:64]!r} is no served cluster")
        else:
            by.setdefault(cluster, []).append(a)
    return Sorted(by, ignored)


class Change(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class IncidentChange:
    change: Change
    cluster: str
    incident: str
    alerts: tuple[str, ...]  # alert names (from the watched set)


@dataclass
class Incident:
    id: str
    opened: float
    last: float
    firing: dict[str, str] = field(default_factory=dict)  # alert key -> alert name

    def to_json(self) -> dict:
        return {"id": self.id, "opened": self.opened, "last": self.last, "firing": self.firing}


class Incidents:
    """One open incident per cluster, kept in a file (a restarted receiver must not take the next
    repeat of a firing alert for a new incident). Thread-safe: `apply` is one critical section, and
    what it decides is written only when `commit` is called (after the event was accepted)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.open: dict[str, Incident] = {}
        self.committed_at = 0.0  # time.monotonic() of the last write
        if path is not None and path.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                for c, d in json.loads(path.read_text()).items():
                    self.open[c] = Incident(d["id"], d["opened"], d["last"], dict(d["firing"]))

    def apply(self, cluster: str, alerts: list[Alert], now: float | None = None) -> list[IncidentChange]:
        """Fold one cluster's alerts into its incident (call with `lock` held). Returns what changed."""
        now = time.time() if now is None else now
        out: list[IncidentChange] = []
        inc = self.open.get(cluster)
        if inc is not None and now - inc.last > STALE_AFTER_S:
            del self.open[cluster]
            inc = None
        for a in alerts:
            if a.status is AlertStatus.FIRING:
                if inc is None:
                    inc = self.open[cluster] = Incident(uuid.uuid4().hex, now, now)
                    out.append(IncidentChange(Change.OPENED, cluster, inc.id, ()))
                inc.firing[a.key] = a.name
                inc.last = now
            elif inc is not None and inc.firing.pop(a.key, None) is not None:
                inc.last = now
        if inc is not None and not inc.firing:
            del self.open[cluster]
            out.append(IncidentChange(Change.RESOLVED, cluster, inc.id, ()))
        names = tuple(sorted({a.name for a in alerts}))
        return [IncidentChange(c.change, c.cluster, c.incident, names) for c in out]

    def snapshot(self) -> dict[str, Incident]:
        return {c: Incident(i.id, i.opened, i.last, dict(i.firing)) for c, i in self.open.items()}

    def restore(self, saved: dict[str, Incident]) -> None:
        self.open = saved

    def commit(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps({c: i.to_json() for c, i in self.open.items()}))
        os.replace(tmp, self.path)
        self.committed_at = time.monotonic()


def incident_open(path: Path, cluster: str, incident: str) -> bool | None:
    """Is `incident` still the open incident of `cluster` in the receiver's file? None when the
    file cannot tell (no receiver, unreadable): the caller then goes on as asked."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(cluster) if isinstance(data, dict) else None
    return isinstance(entry, dict) and entry.get("id") == incident
