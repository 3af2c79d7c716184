"""Kubelet cleanup's steps: the handlers of etcd_dr.hostrepair.plan's actions, side by side with the
look they share (one `docker inspect` for the containers a check needs)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etcd_dr.errors import CommandError, EtcdDrError
from etcd_dr.executor import Executor
from etcd_dr.hostrepair.plan import (
    KUBELET,
    SANDBOX_LABEL,
    CleanupAction,
    Container,
    RemoveParams,
    RestartParams,
    sandbox_ids_in,
)
from etcd_dr.plans import Params, Step, StepHandler
from etcd_dr.stepctx import StepContext

POLL_S = 0.5


class CleanupStepError(EtcdDrError):
    """A kubelet cleanup step could not be carried out."""


@dataclass(frozen=True)
class KubeletState:
    running: bool
    restarting: bool
    restart_count: int
    exit_code: int
    started_at: str  # docker's RFC 3339 with nanoseconds
    uptime_s: float  # by the host's own clock


# --- docker on one host (used by the look in run.py and by the handlers) ---------------------------

_STATE = (
    'docker inspect --type container -f "{{.State.Running}} {{.State.Restarting}} {{.RestartCount}} '
    '{{.State.ExitCode}} {{.State.StartedAt}}" "$1" && date -u +%s.%N'
)


def kubelet_state(ex: Executor, name: str = KUBELET) -> KubeletState | None:
    """The kubelet container's state (None when there is none), with its uptime on the host's clock."""
    r = ex.run(["sh", "-c", _STATE, "state", name], check=False, reason="kubelet: its state")
    if not r.ok:
        if "No such" in r.stderr:
            return None
        raise CommandError(ex.host, r.command, r.rc, r.stderr)
    first, now = r.stdout.strip().splitlines()[:2]
    running, restarting, count, code, started = first.split()
    return KubeletState(
        running == "true",
        restarting == "true",
        int(count),
        int(code),
        started,
        float(now) - _epoch(started),
    )


def _epoch(rfc3339: str) -> float:
    """Docker's StartedAt (nanoseconds, Z) as epoch seconds."""
    base, _, frac = rfc3339.rstrip("Z").partition(".")
    t = dt.datetime.fromisoformat(base).replace(tzinfo=dt.UTC).timestamp()
    return t + float(f"0.{frac}") if frac else t


def kubelet_log(ex: Executor, tail: int, *, since: str | None = None, name: str = KUBELET) -> str:
    argv = ["docker", "logs", "--tail", str(tail), *(["--since", since] if since else []), name]
    r = ex.run(argv, check=False, reason="kubelet: its recent log")
    return r.stdout + r.stderr  # kubelet logs to stderr


def labelled_ids(ex: Executor, label: str) -> list[str]:
    """Full ids of the containers carrying `label` (`key` or `key=value`)."""
    r = ex.run(
        ["docker", "ps", "-a", "-q", "--no-trunc", "--filter", f"label={label}"],
        reason=f"list containers labelled {label}",
    )
    return r.stdout.split()


def inspect_containers(ex: Executor, ids: Sequence[str]) -> dict[str, Container]:
    """One `docker inspect` of these containers: {id: Container}; ids gone are left out."""
    if not ids:
        return {}
    r = ex.run(["docker", "inspect", "--type", "container", *ids], check=False, reason="inspect containers")
    if not r.ok and "No such" not in r.stderr:
        raise CommandError(ex.host, r.command, r.rc, r.stderr)
    out = {}
    for d in json.loads(r.stdout or "[]"):
        cfg = d.get("Config") or {}
        out[d["Id"]] = Container(
            d["Id"],
            str(d.get("Name") or "").lstrip("/"),
            str(cfg.get("Image") or ""),
            dict(cfg.get("Labels") or {}),
            str((d.get("State") or {}).get("Status") or ""),
        )
    return out


# --- handlers --------------------------------------------------------------------------------------


