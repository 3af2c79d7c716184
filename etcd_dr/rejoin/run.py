"""`etcd-dr rejoin`: bring a lost master back after a recovery. Its old member (container or unit,
running or restarting) is stopped and renamed aside with restart=no and its data dir moved to
<data_dir>.bak-<UTC ts> (never deleted); it is then added as a learner, waited for until caught up
and promoted. This is the learner add (etcd_dr.learner) of an inventory voter with
LearnerOptions(rejoin=True, promote=True); each step checks its postcondition first, so a re-run
continues where an interrupted one stopped.

    res = rejoin(inv, ["master1"])     # or rejoin(inv, None): every inventory voter not a voter member

`etcd-dr rejoin` exits (the mapping is etcd_dr/cli/result.py's): 0 every host named is a voter
again, 1 a step failed (rolled back) or the cluster is not safe to change (no quorum, ...), 2 bad
input (not in the inventory, not a voter there, a voter member already).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from etcd_dr.diverged.read import DivergedReport
from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory
from etcd_dr.learner.add import LearnerAddResult, add_learner
from etcd_dr.learner.plan import REJOIN_KIND, LearnerOptions
from etcd_dr.plans import Plan, Refusal
from etcd_dr.state import ClusterState, observe
from etcd_dr.stepctx import Say


@dataclass(frozen=True)
class RejoinResult:
    results: tuple[LearnerAddResult, ...]
    verdict: str
    duration_s: float
    # what each old member held beyond the recovered cluster, read before its data dir was set aside
    diverged: tuple[DivergedReport, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "duration_s": round(self.duration_s, 3),
            "hosts": [{"host": r.plan.params.get("host"), **r.to_json()} for r in self.results],
            "diverged": [d.to_json() for d in self.diverged],
        }


def missing_voters(inv: Inventory, state: ClusterState) -> list[str]:
    """The inventory's voters that are not voter members of the cluster, in inventory order; then
    its learner hosts that are no member at all (a recovery removed them, or left them behind)."""
    voting = {m.host for m in state.members if m.in_member_list and not m.is_learner}
    listed = {m.host for m in state.members if m.in_member_list}
    learners = [h.name for h in inv.etcd_hosts if h.is_learner and h.name not in listed]
    return [h.name for h in inv.voters if h.name not in voting] + learners


def options_for(inv: Inventory, host: str, opts: LearnerOptions) -> LearnerOptions:
    """A voter of the inventory comes back promoted, with the etcd build asked for; a learner host
    as a learner again, running its own (the inventory's) etcd."""
    if inv.host(host).is_voter:
        return opts
    return dataclasses.replace(opts, promote=False, image=None, binary=None)


def rejoin(
    inv: Inventory,
    hosts: list[str] | None,
    opts: LearnerOptions | None = None,
    *,
    dry_run: bool = False,
    say: Say | None = None,
) -> RejoinResult:
    """Rejoin each host in turn (hosts None: every inventory voter that is not a voter member),
    observing the cluster afresh before each; stops at the first that does not succeed."""
    t0 = time.monotonic()
    opts = opts or LearnerOptions(promote=True, rejoin=True)
    if not (opts.rejoin and opts.promote):
        raise InputError("rejoin needs LearnerOptions(rejoin=True, promote=True)")
    state = observe(inv)
    if state.forked:  # before "nothing to do": one side's member list may well list every voter
        refused = Plan(
            REJOIN_KIND, inv.cluster, state.fork_advice, refusal=Refusal.UNSAFE,
            params={"host": ", ".join(hosts) if hosts else None},
        )  # fmt: skip
        res = LearnerAddResult(refused, (), False, refused.reason)
        return RejoinResult((res,), refused.reason, time.monotonic() - t0)
    todo = list(hosts) if hosts is not None else missing_voters(inv, state)
    if not todo:
        return RejoinResult(
            (), f"{state.verdict}; every inventory voter is a voter member: nothing to do", 0.0
        )
    results: list[LearnerAddResult] = []
    for i, host in enumerate(todo):
        if i:
            state = observe(inv)
        # its set-aside step reads what the old member holds beyond the cluster (etcd_dr.diverged)
        res = add_learner(inv, host, options_for(inv, host, opts), state=state, dry_run=dry_run, say=say)
        results.append(res)
        if not res.ok or dry_run:
            break
    reports = tuple(r.diverged for r in results if r.diverged is not None)
    verdict = "; ".join([*(r.verdict for r in results), *(d.sentence for d in reports if d.count)])
    return RejoinResult(tuple(results), verdict, time.monotonic() - t0, reports)
