"""Plans: what a planner decided, as data; and the one loop that carries a plan out.

Planners are pure functions from a frozen picture (ClusterState, inventory) to a `Plan`: ordered
`Step`s, each with the host it touches, whether it is destructive, the postcondition that says it
is done, and the one-sentence reason it is there. A dry run is `plan.render()`, for free.

`execute()` is the only thing that changes hosts. For each step it asks the step's handler whether
the postcondition already holds (then the step is SKIPPED: that is what makes a re-run after a crash
safe), else runs it and checks the postcondition again. Every step leaves an audit event.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from etcd_dr.errors import EtcdDrError


class StepState(enum.StrEnum):
    DONE = "done"  # ran, and its postcondition holds
    SKIPPED = "skipped"  # its postcondition already held: nothing was run
    FAILED = "failed"
    NOT_RUN = "not-run"  # an earlier step failed


@dataclass(frozen=True)
class Step:
    id: str  # unique and stable within a plan (checkpoints key on it), e.g. "member-add:node1"
    action: str  # which handler carries it out
    host: str | None
    description: str  # what it does, as an operator would say it ("run etcd on node1 as a learner")
    postcondition: str  # what holds when it is done ("node1 is a learner member")
    reason: str  # why it is in the plan, one sentence
    destructive: bool = False
    params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    kind: str  # "learner-add", "recover", ...
    cluster: str
    reason: str  # the decision, one sentence
    steps: tuple[Step, ...] = ()
    refused: bool = False  # the planner refuses to act; reason says why and what to do

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    def render(self) -> str:
        head = f"{self.kind} plan for cluster {self.cluster}: {self.reason}"
        if self.refused:
            return f"REFUSED: {head}"
        if not self.steps:
            return f"{head}\n  (nothing to do)"
        lines = [head]
        for i, s in enumerate(self.steps, 1):
            flag = " [destructive]" if s.destructive else ""
            lines.append(f"  {i}. {s.description}{flag}")
            lines.append(f"     why: {s.reason}")
            lines.append(f"     done when: {s.postcondition}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "cluster": self.cluster,
            "reason": self.reason,
            "refused": self.refused,
            "steps": [
                {
                    "id": s.id,
                    "action": s.action,
                    "host": s.host,
                    "description": s.description,
                    "postcondition": s.postcondition,
                    "reason": s.reason,
                    "destructive": s.destructive,
                    "params": {k: v for k, v in s.params.items()},
                }
                for s in self.steps
            ],
        }


class StepHandler(Protocol):
    """How one kind of step is carried out and checked."""

    def done(self, step: Step) -> bool:
        """True when the step's postcondition already holds (read-only)."""
        ...

    def run(self, step: Step) -> None:
        """Carry the step out. Raise on failure."""
        ...


@dataclass(frozen=True)
class StepResult:
    step: Step
    state: StepState
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    results: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return not self.plan.refused and all(
            r.state in (StepState.DONE, StepState.SKIPPED) for r in self.results
        )

    @property
    def failed(self) -> StepResult | None:
        return next((r for r in self.results if r.state is StepState.FAILED), None)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "plan": self.plan.to_json(),
            "steps": [
                {
                    "id": r.step.id,
                    "state": str(r.state),
                    "duration_s": round(r.duration_s, 3),
                    "error": r.error,
                }
                for r in self.results
            ],
        }


class PlanRefused(EtcdDrError):
    """execute() was given a plan its planner refused."""


class PostconditionFailed(EtcdDrError):
    """A step ran without error but its postcondition does not hold."""


def execute(
    plan: Plan,
    handlers: Mapping[str, StepHandler],
    *,
    audit=None,
    say: Callable[[str], None] = lambda _msg: None,
) -> Outcome:
    """Carry the plan out step by step; stop at the first failure (later steps are NOT_RUN)."""
    if plan.refused:
        raise PlanRefused(plan.reason)
    missing = sorted({s.action for s in plan.steps} - set(handlers))
    if missing:
        raise ValueError(f"no handler for step action(s): {', '.join(missing)}")
    results: list[StepResult] = []
    failed = False
    for step in plan.steps:
        if failed:
            results.append(StepResult(step, StepState.NOT_RUN))
            continue
        h = handlers[step.action]
        t0 = time.monotonic()
        try:
            if h.done(step):
                state, err = StepState.SKIPPED, None
                say(f"skip   {step.description}: {step.postcondition} already")
            else:
                say(f"run    {step.description}")
                h.run(step)
                if not h.done(step):
                    raise PostconditionFailed(f"{step.description}: ran, but not true: {step.postcondition}")
                state, err = StepState.DONE, None
                say(f"done   {step.description} ({time.monotonic() - t0:.2f} s)")
        except EtcdDrError as e:
            state, err, failed = StepState.FAILED, str(e), True
            say(f"FAILED {step.description}: {e}")
        dt = time.monotonic() - t0
        if audit is not None:
            audit.event(
                host=step.host or "-",
                action=f"step:{step.action}",
                outcome={"done": "ok", "skipped": "skipped", "failed": "failed"}[state.value],
                reason=step.reason,
                step=step.id,
                plan=plan.kind,
                destructive=step.destructive,
                duration_s=round(dt, 4),
                error=err,
            )
        results.append(StepResult(step, state, dt, err))
    return Outcome(plan, tuple(results))
