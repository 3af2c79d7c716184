"""Add a learner (the learner's run): observe, probe the host, plan, and carry the plan out with
etcd_dr.plans.execute on the host's step context (etcd_dr.learner.steps.Ctx).

    res = add_learner(inv, "node1", LearnerOptions(promote=True))
    print(res.verdict)   # "node1 joined lab-lb as a learner (member 8e9e...), caught up 0.41 s after ..."

On a failed step after the cluster was touched (member add, start, catch-up, promote), the member is
rolled back (etcd_dr.learner.undo) so that a retry starts clean. Every step, membership change and
rollback is an audit record.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etcd_dr.certs import CertKeyPair
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.inventory import Inventory
from etcd_dr.learner.plan import REJOIN_KIND, HostFacts, LearnerOptions, plan_learner_add
from etcd_dr.learner.steps import CertParams, Ctx, LearnerAction, handlers
from etcd_dr.learner.undo import set_aside_member
from etcd_dr.plans import Plan, Rollback, StepResult, StepRunner, StepState, execute
from etcd_dr.state import ClusterState, MemberListSource, observe
from etcd_dr.stepctx import Say

if TYPE_CHECKING:
    from etcd_dr.diverged.read import DivergedReport

# Steps after which a failure leaves something in the cluster or on the host to undo.
_ROLLBACK_AFTER = frozenset(
    {LearnerAction.MEMBER_ADD, LearnerAction.START, LearnerAction.WAIT_CAUGHT_UP, LearnerAction.PROMOTE}
)

Rollbacker = Callable[[Ctx, str], Rollback]


@dataclass(frozen=True)
class LearnerAddResult:
    plan: Plan
    results: tuple[StepResult, ...]
    ok: bool
    verdict: str
    member_id: int | None = None
    caught_up_s: float | None = None  # from starting etcd (or the wait, if it ran already) to caught up
    join_s: float | None = None  # member add + start + catch-up
    rollback: Rollback | None = None
    duration_s: float = 0.0
    diverged: DivergedReport | None = None  # a rejoin: what the old member held beyond the cluster

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "member_id": f"{self.member_id:x}" if self.member_id is not None else None,
            "caught_up_s": _r(self.caught_up_s),
            "join_s": _r(self.join_s),
            "duration_s": _r(self.duration_s),
            "plan": self.plan.to_json(),
            "steps": [
                {
                    "action": str(r.step.action),
                    "host": r.step.host,
                    "status": str(r.state),
                    "detail": r.detail,
                    "duration_s": _r(r.duration_s),
                }
                for r in self.results
            ],
            "rollback": self.rollback.to_json() if self.rollback else None,
        }


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


def add_learner(
    inv: Inventory,
    host: str,
    opts: LearnerOptions | None = None,
    *,
    ca: CertKeyPair | None = None,
    dry_run: bool = False,
    say: Say | None = None,
    state: ClusterState | None = None,
) -> LearnerAddResult:
    """Observe, probe the host, plan, and (unless dry_run or refused) execute."""
    t0 = time.monotonic()
    opts = opts or LearnerOptions()
    state = state or observe(inv)
    endpoints = _member_endpoints(inv, state, opts)
    with context_for(inv, host, opts, ca=ca, say=say, endpoints=endpoints) as c:
        if opts.rejoin:
            state = _confirm_member_list(state, c)
            c.picture = state
        facts = gather_facts(c, opts) if probe_wanted(inv, host, opts) else None
        plan = plan_learner_add(inv, state, host, facts, opts)
        if plan.refused or dry_run:
            return planned_only(plan, c, duration_s=time.monotonic() - t0)
        res = run_plan(plan, c)
    return dataclasses.replace(res, duration_s=time.monotonic() - t0, diverged=c.diverged)


def context_for(
    inv: Inventory,
    host: str,
    opts: LearnerOptions,
    *,
    ca: CertKeyPair | None = None,
    say: Say | None = None,
    endpoints: tuple[str, ...] = (),
) -> Ctx:
    """The step context of one learner run on host, with the etcd build the operator chose."""
    return Ctx.for_host(inv, host, image=opts.image, binary=opts.binary, ca=ca, say=say, endpoints=endpoints)


def gather_facts(c: Ctx, opts: LearnerOptions | None = None) -> HostFacts:
    """Read-only probe of the target host for the planner: its member pair, its clock and whether
    its data dir holds a member (one round trip), and its etcd runtime (one)."""
    opts = opts or LearnerOptions()
    try:
        pair = c.cert_problem(
            CertParams(opts.ips, opts.dns), tests=(("-d", f"{c.inv.etcd.data_dir}/member"),)
        )
        (st,) = c.runtime().statuses().values()  # exists and running in one look
        return HostFacts(
            host=c.host.name,
            cert_problem=pair.problem,
            data_dir_in_use=pair.tests[0],
            runtime_exists=st.exists,
            runtime_running=st.exists and st.running,
            clock_skew_s=pair.clock.skew_s,
        )
    except InputError:
        raise
    except EtcdDrError as e:
        return HostFacts(host=c.host.name, ssh_error=str(e))


def probe_wanted(inv: Inventory, host: str, opts: LearnerOptions | None = None) -> bool:
    """Worth probing over SSH: a host of the inventory that may become a learner (to rejoin: a voter
    or a learner host)."""
    try:
        h = inv.host(host)
    except InputError:
        return False
    return (h.is_voter or h.is_learner) if opts is not None and opts.rejoin else h.is_learner


def _member_endpoints(inv: Inventory, state: ClusterState, opts: LearnerOptions) -> tuple[str, ...]:
    """For a rejoin, the client URLs of the inventory hosts that are voter members, the leader
    first: a lost master whose old etcd restarts in a loop answers now and then and never leads (a
    write sent there times out). After all voters were lost the only voter member may be a host
    the inventory calls a learner."""
    if not opts.rejoin:
        return ()
    members = [m for m in state.members if m.in_member_list and not m.is_learner and m.host]
    members.sort(key=lambda m: not (m.status is not None and m.status.is_leader))
    return tuple(inv.client_url(inv.host(str(m.host))) for m in members)


def _confirm_member_list(state: ClusterState, c: Ctx) -> ClusterState:
    """After a recovery the cluster has fewer voters than the inventory, so observe() reads the
    member list from the leader's own view (a majority of the inventory's voters does not answer).
    When the quorum of the members agrees on that same list (a linearizable read), it is
    authoritative."""
    if not state.quorum or state.member_list_source is not MemberListSource.LOCAL:
        return state
    try:
        agreed = {m.id for m in c.cluster.member_list(linearizable=True)}
    except EtcdDrError:
        return state
    if agreed != {m.member_id for m in state.members if m.in_member_list}:
        return state
    return dataclasses.replace(state, member_list_source=MemberListSource.LINEARIZABLE)


def planned_only(plan: Plan, c: Ctx, duration_s: float = 0.0) -> LearnerAddResult:
    """The result of a dry run or a refused plan: nothing was run (a refusal is audited)."""
    if plan.refused:
        c.event(f"{plan.kind}.plan", "refused", plan.reason)
    mid = plan.params.get("member_id")
    member_id = mid if isinstance(mid, int) else None
    return LearnerAddResult(plan, (), not plan.refused, plan.reason, member_id, duration_s=duration_s)


def run_plan(
    plan: Plan, c: Ctx, *, run_step: StepRunner | None = None, rollback: Rollbacker | None = None
) -> LearnerAddResult:
    """Carry a learner-add plan out through etcd_dr.plans.execute, then say how it went. run_step
    and rollback default to the core's; a Prefect flow passes task wrappers (one task run per step:
    its checkpoint)."""
    rollback = rollback or set_aside_member
    t0 = time.monotonic()
    c.event(f"{plan.kind}.plan", "ok", plan.reason, steps=[str(st.action) for st in plan.steps])
    c.say(plan.reason)

    def on_failure(r: StepResult) -> Rollback | None:
        if r.step.action not in _ROLLBACK_AFTER:
            return None
        rb = rollback(c, f"{r.step.action} failed: {r.detail}")
        c.say(f"rolled back: {rb.sentence}")
        return rb

    out = execute(plan, handlers(c), audit=c.audit, say=c.say, run_step=run_step, on_failure=on_failure)
    # the member the steps recorded, else the one the planner saw (its steps held: skipped)
    mid = plan.params.get("member_id")
    member_id = c.member_id if c.member_id is not None else mid if isinstance(mid, int) else None
    failed = out.failed
    if failed is not None:
        rb = out.rollback
        verdict = f"{c.host.name}: {failed.step.action} failed: {failed.detail}" + (
            f"; rolled back ({rb.sentence})" if rb else "; nothing in the cluster was changed"
        )
        return LearnerAddResult(
            plan, out.results, False, verdict, member_id, c.caught_up_s, None, rb, time.monotonic() - t0
        )
    join = c.t_caught_up - c.t_add if c.t_add is not None and c.t_caught_up is not None else None
    return LearnerAddResult(
        plan, out.results, True, _success(plan, c, member_id, out.results), member_id, c.caught_up_s, join,
        None, time.monotonic() - t0,
    )  # fmt: skip


def _success(plan: Plan, c: Ctx, member_id: int | None, results: tuple[StepResult, ...]) -> str:
    if not plan.steps:
        return plan.reason
    promoted = any(r.step.action is LearnerAction.PROMOTE for r in results)
    added = any(r.step.action is LearnerAction.MEMBER_ADD and r.state is StepState.DONE for r in results)
    rejoin = plan.kind == REJOIN_KIND
    mid = f"{member_id:x}" if member_id is not None else "?"
    if added:
        joined = "rejoined" if rejoin else "joined"
        head = f"{c.host.name} {joined} {plan.cluster} as a learner (member {mid})"
    else:
        head = f"{c.host.name} was a learner of {plan.cluster} already (member {mid})"
    if c.caught_up_s is not None:
        head += f", caught up {c.caught_up_s:.2f} s after {'its start' if c.t_start else 'the wait began'}"
    if promoted and rejoin:
        head += f"; promoted: {c.host.name} is a voter again"
    elif promoted:
        head += "; promoted to voter: set its role to etcd in the inventory"
    return head
