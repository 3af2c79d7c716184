"""Add an etcd learner to a running cluster (and bring a lost master back: etcd_dr.rejoin), in the
capability's shape: plan.py (pure: state, inventory, what the host showed -> Plan), steps.py (the
vocabulary: LearnerAction, a frozen params dataclass each and its handler, on the run's
StepContext), add.py (the run: observe, probe, plan, execute) and undo.py (the rollback and
`learner remove`).

from etcd_dr.learner import LearnerOptions, add_learner
res = add_learner(inv, "node1", LearnerOptions(promote=True))
"""

from etcd_dr.learner.add import (
    LearnerAddResult,
    add_learner,
    context_for,
    gather_facts,
    planned_only,
    probe_wanted,
    run_plan,
)
from etcd_dr.learner.plan import Action, HostFacts, LearnerOptions, plan_learner_add
from etcd_dr.learner.steps import VOCABULARY, Ctx, LearnerAction, handlers, typed_plan
from etcd_dr.learner.undo import remove_learner, set_aside_member

__all__ = [
    "VOCABULARY",
    "Action",
    "Ctx",
    "HostFacts",
    "LearnerAction",
    "LearnerAddResult",
    "LearnerOptions",
    "add_learner",
    "context_for",
    "gather_facts",
    "handlers",
    "plan_learner_add",
    "planned_only",
    "probe_wanted",
    "remove_learner",
    "run_plan",
    "set_aside_member",
    "typed_plan",
]
