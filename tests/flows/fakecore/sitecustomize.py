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

    # the real planner's force-new-cluster plan for a 3-voter RKE cluster (tests/unit/
    # test_recovery.py), its text as is: the form must show this length, not a toy's
    REASON = (
        "quorum lost: 1 of 3 voters reachable; master3 has the highest raft index 65451; force a new "
        "cluster on master3 once, then restart it without the flag; may lose up to 12 raft entries "
        "beyond master3's index 65451 (the highest index observed is 65463)"
    )
    TS = "20261205T221500Z"

    def _plan(cluster: str) -> Plan:
        steps = (
            Step("fence-check", "fence-check", None,
                 "check again that master1 and master2 cannot take part: etcd stopped for good, power "
                 "off, or attested; and that none answers on 2379 or 2380",
                 "master1 and master2: each fenced on positive evidence, none seen answering",
                 "a forked or restored cluster beside a live old member would split the cluster in two"),
            Step("stop:master3", "etcd-stop", "master3", "stop etcd on master3 with its WAL synced",
                 "etcd on master3 is not running",
                 "a killed etcd can lose the commit index it had not synced (etcd-io/etcd#14009)",
                 destructive=True),
            Step("backup:master3", "copy", "master3",
                 f"copy /var/lib/etcd on master3 to /var/lib/etcd.bak-{TS} (kept, never deleted)",
                 f"/var/lib/etcd.bak-{TS} is a complete copy of /var/lib/etcd",
                 "--force-new-cluster rewrites the data dir in place: the copy is the way back"),
            Step("retire:master3", "rename", "master3",
                 f"rename container etcd on master3 to etcd-old-{TS} and keep it, never restarted",
                 f"container etcd-old-{TS} exists on master3 with restart=no",
                 "the old member is kept until the new one is healthy"),
            Step("force-new-cluster:master3", "etcd-run", "master3",
                 "start etcd on master3 once with --force-new-cluster and itself as the only member "
                 "(restart=no)", "etcd on master3 runs with exactly these arguments, restart=no",
                 "it rewrites the membership to this one member and keeps its data", destructive=True),
            Step("wait-forced:master3", "wait", "master3", "wait until master3 leads a one-member cluster",
                 "master3 answers Status as leader", "the flag may come off only once it took effect"),
            Step("recreate:master3", "etcd-run", "master3",
                 "recreate etcd on master3 without --force-new-cluster (restart=always); the forced one "
                 f"is renamed to etcd-forced-{TS} and kept",
                 "etcd on master3 runs with exactly these arguments, restart=always",
                 "--force-new-cluster must not stay on: every restart would force again", destructive=True),
            Step("wait-healthy:master3", "wait", "master3", "wait until master3 leads a one-member cluster",
                 "master3 answers Status as leader", "the member must come back without the flag"),
            Step("verify:master3", "verify", "master3",
                 "verify the recovered cluster on master3: one member, a write accepted, revision >= "
                 "65351, keys counted", "one member (master3), a probe write accepted",
                 "recovery is done when the cluster takes writes"),
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
