"""The alert receiver: `POST /alerts/alertmanager` on the receiver port (stdlib HTTP server, one
thread per request). Authenticated (bearer token or HMAC-SHA256 of the body, constant-time compared),
size-capped, validated (console.alerts), then one Prefect event per (cluster, incident):
`etcd-dr.incident.opened` starts that cluster's recovery through its automation,
`etcd-dr.incident.resolved` cancels the run the incident started if it still waits for approval.

Alertmanager retries on 5xx and transport errors, not on 4xx: a bad request is 4xx (resending it
cannot help), an unknown cluster is 200 (logged, ignored), and an event Prefect did not accept is 503
with the incident rolled back, so the resend opens it again. Nothing from a payload reaches a
command line: the event carries the served cluster's name and the watched alert names, no label text."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from console.alerts import (
    BadRequest,
    Change,
    IncidentChange,
    Incidents,
    Mapping,
    parse_notification,
    sort_alerts,
)

log = logging.getLogger("etcd_dr.console.receiver")

PATH = "/alerts/alertmanager"
MAX_BODY = 1 << 20  # 1 MiB: Alertmanager's largest groups are far below (truncatedAlerts caps them)
SIGNATURE_HEADER = "X-Etcd-Dr-Signature"  # "sha256=<hex HMAC-SHA256(token, body)>"
EVENT_OPENED = "etcd-dr.incident.opened"
EVENT_RESOLVED = "etcd-dr.incident.resolved"


def resource_id(cluster: str) -> str:
    return f"etcd-dr.cluster.{cluster}"


def signature(token: str, body: bytes) -> str:
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


class PrefectSink:
    """Where decisions go: events to the Prefect server (POST /api/events, accepted before the
    receiver answers), and the cancellation of a run still waiting for approval."""

    def __init__(self, recover_deployment_id: uuid.UUID | None) -> None:
        from prefect.client.orchestration import get_client

        self.deployment_id = recover_deployment_id
        self.client = get_client(sync_client=True)
        self.client.__enter__()
        self._reader: Any = None
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        if self._reader is not None:
            self._reader.__exit__(None, None, None)

    def runs_of(self, deployment_id: uuid.UUID) -> list:
        """A deployment's flow runs, newest first (the metrics' reader: its own client, so a scrape
        never waits behind an alert's decision)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        with self._reader_lock:
            if self._reader is None:
                self._reader = get_client(sync_client=True)
                self._reader.__enter__()
            return self._reader.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=200,  # the server's maximum per request
            )

    def emit(self, c: IncidentChange) -> None:
        event = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": EVENT_OPENED if c.change is Change.OPENED else EVENT_RESOLVED,
            "resource": {"prefect.resource.id": resource_id(c.cluster), "prefect.resource.name": c.cluster},
            "payload": {"cluster": c.cluster, "incident": c.incident, "alerts": list(c.alerts)},
        }
        r = self.client.request("POST", "/events", json=[event])
        r.raise_for_status()

    def cancel_waiting(self, c: IncidentChange) -> list[str]:
        """Cancel the recover runs this incident started that are still Paused (waiting for approval),
        or not started yet. A run that is executing is left alone: the recovery is under way."""
        if self.deployment_id is None:
            return []
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Cancelled, Cancelling

        waiting = [StateType.PAUSED, StateType.SCHEDULED, StateType.PENDING]
        runs = self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=waiting))
            ),
        )
        done = []
        for run in runs:
            p = run.parameters or {}
            if p.get("cluster") == c.cluster and p.get("incident") == c.incident:
                msg = (
                    f"the alerts of incident {c.incident} resolved before anyone approved; "
                    "nothing was changed"
                )
                # a paused run has a process: Cancelling makes the serving runner kill it and mark it
                # Cancelled; a run not started yet has none and is Cancelled at once
                paused = run.state is not None and run.state.type is StateType.PAUSED
                new = Cancelling(message=msg) if paused else Cancelled(message=msg)
                self.client.set_flow_run_state(run.id, new, force=True)
                done.append(str(run.id))
        return done


@dataclass(frozen=True)
class ReceiverConfig:
    token: str  # never logged, never in an exception
    mapping: Mapping
    state_file: Path | None
    max_body: int = MAX_BODY


