"""The lab's power and cable for the fault core: `controls_for(inv)` is what `etcd-dr fault` and the
rehearsal pass to etcd_dr.faults.steps (inject/heal) when the inventory is a running lab's, so the
core carries lab faults without importing the lab."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.executor import Executor
from etcd_dr.inventory import Inventory
from etcd_dr.lab import hosts, lifecycle, net
from etcd_dr.lab.config import LabConfig, LabState
from etcd_dr.runtime import DockerRuntime, ProcessRuntime
from etcd_dr.stepctx import Say


@dataclass(frozen=True)
class LabFaultControls:
    """etcd_dr.faults.steps.LabControls for one lab. Each call reads the lab's state file afresh (a
    host's PID changes with every power on)."""

    cfg: LabConfig

    def executor(self, host: str) -> Executor:
        return lifecycle.console(lifecycle.load_state(self.cfg), host)

    def runtime(self, host: str) -> DockerRuntime | ProcessRuntime:
        return lifecycle.runtime(lifecycle.load_state(self.cfg), host)

    def is_on(self, host: str) -> bool:
        return hosts.is_up(lifecycle.load_state(self.cfg).hosts.get(host))

    def link_is_up(self, host: str) -> bool | None:
        return net.link_is_up(self.cfg, host)

    def ssh_answers(self, address: str, timeout: float) -> bool:
        return hosts.wait_port(address, 22, timeout)

    def power_off(self, host: str, say: Say) -> None:
        lifecycle.power_off(self.cfg, host, say=say)

    def power_on(self, host: str, say: Say) -> None:
        lifecycle.power_on(self.cfg, host, say=say)

    def plug_only(self, host: str) -> None:
        net.set_link(self.cfg, host, up=True)

    def set_plugged(self, host: str, plugged: bool, say: Say) -> None:
        lifecycle.set_plugged(self.cfg, host, plugged, say=say)


def controls_for(inv: Inventory) -> LabFaultControls | None:
    """The lab's controls when `inv` is the inventory a lab wrote (`<labdir>/inventory.yaml` beside
    its state file, same cluster name), else None (real hosts). A lab that is down is an error: its
    addresses must not be contacted then."""
    if inv.source is None:
        return None
    state = LabState.load(Path(inv.source).parent)
    if state is None:
        return None
    cfg = state.config
    if cfg.inventory_path.resolve() != Path(inv.source).resolve() or inv.cluster != f"lab-{cfg.prefix}":
        return None
    if not net.link_exists(cfg.bridge):
        raise InputError(
            f"{inv.source} is the inventory of lab '{cfg.prefix}', which is down: run `etcd-dr lab up`"
        )
    return LabFaultControls(cfg)
