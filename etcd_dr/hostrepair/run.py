"""`etcd-dr hosts kubelet-cleanup`: look, plan, confirm, execute; the entry point the CLI shares.

res = kubelet_cleanup(inv, "node2", plan_only=True)      # the plan: what would be removed, why
res = kubelet_cleanup(inv, "node2", yes=True)            # remove exactly those, restart kubelet
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from etcd_dr.executor import Executor, audit_log_for
from etcd_dr.hostrepair.plan import (
    KUBELET,
    LOG_TAIL,
    SANDBOX_LABEL,
    STAY_S,
    TYPE_LABEL,
    Container,
    KubeletLook,
    plan_cleanup,
    sandbox_ids_in,
)
from etcd_dr.hostrepair.steps import handlers, inspect_containers, kubelet_log, kubelet_state, labelled_ids
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, PlanRun, StepRunner, execute
from etcd_dr.stepctx import Say, StepContext

Confirm = Callable[[Plan], bool]


def look(ex: Executor, *, tail: int = LOG_TAIL) -> KubeletLook:
    """One look at a host: kubelet's state and recent log, the sandbox ids in its failure, the
    containers labelled with them and whether those sandboxes exist."""
    st = kubelet_state(ex)
    if st is None:
        return KubeletLook(ex.host, False, tail=tail)
    ids = sandbox_ids_in(kubelet_log(ex, tail))
    labelled: dict[str, tuple[Container, ...]] = {}
    existing: set[str] = set()
    if ids:
        sandboxes = set(labelled_ids(ex, f"{TYPE_LABEL}=podsandbox"))
        existing = {i for i in ids if i in sandboxes}
        for sid in ids:
            found = inspect_containers(ex, labelled_ids(ex, f"{SANDBOX_LABEL}={sid}"))
            labelled[sid] = tuple(found.values())
    return KubeletLook(
        ex.host, True, st.running, st.restarting, st.restart_count, st.exit_code, ids,
        frozenset(existing), labelled, tail, st.uptime_s,
    )  # fmt: skip


@dataclass(frozen=True)
class CleanupResult(PlanRun):
    look: KubeletLook | None = None  # what kubelet and the host's containers showed before the plan

    def to_json(self) -> dict:
        look = self.look.to_json() if self.look else None
        return {**super().to_json(), "host": self.look.host if self.look else None, "look": look}


def kubelet_cleanup(
    inv: Inventory,
    host: str,
    *,
    yes: bool = False,
    plan_only: bool = False,
    confirm: Confirm | None = None,
    stay_s: float = STAY_S,
    tail: int = LOG_TAIL,
    say: Say = lambda _m: None,
    run_step: StepRunner | None = None,
) -> CleanupResult:
    """Look at `host`, plan; with yes (or confirm(plan) saying yes) execute. Raises InputError for a
    host the inventory does not know, before anything is contacted."""
    t0 = time.monotonic()
    inv.host(host)
    audit = audit_log_for(inv)
    c = StepContext(inv, audit, say)
    try:
        seen = look(c.executor(host), tail=tail)
        plan = plan_cleanup(seen, cluster=inv.cluster, stay_s=stay_s)
        if plan.refused or plan_only:
            if plan.refused and audit is not None:
                audit.event(host=host, action="kubelet-cleanup", outcome="refused", reason=plan.reason)
            return CleanupResult(plan, None, not plan.refused, time.monotonic() - t0, seen)
        if not yes and not (confirm is not None and confirm(plan)):
            return CleanupResult(plan, None, False, time.monotonic() - t0, seen)
        outcome = execute(plan, handlers(c), audit=audit, say=say, run_step=run_step)
        if audit is not None:
            audit.event(
                host=host,
                action="kubelet-cleanup",
                outcome="ok" if outcome.ok else "failed",
                reason=plan.reason,
                duration_s=time.monotonic() - t0,
            )
        return CleanupResult(plan, outcome, True, time.monotonic() - t0, seen)
    finally:
        c.close()


__all__ = ["KUBELET", "CleanupResult", "kubelet_cleanup", "look"]
