"""A faked recovery core for the browser test (tests/flows/test_ui_browser.py): on PYTHONPATH of
`etcd-dr server` and so of every flow run it starts, it replaces `etcd_dr.recovery.run.recover`
before `flows.recover` imports it. The fake plans a force-new-cluster recovery of the inventory's
cluster without contacting a host, asks the flow's real approval gate (`confirm`, the pause with the
form) and "executes" each step through the flow's real `run_step` (one task run per step). Only
the hosts are faked: the Prefect server, the served deployment, the pause and the form are real."""

from __future__ import annotations

import os

if os.environ.get("ETCD_DR_FAKE_CORE") == "1":
    import etcd_dr.recovery.run as _run
    from etcd_dr.plans import Outcome, Plan, Step, StepResult, StepState
    from etcd_dr.recovery.plan import RecoveryPath

    REASON = (
        "quorum lost: 1 of 3 voters answers (master3); master1 and master2 are powered off (the "
        "power driver says so): master3 becomes a one-member cluster with --force-new-cluster, its "
        "data kept"
    )

    def _plan(cluster: str) -> Plan:
        steps = (
            Step("fence-check:master1", "fence-check", "master1", "check master1 is powered off",
                 "master1 is off", "a lost voter must be fenced before the survivor goes alone"),
            Step("fence-check:master2", "fence-check", "master2", "check master2 is powered off",
                 "master2 is off", "a lost voter must be fenced before the survivor goes alone"),
            Step("force-new-cluster:master3", "etcd-run", "master3",
                 "start etcd once with --force-new-cluster", "master3 leads alone",
                 "the only voter left holds the newest data", destructive=True),
            Step("verify:master3", "verify", "master3", "check etcd answers writes",
                 "a write is accepted", "the recovery is done when a write is accepted"),
        )  # fmt: skip
        return Plan("recover", cluster, REASON, steps, params={"path": "force-new-cluster"})

    def fake_recover(inv, *, yes, plan_only, say=print, confirm=None, run_step=None, **_):  # type: ignore[no-untyped-def]
        plan = _plan(inv.cluster)
        path = RecoveryPath.FORCE_NEW_CLUSTER
        if plan_only:
            return _run.RecoverResult(_run.RecoverStatus.PLANNED, plan.reason, plan, path)
        if not yes and not (confirm is not None and confirm(plan)):
            return _run.RecoverResult(_run.RecoverStatus.NOT_CONFIRMED, "not confirmed", plan, path)
        results = []
        for s in plan.steps:
            body = lambda s=s: StepResult(s, StepState.DONE, 0.01, detail=f"{s.postcondition} (faked)")  # noqa: E731
            results.append(run_step(s, body) if run_step else body())
        return _run.RecoverResult(
            _run.RecoverStatus.RECOVERED, f"recovered (faked core): {plan.reason}", plan, path,
            outcome=Outcome(plan, tuple(results)), timings={"observe": 0.1, "execute": 0.1, "total": 0.2},
        )  # fmt: skip

    _run.recover = fake_recover
