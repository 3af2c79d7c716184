"""Gather the facts of a readiness round: every probe in parallel, under ONE deadline.

A probe still running at the deadline becomes `Failed("no answer within the N s deadline")` and is
abandoned: it runs in a daemon thread (it cannot hold the process at exit) and its own SSH and etcd
timeouts end it later. One SSH connection per host is shared by that host's probes.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from etcd_dr.audit import redact
from etcd_dr.deltalog.service import log_dir_for
from etcd_dr.deltalog.stream import read_status
from etcd_dr.errors import CommandError, EtcdDrError, HostKeyError, TransportError
from etcd_dr.etcd.client import Alarm
from etcd_dr.executor import Executor
from etcd_dr.hostcare import measure_clock
from etcd_dr.inventory import Host, Inventory
from etcd_dr.readiness.evaluate import assess, parse_df
from etcd_dr.readiness.model import (
    CertFile,
    CertKind,
    DiskFree,
    FailCause,
    Failed,
    Gathered,
    Readiness,
)
from etcd_dr.snapshots import Catalog
from etcd_dr.state import client_for, observe

DEFAULT_DEADLINE_S = 15.0

ExecutorFactory = Callable[[Host], Executor]


def run_all(jobs: Mapping[Hashable, Callable[[], Any]], deadline_s: float) -> dict[Hashable, Any]:
    """Run each job in its own daemon thread and wait for all until the deadline. A job that raised
    is Failed(its message); one still running is Failed("no answer within ...")."""
    results: dict[Hashable, Any] = {}
    cond = threading.Condition()

    def work(key: Hashable, fn: Callable[[], Any]) -> None:
        try:
            r = fn()
        except HostKeyError as e:
            r = Failed(str(e), FailCause.HOST_KEY)
        except EtcdDrError as e:
            r = Failed(str(e))
        except Exception as e:  # one probe's bug must not sink the other checks: say what it was
            r = Failed(redact(f"{e.__class__.__name__}: {e}"))
        with cond:
            results[key] = r
            cond.notify_all()

    for key, fn in jobs.items():
        ctx = contextvars.copy_context()  # audit records written in the thread carry the flow run id
        threading.Thread(target=ctx.run, args=(work, key, fn), daemon=True, name=f"check-{key}").start()
    end = time.monotonic() + deadline_s
    with cond:
        while len(results) < len(jobs) and (left := end - time.monotonic()) > 0:
            cond.wait(left)
        out = dict(results)
    for key in jobs:
        out.setdefault(key, Failed(f"no answer within the {deadline_s:g} s deadline", FailCause.DEADLINE))
    return out


# Walk up to the nearest existing directory: a host that has not run etcd yet still needs the space.
_DF_SCRIPT = (
    'd=$1; while [ ! -e "$d" ]; do d=$(dirname -- "$d"); done; echo "$d"; '
    'df -B1 --output=avail,size,target -- "$d"'
)


def read_disk(ex: Executor, data_dir: str, timeout: float) -> DiskFree:
    r = ex.run(["sh", "-c", _DF_SCRIPT, "df", data_dir], timeout=timeout, reason="check: free disk")
    try:
        avail, size, mount = parse_df(r.stdout)
    except ValueError as e:
        raise CommandError(ex.host, r.command, r.rc, str(e)) from None
    return DiskFree(ex.host, r.stdout.splitlines()[0].strip(), mount, avail, size)


def read_certs(inv: Inventory, host: Host, ex: Executor) -> tuple[CertFile, ...]:
    """The member certificate and kube-ca.pem as the host has them (never a key). A file that cannot
    be read is recorded as such; an unreachable host raises. A connection lost mid-read is tried
    once more: the host answered the connect probe, and an unread certificate fails the check (a CI
    run once saw both of a reachable host's files fail in a 0.7 s check, its clock and disk fine)."""
    out = []
    for kind, path in ((CertKind.MEMBER, inv.etcd.cert_path(host)), (CertKind.CA, inv.etcd.ca_path())):
        for attempt in (1, 2):
            try:
                out.append(CertFile(host.name, kind, path, ex.get(path)))
            except CommandError as e:
                out.append(CertFile(host.name, kind, path, None, e.stderr or str(e)))
            except TransportError as e:
                if attempt == 2 or isinstance(e, HostKeyError):
                    raise
                continue
            break
    return tuple(out)


class _Reach:
    """The first probe of a host connects; the others wait for that attempt and share its outcome.
    Without it, three probes of a dead host would each wait out the connect timeout in turn (the
    executor connects under a lock)."""

    def __init__(self, ex: Executor, timeout: float) -> None:
        self.ex, self.timeout = ex, timeout
        self._lock = threading.Lock()
        self._tried = False
        self._error: EtcdDrError | None = None

    def __call__(self) -> Executor:
        with self._lock:
            if not self._tried:
                try:
                    self.ex.run(["true"], timeout=self.timeout, reason="check: connect")
                except EtcdDrError as e:
                    self._error = e
                self._tried = True
        if self._error is not None:
            raise self._error
        return self.ex


def gather(
    inv: Inventory, *, deadline_s: float = DEFAULT_DEADLINE_S, executor_factory: ExecutorFactory | None = None
) -> Gathered:
    started = time.monotonic()
    if executor_factory is None:
        from etcd_dr.executor import audit_log_for, executor_for

        audit = audit_log_for(inv)

        def executor_factory(h: Host) -> Executor:
            return executor_for(inv, h, audit=audit)

    exs = {h.name: executor_factory(h) for h in inv.hosts}  # not connected yet: the probes do
    timeout = max(1.0, deadline_s)
    snap_dir = inv.snapshot_settings().dir

    def alarms() -> tuple[Alarm, ...]:
        with client_for(inv) as client:
            return client.alarm_list()

    jobs: dict[Hashable, Callable[[], Any]] = {
        "state": lambda: observe(inv, check_ssh=False),  # reachability: the clock probes tell it
        "alarms": alarms,
        "snapshot": lambda: Catalog(snap_dir).newest(inv.cluster, verified_only=True),
        "deltalog": lambda: read_status(log_dir_for(inv)),
    }
    for h in inv.hosts:
        reach = _Reach(exs[h.name], timeout)
        jobs["clock", h.name] = lambda reach=reach: measure_clock(reach(), timeout=timeout)
        if h.runs_etcd:
            jobs["certs", h.name] = lambda h=h, reach=reach: read_certs(inv, h, reach())
            jobs["disk", h.name] = lambda reach=reach: read_disk(reach(), inv.etcd.data_dir, timeout)
    try:
        r = run_all(jobs, deadline_s)
    finally:
        # in the background: closing waits for a connect still in progress to a dead host
        for ex in exs.values():
            threading.Thread(target=ex.close, daemon=True, name=f"close-{ex.host}").start()
    return Gathered(
        state=r["state"],
        alarms=r["alarms"],
        snapshot=r["snapshot"],
        clocks={h.name: r["clock", h.name] for h in inv.hosts},
        certs={h.name: r["certs", h.name] for h in inv.etcd_hosts},
        disks={h.name: r["disk", h.name] for h in inv.etcd_hosts},
        snapshot_dir=snap_dir,
        deltalog=r["deltalog"],
        deadline_s=deadline_s,
        started=started,
        finished=time.monotonic(),
    )


def check_readiness(inv: Inventory, *, deadline_s: float = DEFAULT_DEADLINE_S) -> Readiness:
    """The readiness check: gather under one deadline, then assess."""
    return assess(inv, gather(inv, deadline_s=deadline_s))
