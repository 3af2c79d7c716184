"""Host repair as flows, each a thin Prefect layer over its core entry point and in the recovery
flow's form (flows/recover.py): the core plans, `confirm(plan)` pauses the run with the recovery's
approval form (tick approve AND type the cluster's name, give your name) before anything is changed,
one task run per plan step (`tasks.hosts.run_hostrepair_step`), an artifact with the outcome.

- `kubelet_cleanup_flow`: `etcd-dr hosts kubelet-cleanup --host H` (the containers labelled with the
  sandbox id kubelet's `no PodsandBox found` names, removed; kubelet restarted and watched);
- `cert_renew_flow`: `etcd-dr cert renew --host H | --all` (a member certificate reissued, the old
  one kept beside it, the member restarted; refused where a restart would cost quorum).

Final states: done or planned -> Completed; rejected -> Cancelled; refused, failed, approval timed out
-> Failed, with the core's sentence as the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Cancelled, Failed, State

from etcd_dr.audit import redact
from etcd_dr.certrenew.run import renew
from etcd_dr.hostrepair.run import kubelet_cleanup
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, PlanRun
from flows.common import audited_run, cluster_inventory, plan_approval_text
from flows.recover import Approval, ApprovalGate
from tasks.hosts import run_hostrepair_step


def _finish(kind: str, what: str, res: PlanRun, gate: ApprovalGate, approve: bool) -> dict | State:
    logger = get_run_logger()
    approval = gate.decision
    if approval is None and approve and res.outcome is not None:
        approval = Approval("not-needed", "approve=true: executed without a pause (approved by the caller)")
    steps = res.outcome.results if res.outcome else ()
    lines = [
        f"## {what} on `{res.plan.cluster}`: {'ok' if res.ok else 'not done'}",
        "",
        f"**Reason.** {res.plan.reason}",
        "",
        f"**Approval.** {approval.sentence if approval else '-'}",
        "",
        *(f"- {r.step.id}: {r.state} {r.detail or r.error or ''}".rstrip() for r in steps),
        "",
        "```",
        res.plan.render(),
        "```",
    ]
    key = f"{kind}-{res.plan.cluster}".lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(key=key, markdown=redact("\n".join(lines)), description=redact(res.plan.reason))
    if res.plan.refused:
        logger.error("refused: %s", res.plan.reason)
        return Failed(message=f"refused: {res.plan.reason}")
    if not res.confirmed:
        why = f"{approval.sentence if approval else 'not approved'}; nothing was changed"
        logger.warning(why)
        if approval is not None and approval.state == "rejected":
            return Cancelled(message=why)
        return Failed(message=why)
    if not res.ok:
        f = res.outcome.failed if res.outcome else None
        why = f"{f.step.description}: {f.error}" if f else "a step did not finish"
        logger.error("failed at: %s", why)
        return Failed(message=f"failed at: {why}")
    logger.info("%s: %s", "planned" if res.outcome is None else "done", res.plan.reason)
    return {**res.to_json(), "approval": approval.sentence if approval else None}


def _run(
    kind: str,
    what: str,
    inventory_block: str | None,
    inventory_path: str | None,
    approve: bool,
    plan_only: bool,
    approval_timeout_s: int,
    approval_poll_s: int,
    core: Callable[..., PlanRun],
) -> dict | State:
    logger = get_run_logger()
    with audited_run(), cluster_inventory(inventory_block, inventory_path, f"{kind}_flow") as inv:
        gate = ApprovalGate(inv, logger, approval_timeout_s, approval_poll_s)

        def confirm(plan: Plan) -> bool:
            return gate.ask(plan_approval_text(what, plan, approval_timeout_s), plan, f"{kind}-approval")

        res = core(
            inv,
            yes=approve,
            plan_only=plan_only,
            confirm=confirm,
            say=logger.info,
            run_step=run_hostrepair_step,
        )
    return _finish(kind, what, res, gate, approve)


@flow(name="etcd-kubelet-cleanup", log_prints=False)
def kubelet_cleanup_flow(
    host: str,
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    approve: bool = False,
    plan_only: bool = False,
    approval_timeout_s: int = 3600,
    approval_poll_s: int = 10,
) -> dict | State:
    """Free a kubelet stuck on `no PodsandBox found`: remove exactly the containers labelled with the
    missing sandbox ids, restart kubelet, watch it stay up. Pauses for approval unless `approve`."""

    def core(inv: Inventory, **kw: Any) -> PlanRun:
        return kubelet_cleanup(inv, host, **kw)

    return _run("kubelet-cleanup", "Kubelet sandbox cleanup", inventory_block, inventory_path, approve,
                plan_only, approval_timeout_s, approval_poll_s, core)  # fmt: skip


@flow(name="etcd-cert-renew", log_prints=False)
def cert_renew_flow(
    hosts: list[str] | None = None,
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    approve: bool = False,
    plan_only: bool = False,
    approval_timeout_s: int = 3600,
    approval_poll_s: int = 10,
) -> dict | State:
    """Reissue member certificates (same names and SANs, validity starting a few minutes in the
    past), the old ones kept, each member restarted in turn; `hosts` empty: every etcd host."""

    def core(inv: Inventory, **kw: Any) -> PlanRun:
        return renew(inv, hosts or [h.name for h in inv.etcd_hosts], **kw)

    return _run("cert-renew", "Certificate renewal", inventory_block, inventory_path, approve, plan_only,
                approval_timeout_s, approval_poll_s, core)  # fmt: skip
