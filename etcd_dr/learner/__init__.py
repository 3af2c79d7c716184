"""Add an etcd learner to a running cluster: a pure planner (plan.py) to an etcd_dr.plans.Plan,
carried out by etcd_dr.plans.execute with the learner's step handlers (steps.py) on one host's
live handles (session.py); a failure after the cluster was touched is undone (undo.py).

from etcd_dr.learner import LearnerOptions, add_learner
res = add_learner(inv, "node1", LearnerOptions(promote=True))
"""

from etcd_dr.learner.add import LearnerAddResult, add_learner, planned_only, run_plan
from etcd_dr.learner.plan import Action, HostFacts, LearnerOptions, plan_learner_add
from etcd_dr.learner.session import Session, gather_facts, probe_wanted
from etcd_dr.learner.steps import handlers
from etcd_dr.learner.undo import remove_learner, set_aside_member

__all__ = [
    "Action",
    "HostFacts",
    "LearnerAddResult",
    "LearnerOptions",
    "Session",
    "add_learner",
    "gather_facts",
    "handlers",
    "plan_learner_add",
    "planned_only",
    "probe_wanted",
    "remove_learner",
    "run_plan",
    "set_aside_member",
]
