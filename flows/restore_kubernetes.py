"""Kubernetes back after etcd as a flow: a thin Prefect layer over
`etcd_dr.kubernetes.run.restore_kubernetes()` (observe, decide, plan, confirm, write cluster.yml,
execute, journal: all in the core), in the recovery flow's form (flows/recover.py):

- approval: the core's `confirm(plan)` pauses the run with the recovery's form (`RecoveryApproval`:
  tick approve AND type the cluster's name, give your name) showing the decision, the destructive
  steps, the whole plan and the cluster.yml diff (the client key as a placeholder); `approve=True`
  skips the pause;
- one task run per plan step (`tasks.kubernetes.run_kubernetes_step`);
- the recovery's concurrency slot `recover-<cluster>`: a restore and a recovery of one cluster never
  run at once (a restore reads the etcd a recovery is changing); the core's flock guards CLI runs;
- artifacts: the plan, and the verdict (/readyz per controlplane host, objects before and after).

Final states as the recovery's: restored or planned -> Completed; rejected -> Cancelled; refused,
busy, failed, approval timed out -> Failed, with the core's one sentence as the message.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Cancelled, Failed, State

from etcd_dr.audit import redact
from etcd_dr.kubernetes.run import KubernetesResult, KubernetesStatus, journal_path, restore_kubernetes
from etcd_dr.plans import Plan
from flows.common import audited_run, cluster_inventory, plan_approval_text
from flows.recover import Approval, RecoveryNotDone, recovery_slot
from flows.recover import ApprovalGate as RecoverApprovalGate
from tasks.kubernetes import run_kubernetes_step


def _key(kind: str, cluster: str) -> str:
    return f"restore-kubernetes-{kind}-{cluster}".lower().replace("_", "-").replace(".", "-")


def approval_description(plan: Plan, diff: str, timeout_s: int, resumed: bool = False) -> str:
    """The form's text (markdown): the decision, the destructive steps, the plan, the diff."""
    note = (
        ["**Resuming** an unfinished restore (its journal): done steps are skipped.", ""] if resumed else []
    )
    tail = ["", "**cluster.yml** (written beside the operator's, never over it):", "```diff", diff, "```"]
    return plan_approval_text("Kubernetes back", plan, timeout_s, note=note, tail=tail if diff else ())


def verdict_markdown(res: KubernetesResult, approval: Approval | None) -> str:
    lines = [
        f"## Kubernetes on `{res.plan.cluster}`: {res.status}",
        "",
        f"**Reason.** {res.reason}",
        "",
        f"**Approval.** {approval.sentence if approval else '-'}",
        "",
        "| controlplane host | /readyz |",
        "|---|---|",
        *(f"| {h} | {'ok' if said is None else said.replace('|', '/')} |" for h, said in res.ready.items()),
        "",
        f"**Objects under /registry** ({res.counted or '-'}).",
        "",
        "| resource | before | after |",
        "|---|---|---|",
        *(
            f"| {p} | {res.counts_before.get(p, '-')} | {res.counts_after.get(p, '-')} |"
            for p in sorted({*res.counts_before, *res.counts_after})
        ),
        "",
        "**Timings (s).** " + ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items()),
    ]
    return redact("\n".join(lines))


class ApprovalGate(RecoverApprovalGate):
    """The core's confirm(plan): publish the plan, pause with the recovery's form, judge, audit."""

    def confirm(self, plan: Plan) -> bool:
        create_markdown_artifact(
            key=_key("plan", plan.cluster), markdown=redact(plan.render()), description=redact(plan.reason)
        )
        text = approval_description(
            plan, str(plan.params.get("diff") or ""), self.timeout_s, journal_path(self.inv).exists()
        )
        return self.ask(text, plan, "restore-kubernetes-approval")


@flow(name="etcd-restore-kubernetes", log_prints=False)
def restore_kubernetes_flow(
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    approve: bool = False,
    approval_timeout_s: int = 3600,
    plan_only: bool = False,
    slot_wait_s: int = 120,
    approval_poll_s: int = 10,
) -> dict | State:
    """Bring the Kubernetes API back on the recovered etcd. Without `approve` the run pauses with
    the plan and waits up to `approval_timeout_s`; `plan_only` shows it and changes nothing."""
    logger = get_run_logger()
    try:
        with (
            audited_run() as run_id,
            cluster_inventory(inventory_block, inventory_path, "restore_kubernetes_flow") as inv,
            recovery_slot(inv.cluster, run_id, slot_wait_s),
        ):
            gate = ApprovalGate(inv, logger, approval_timeout_s, approval_poll_s)

            res = restore_kubernetes(
                inv,
                yes=approve,
                plan_only=plan_only,
                say=logger.info,
                confirm=gate.confirm,
                run_step=run_kubernetes_step,
            )
    except RecoveryNotDone as e:
        logger.error("%s", e)
        return Failed(message=str(e))
    approval = gate.decision
    if approval is None and approve and res.outcome is not None:
        approval = Approval("not-needed", "approve=true: executed without a pause (approved by the caller)")
    create_markdown_artifact(
        key=_key("verdict", res.plan.cluster),
        markdown=verdict_markdown(res, approval),
        description=str(res.status),
    )
    if res.ok:
        logger.info("%s: %s", res.status, res.reason)
        return {**res.to_json(), "approval": approval.sentence if approval else None}
    if res.status is KubernetesStatus.NOT_CONFIRMED:
        why = f"{approval.sentence if approval else 'not approved'}; nothing was changed"
        logger.warning(why)
        if approval is not None and approval.state == "rejected":
            return Cancelled(message=why)
        return Failed(message=why)
    logger.error("%s: %s", res.status, res.reason)
    return Failed(message=f"{res.status}: {res.reason}")
