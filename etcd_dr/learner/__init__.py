"""Add an etcd learner to a running cluster: a pure planner (plan.py) and one executor (run.py).

from etcd_dr.learner import LearnerOptions, add_learner
res = add_learner(inv, "node1", LearnerOptions(promote=True))
"""

from etcd_dr.learner.plan import (
    Action,
    HostFacts,
    LearnerOptions,
    Plan,
    Refusal,
    Step,
    plan_learner_add,
    render_plan,
)
from etcd_dr.learner.run import (
    LearnerAddResult,
    RollbackResult,
    Session,
    StepResult,
    StepStatus,
    add_learner,
    execute,
    gather_facts,
    remove_learner,
    run_one,
    set_aside_member,
)

__all__ = [
    "Action",
    "HostFacts",
    "LearnerAddResult",
    "LearnerOptions",
    "Plan",
    "Refusal",
    "RollbackResult",
    "Session",
    "Step",
    "StepResult",
    "StepStatus",
    "add_learner",
    "execute",
    "gather_facts",
    "plan_learner_add",
    "remove_learner",
    "render_plan",
    "run_one",
    "set_aside_member",
]
