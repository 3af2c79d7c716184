"""Kubelet's sandbox loop, decided (pure): `plan_cleanup(obs)` from a frozen look at one host.

The source incident: kubelet restart-looped with

    Failed to start ContainerManager failed to build map of initial containers from runtime: \
    no PodsandBox found with Id '<64 hex>'   (one line)

because a container still carried the label `io.kubernetes.sandbox.id` of a pod sandbox that no
longer existed (kubernetes/kubelet#21). The fix is to remove exactly the containers labelled with
that id and restart kubelet; the operator first removed every container on the host. So the plan
removes a container only when (1) kubelet is in that loop now (the words in its recent log, and it
is not running steadily), (2) its label names an id from those words, and (3) no sandbox with that
id exists. Everything else on the host is left alone.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from etcd_dr.plans import Params, Plan, Refusal, Step

KIND = "kubelet-cleanup"
KUBELET = "kubelet"  # RKE's container name
SANDBOX_LABEL = "io.kubernetes.sandbox.id"
TYPE_LABEL = "io.kubernetes.docker.type"  # podsandbox | container (dockershim, cri-dockerd)
LOG_TAIL = 200  # kubelet's recent log: the lines read for the message
STAY_S = 10.0  # kubelet must stay up this long after the restart to count as out of the loop
# a kubelet that restarted and has run less than this may be between two failures of its loop: it
# runs (exit code 0) for the seconds its start takes before it fails again
STEADY_S = 30.0
FAILURE = "Failed to start ContainerManager failed to build map of initial containers from runtime"
# klog's plain form (RKE-era kubelets, the source incident: `Failed to start ContainerManager failed
# to build map ...`) and its structured form (newer kubelets: `"Failed to start ContainerManager"
# err="failed to build map ..."`)
_NO_SANDBOX = re.compile(
    r'Failed to start ContainerManager"?(?: err="|:? )failed to build map of initial containers from '
    r"runtime: no PodsandBox found with Id '([0-9a-f]{64})'"
)


def sandbox_ids_in(log: str) -> tuple[str, ...]:
    """The sandbox ids of kubelet's ContainerManager failure in a log, in order, each once."""
    return tuple(dict.fromkeys(m.group(1) for m in _NO_SANDBOX.finditer(log)))