class RemoveContainers:
    def __init__(self, c: StepContext) -> None:
        self.c = c

    def _present(self, step: Step) -> dict[str, Container]:
        p = step.typed(RemoveParams)
        return inspect_containers(self.c.executor(_host(step)), [x.id for x in p.containers])

    def done(self, step: Step) -> bool:
        return not self._present(step)

    def run(self, step: Step) -> str:
        p, host = step.typed(RemoveParams), _host(step)
        ex = self.c.executor(host)
        now = self._present(step)
        # the label is checked again now, for every one, before any is removed
        for want in p.containers:
            got = now.get(want.id)
            if got is not None and got.labels.get(SANDBOX_LABEL) != want.sandbox_id:
                raise CleanupStepError(
                    f"{host}: container {want.name} ({want.id[:12]}) no longer carries "
                    f"{SANDBOX_LABEL}={want.sandbox_id[:12]}...: nothing was removed; plan again"
                )
        removed = []
        for want in p.containers:
            got = now.get(want.id)
            if got is None:
                continue  # gone already (a re-run)
            if got.state in ("running", "restarting", "paused"):
                ex.run(
                    ["docker", "stop", "-t", "10", want.id],
                    timeout=60,
                    reason=f"stop {got.name} to remove it",
                )
            ex.run(
                ["docker", "rm", want.id],
                timeout=60,
                reason=f"remove {got.name}: its sandbox {want.sandbox_id[:12]}... does not exist",
            )
            if self.c.audit is not None:
                self.c.audit.event(
                    host=host,
                    action="kubelet-cleanup.remove",
                    outcome="ok",
                    reason=f"labelled {SANDBOX_LABEL}={want.sandbox_id}, a sandbox that does not exist; "
                    "kubelet's container manager failed on it",
                    container=want.id,
                    name=got.name,
                    image=got.image,
                    labels=dict(got.labels),
                    state=got.state,
                )
            removed.append(got.name)
        return f"removed {len(removed)}: {', '.join(removed) or 'none (gone already)'}"


class RestartKubelet:
    def __init__(self, c: StepContext) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        p = step.typed(RestartParams)
        ex = self.c.executor(_host(step))
        st = kubelet_state(ex, p.container)
        if st is None or not st.running or st.restarting or st.uptime_s < p.stay_s:
            return False
        return not sandbox_ids_in(kubelet_log(ex, p.tail, since=st.started_at, name=p.container))

    def run(self, step: Step) -> str:
        p, host = step.typed(RestartParams), _host(step)
        ex = self.c.executor(host)
        ex.run(["docker", "restart", "-t", "10", p.container], timeout=60, reason="restart kubelet")
        first = kubelet_state(ex, p.container)
        if first is None:
            raise CleanupStepError(f"{host}: kubelet's container vanished during its restart")
        end = time.monotonic() + p.stay_s
        while True:
            st = kubelet_state(ex, p.container)
            if st is None or not st.running or st.restarting or st.restart_count != first.restart_count:
                ids = sandbox_ids_in(kubelet_log(ex, 20, name=p.container))
                why = (
                    f"it fails on sandbox {', '.join(i[:12] for i in ids)}..."
                    if ids
                    else "see `docker logs kubelet`"
                )
                raise CleanupStepError(f"{host}: kubelet did not stay up after its restart: {why}")
            if time.monotonic() >= end:
                return f"kubelet up {st.uptime_s:.1f} s without a restart"
            time.sleep(POLL_S)


def _host(step: Step) -> str:
    if step.host is None:
        raise CleanupStepError(f"step {step.id}: no host; the plan is malformed, plan again")
    return step.host


VOCABULARY: dict[CleanupAction, tuple[type[Params], Callable[[StepContext], StepHandler]]] = {
    CleanupAction.REMOVE_CONTAINERS: (RemoveParams, RemoveContainers),
    CleanupAction.RESTART_KUBELET: (RestartParams, RestartKubelet),
}


def handlers(c: StepContext) -> dict[str, StepHandler]:
    return {str(a): h(c) for a, (_, h) in VOCABULARY.items()}