class Receiver:
    """Decides a request: auth, validation, mapping, incidents, events. `handle` returns (status,
    JSON answer) and is the whole behaviour; the HTTP server only carries bytes."""

    def __init__(
        self, cfg: ReceiverConfig, sink: Any, on_change: Callable[[IncidentChange], None] | None = None
    ):
        if not cfg.token:
            raise ValueError("the receiver needs a token")
        self.cfg = cfg
        self.sink = sink
        self.incidents = Incidents(cfg.state_file)
        self.on_change = on_change
        self.counts = {"accepted": 0, "refused": 0, "events": 0}
        self._count_lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += n

    def authorized(self, headers: Any, body: bytes) -> bool:
        token = self.cfg.token.encode()
        auth = headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), token):
            return True
        sig = headers.get(SIGNATURE_HEADER) or ""
        return bool(sig) and hmac.compare_digest(sig.encode(), signature(self.cfg.token, body).encode())

    def handle(self, headers: Any, body: bytes) -> tuple[int, dict]:
        if not self.authorized(headers, body):
            self._count("refused")
            return 401, {"error": f"unauthorized: send Authorization: Bearer <token> or {SIGNATURE_HEADER}"}
        try:
            n = parse_notification(body, headers.get("Content-Type"))
        except BadRequest as e:
            self._count("refused")
            log.warning("alertmanager notification refused (%d): %s", e.status, e)
            return e.status, {"error": str(e)}
        s = sort_alerts(n, self.cfg.mapping)
        for why in s.ignored:
            log.warning("alert ignored: %s", why)
        changes: list[IncidentChange] = []
        with self.incidents.lock:  # one decision at a time: 50 copies of an alert open one incident
            saved = self.incidents.snapshot()
            try:
                for cluster, alerts in s.by_cluster.items():
                    for c in self.incidents.apply(cluster, alerts):
                        self.sink.emit(c)
                        changes.append(c)
                        if c.change is Change.RESOLVED:
                            for run in self.sink.cancel_waiting(c):
                                log.info("cancelled recover run %s of %s: incident resolved", run, c.cluster)
            except Exception as e:  # Prefect did not take it: undo, answer 5xx, Alertmanager resends
                self.incidents.restore(saved)
                log.error("could not hand the incident to Prefect (%s); answering 503", e.__class__.__name__)
                return 503, {"error": "Prefect did not accept the event; retry"}
            # a change at once; otherwise now and then (`last` feeds the stale rule after a restart)
            if changes or time.monotonic() - self.incidents.committed_at > 60:
                self.incidents.commit()
        self._count("accepted")
        self._count("events", len(changes))
        for c in changes:
            log.info(
                "incident %s of cluster %s %s (%s)", c.incident, c.cluster, c.change, ", ".join(c.alerts)
            )
            if self.on_change:
                self.on_change(c)
        return 200, {
            "incidents": [
                {"cluster": c.cluster, "incident": c.incident, "change": str(c.change)} for c in changes
            ],
            "ignored": s.ignored,
        }


def make_server(
    host: str, port: int, receiver: Receiver, metrics: Callable[[], str] | None = None
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "etcd-dr-receiver"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

        def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._answer(status, json.dumps(obj).encode())

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._json(200, {"ok": True})
            elif self.path == "/metrics" and metrics is not None:
                self._answer(200, metrics().encode(), "text/plain; version=0.0.4")
            else:
                self._json(404, {"error": f"no such path; POST {PATH}"})

        def do_POST(self) -> None:
            if self.path != PATH:
                self.close_connection = True
                self._json(404, {"error": f"no such path; POST {PATH}"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length: required"})
                return
            if int(length) > receiver.cfg.max_body:
                self.close_connection = True  # the body is not read: the connection cannot be reused
                self._json(413, {"error": f"body: {length} bytes, over the {receiver.cfg.max_body} byte cap"})
                return
            body = self.rfile.read(int(length))
            status, answer = receiver.handle(self.headers, body)
            self._json(status, answer)

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    return srv


def start(srv: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=srv.serve_forever, name="etcd-dr-receiver", daemon=True)
    t.start()
    return t
