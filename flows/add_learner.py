"""The learner-add flow: observe, probe the host, plan, then one task run per step (each checks its
postcondition first: the checkpoints), rollback on failure, one markdown artifact with the plan and
the outcome. The CA comes over SSH from the inventory's `ca:` host, or from a Prefect Secret block
holding {"cert": PEM, "key": PEM} (RKE keeps kube-ca's key in cluster.rkestate, not on the nodes)."""

from __future__ import annotations

import json

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcd_dr.audit import register_secret
from etcd_dr.certs import CertKeyPair, check_ca
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.learner import (
    LearnerAddResult,
    LearnerOptions,
    context_for,
    planned_only,
    probe_wanted,
    run_plan,
)
from flows.common import audited_run, cluster_inventory
from tasks.learner import plan_learner, probe_learner_host, rollback_learner, run_learner_step
from tasks.observe import observe_cluster


class LearnerFlowFailed(EtcdDrError):
    """The flow's outcome when the plan was refused or a step failed (after rollback)."""


def ca_from_secret(name: str) -> CertKeyPair:
    """kube-ca from a Prefect Secret block whose value is {"cert": PEM, "key": PEM} (or that JSON)."""
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InputError(f'Secret block {name!r}: expected {{"cert": PEM, "key": PEM}}') from None
    if not isinstance(value, dict) or not {"cert", "key"} <= set(value):
        raise InputError(f'Secret block {name!r}: expected {{"cert": PEM, "key": PEM}}')
    register_secret(value["key"])
    pair = CertKeyPair(str(value["cert"]).encode(), str(value["key"]).encode())
    check_ca(pair, f"Secret block {name!r}")
    return pair


def render_markdown(res: LearnerAddResult) -> str:
    p = res.plan
    lines = [f"## Learner add: {p.params.get('host')} in {p.cluster}", "", f"**Decision.** {p.reason}", ""]
    if p.refused:
        lines.append(f"**Refused ({p.refusal}).** Nothing was changed.")
        return "\n".join(lines)
    done = {r.step.id: r for r in res.results}
    lines += [
        "| # | step | destructive | postcondition | outcome | s | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, st in enumerate(p.steps, 1):
        r = done.get(st.id)
        outcome, secs, detail = (str(r.state), f"{r.duration_s:.2f}", r.detail) if r else ("not run", "", "")
        lines.append(
            f"| {i} | {st.action} | {'yes' if st.destructive else 'no'} | {st.postcondition} | {outcome} "
            f"| {secs} | {detail.replace('|', '/')} |"
        )
    lines += ["", f"**Outcome.** {res.verdict}"]
    if res.join_s is not None:
        lines.append(f"member add to caught up: {res.join_s:.2f} s; total {res.duration_s:.2f} s")
    if res.rollback:
        lines.append(f"**Rollback.** {res.rollback.sentence}")
    return "\n".join(lines)


@flow(name="etcd-add-learner", log_prints=False)
def add_learner_flow(
    host: str,
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    promote: bool = False,
    image: str | None = None,
    binary: str | None = None,
    ca_secret_block: str | None = None,
    dry_run: bool = False,
) -> dict:
    """Add `host` (role etcd-learner in the inventory) as a learner; promote it when asked."""
    logger = get_run_logger()
    opts = LearnerOptions(promote=promote, image=image, binary=binary)
    with audited_run(), cluster_inventory(inventory_block, inventory_path, "add_learner_flow") as inv:
        ca = ca_from_secret(ca_secret_block) if ca_secret_block else None
        state = observe_cluster(inv)
        with context_for(inv, host, opts, ca=ca, say=logger.info) as c:
            facts = probe_learner_host(c, opts) if probe_wanted(inv, host) else None
            plan = plan_learner(inv, state, host, facts, opts)
            if plan.refused or dry_run:
                res = planned_only(plan, c)
            else:
                res = run_plan(plan, c, run_step=run_learner_step, rollback=rollback_learner)
    logger.info(res.verdict)
    create_markdown_artifact(
        key=f"etcd-add-learner-{inv.cluster}".lower().replace("_", "-").replace(".", "-"),
        markdown=render_markdown(res),
        description=res.verdict,
    )
    if not res.ok:
        raise LearnerFlowFailed(res.verdict)
    return res.to_json()