@dataclass(frozen=True)
class Container:
    """One Docker container as `docker inspect` shows it (only what the plan and audit need)."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    state: str  # running, exited, created, ...


@dataclass(frozen=True)
class KubeletLook:
    """One host, looked at once: kubelet's container, its recent log's sandbox ids, the containers
    labelled with them, and which of those sandboxes exist."""

    host: str
    kubelet_exists: bool
    running: bool = False
    restarting: bool = False
    restart_count: int = 0
    exit_code: int = 0
    log_ids: tuple[str, ...] = ()  # from the ContainerManager failure, in the log's order
    existing_sandboxes: frozenset[str] = frozenset()  # of log_ids, those a podsandbox container has
    labelled: Mapping[str, tuple[Container, ...]] = field(default_factory=dict)  # sandbox id -> containers
    tail: int = LOG_TAIL
    uptime_s: float = 0.0  # of its current run, on the host's clock

    @property
    def steady(self) -> bool:
        """Running, and for long enough that it is not a start on its way to the next failure."""
        fresh = self.restart_count > 0 and self.uptime_s < STEADY_S
        return self.running and not self.restarting and self.exit_code == 0 and not fresh

    @property
    def looping(self) -> bool:
        """In the loop: the words are in its recent log and it is not running steadily (restarting,
        stopped, its last run failed, or restarted less than STEADY_S ago)."""
        return bool(self.log_ids) and not self.steady

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "kubelet_exists": self.kubelet_exists,
            "running": self.running,
            "restarting": self.restarting,
            "restart_count": self.restart_count,
            "exit_code": self.exit_code,
            "looping": self.looping,
            "uptime_s": round(self.uptime_s, 1),
            "log_ids": list(self.log_ids),
            "existing_sandboxes": sorted(self.existing_sandboxes),
            "labelled": {
                sid: [
                    {"id": c.id, "name": c.name, "image": c.image, "labels": dict(c.labels), "state": c.state}
                    for c in cs
                ]
                for sid, cs in self.labelled.items()
            },
        }


# --- the vocabulary's params (the handlers are in etcd_dr.hostrepair.steps) -------------------------


class CleanupAction(enum.StrEnum):
    REMOVE_CONTAINERS = "remove-containers"
    RESTART_KUBELET = "restart-kubelet"


@dataclass(frozen=True)
class ContainerParams(Params):
    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    sandbox_id: str  # the missing sandbox its label names


@dataclass(frozen=True)
class RemoveParams(Params):
    containers: tuple[ContainerParams, ...]


@dataclass(frozen=True)
class RestartParams(Params):
    container: str
    stay_s: float
    tail: int


def _refused(cluster: str, host: str, why: str) -> Plan:
    # the host is not in a state for it (no loop, no orphan): unsafe, not bad input
    return Plan(
        KIND,
        cluster,
        f"kubelet cleanup on {host} refused: {why}; nothing was changed",
        refusal=Refusal.UNSAFE,
    )


def plan_cleanup(look: KubeletLook, *, cluster: str, stay_s: float = STAY_S) -> Plan:
    """Pure: remove exactly the containers labelled with a missing sandbox that kubelet's loop
    names, then restart kubelet and watch it stay up."""
    h = look.host
    if not look.kubelet_exists:
        return _refused(cluster, h, f"no container named {KUBELET} on {h} (RKE runs kubelet as one)")
    if not look.log_ids:
        return _refused(
            cluster,
            h,
            f"kubelet on {h} is not in the sandbox loop: its last {look.tail} log lines have no "
            f"'{FAILURE}: no PodsandBox found with Id ...'",
        )
    if not look.looping:
        return _refused(
            cluster,
            h,
            f"kubelet on {h} runs steadily (up {look.uptime_s:.0f} s; its log names sandbox "
            f"{_short(look.log_ids)} from an earlier start): it is not in the loop now, so no container is "
            "removed",
        )
    missing = [sid for sid in look.log_ids if sid not in look.existing_sandboxes]
    present = [sid for sid in look.log_ids if sid in look.existing_sandboxes]
    if not missing:
        return _refused(
            cluster,
            h,
            f"the sandboxes kubelet's log names ({_short(present)}) exist on {h}: the containers labelled "
            "with them are a pod's, not orphans; look at kubelet's full log",
        )
    doomed = [
        ContainerParams(c.id, c.name, c.image, dict(c.labels), sid)
        for sid in missing
        for c in look.labelled.get(sid, ())
        if c.labels.get(SANDBOX_LABEL) == sid  # the label itself, not a look-alike
    ]
    n = len(doomed)
    names = ", ".join(f"{c.name} ({c.image})" for c in doomed) or "none left"
    steps: list[Step] = []
    if doomed:
        steps.append(
            Step(
                id=f"remove-containers:{h}",
                action=CleanupAction.REMOVE_CONTAINERS,
                host=h,
                description=f"remove the {n} container{'s' if n != 1 else ''} on {h} labelled "
                f"{SANDBOX_LABEL} with a sandbox that does not exist: {names}",
                postcondition=f"no container on {h} is labelled with {_short(missing)}",
                reason="a container whose sandbox is gone makes kubelet's container manager fail at "
                "every start (kubernetes/kubelet#21); exactly those, nothing else",
                destructive=True,
                params=RemoveParams(tuple(doomed)),
                runs="; ".join(f"docker rm {c.id[:12]}" for c in doomed),
            )
        )
    steps.append(
        Step(
            id=f"restart-kubelet:{h}",
            action=CleanupAction.RESTART_KUBELET,
            host=h,
            description=f"restart kubelet on {h} and watch it stay up {stay_s:g} s",
            postcondition=f"kubelet on {h} has run {stay_s:g} s without the ContainerManager failure",
            reason="kubelet reads the runtime's containers only at start",
            params=RestartParams(KUBELET, stay_s, look.tail),
            runs="docker restart kubelet",
        )
    )
    skipped = f"; sandbox {_short(present)} exists, its containers stay" if present else ""
    reason = (
        f"kubelet on {h} is in the sandbox loop (restarted {look.restart_count} times, "
        f"'no PodsandBox found with Id' {_short(missing)}): remove the {n} container{'s' if n != 1 else ''} "
        f"labelled with {'it' if len(missing) == 1 else 'them'} ({names}) and restart kubelet{skipped}"
    )
    return Plan(KIND, cluster, reason, tuple(steps))


def _short(ids: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"'{i[:12]}...'" for i in ids)
