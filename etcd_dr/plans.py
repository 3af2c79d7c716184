"""Plans: what a planner decided, as data; and the one loop that carries a plan out.

Planners are pure functions from a frozen picture (ClusterState, inventory) to a `Plan`: ordered
`Step`s, each with the host it touches, whether it is destructive, the postcondition that says it
is done, and the one-sentence reason it is there. A dry run is `plan.render()`, for free.

`execute()` is the only thing that changes hosts. For each step it asks the step's handler whether
the postcondition already holds (then the step is SKIPPED: that is what makes a re-run after a crash
safe), else runs it and checks the postcondition again. Every step leaves an audit event. Two hooks
serve the orchestrator: `run_step` wraps each step (a Prefect task run per step: its checkpoint) and
`on_failure` undoes what a failed run left behind (its `Rollback` is in the `Outcome`).

A refused plan carries a closed `Refusal`: BAD_INPUT (the request or inventory is wrong) or UNSAFE
(the cluster is not in a state for it); the CLI maps it to an exit code (etcd_dr/cli/result.py).
Nothing is changed either way.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeAlias, TypeVar

from etcd_dr.errors import EtcdDrError

if TYPE_CHECKING:  # the plans module stays light: stepctx brings the etcd client and SSH
    from etcd_dr.stepctx import Say


class StepState(enum.StrEnum):
    DONE = "done"  # ran, and its postcondition holds
    SKIPPED = "skipped"  # its postcondition already held: nothing was run
    FAILED = "failed"
    NOT_RUN = "not-run"  # an earlier step failed


class Refusal(enum.StrEnum):
    """Why a planner refused: closed, so that callers (the CLI's exit codes: etcd_dr/cli/result.py)
    map it without parsing."""

    BAD_INPUT = "bad-input"  # the operator's request or inventory is wrong
    UNSAFE = "unsafe"  # the cluster or host is not in a state for it


class ParamsError(EtcdDrError):
    """Step params read back (a journal) do not fit their action's params type."""


@dataclass(frozen=True)
class Params:
    """A step action's params: subclass it as a frozen dataclass, one per action, beside the
    action's handler. `to_json()` gives plain JSON (tuples as lists; a field with
    `metadata={"omit_none": True}` left out while None) and `from_json()` reads it back into the
    same types, so a journalled plan resumes with the params it was planned with."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _to_json(v)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Self:
        """Raises ParamsError naming the field that is missing or of the wrong type."""
        hints = typing.get_type_hints(cls)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ParamsError(f"{cls.__name__}: field {f.name!r} is missing")
                continue
            try:
                kw[f.name] = _from_json(hints[f.name], d[f.name])
            except (TypeError, ValueError) as e:
                raise ParamsError(f"{cls.__name__}: field {f.name!r}: {e}") from e
        return cls(**kw)


def _to_json(v: object) -> object:
    if isinstance(v, Params):
        return v.to_json()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (tuple, list)):
        return [_to_json(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _to_json(x) for k, x in v.items()}
    return v


def _from_json(tp: Any, v: object) -> object:
    """v (from JSON) as type tp: str, int, float, bool, an enum, a Params, X | None, tuple[X, ...],
    Mapping[str, X]; anything else is refused (a params type must stay plain data)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_json(inner, v)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"a list, not {type(v).__name__}")
        return tuple(_from_json(args[0], x) for x in v)
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(v, Mapping):
            raise TypeError(f"an object, not {type(v).__name__}")
        return {str(k): _from_json(args[1], x) for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, Params):
        if not isinstance(v, Mapping):
            raise TypeError(f"an object, not {type(v).__name__}")
        return tp.from_json(v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(v)
    if tp is bool:
        if not isinstance(v, bool):
            raise TypeError(f"true or false, not {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"an integer, not {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"a number, not {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise TypeError(f"a string, not {v!r}")
        return v
    raise TypeError(f"type {tp!r} is not a params type")


P = TypeVar("P", bound=Params)


def typed_steps(
    plan: Plan, actions: type[enum.StrEnum], params: Mapping[Any, type[Params]], what: str
) -> Plan:
    """A plan read back from JSON (a journal) with each step's action a member of `actions` and its
    params in the type `params` names for it. Raises ParamsError naming the step for an action or
    params this version does not know (a journal of another version)."""
    steps = []
    for s in plan.steps:
        try:
            action = actions(str(s.action))
        except ValueError:
            raise ParamsError(f"step {s.id}: action {s.action!r} is not a {what} action") from None
        cls = params[action]
        if isinstance(s.params, cls):
            steps.append(dataclasses.replace(s, action=action))
            continue
        if isinstance(s.params, Params):
            raise ParamsError(f"step {s.id}: params are {type(s.params).__name__}, not {cls.__name__}")
        try:
            typed = cls.from_json(s.params)
        except ParamsError as e:
            raise ParamsError(f"step {s.id}: {e}") from None
        steps.append(dataclasses.replace(s, action=action, params=typed))
    return dataclasses.replace(plan, steps=tuple(steps))


def params_json(params: Mapping[str, object] | Params) -> dict[str, object]:
    """A step's params as JSON: typed or (kinds not converted yet) a plain mapping."""
    return params.to_json() if isinstance(params, Params) else dict(params)


@dataclass(frozen=True)
class Step:
    id: str  # unique and stable within a plan (checkpoints key on it), e.g. "member-add:node1"
    action: str  # which handler carries it out (a str or a StrEnum member)
    host: str | None
    description: str  # what it does, as an operator would say it ("run etcd on node1 as a learner")
    postcondition: str  # what holds when it is done ("node1 is a learner member")
    reason: str  # why it is in the plan, one sentence
    destructive: bool = False
    params: Mapping[str, object] | Params = field(default_factory=dict)  # typed: a Params per action
    holds: bool = False  # the planner saw the postcondition hold already (execute() checks again)
    runs: str = ""  # what it runs, for the dry run ("MemberAdd peerURLs=[...] isLearner=true")

    def typed(self, cls: type[P]) -> P:
        """The step's params as its action's params type (a handler's one way to read them)."""
        if not isinstance(self.params, cls):
            raise TypeError(f"step {self.id}: params are {type(self.params).__name__}, not {cls.__name__}")
        return self.params


@dataclass(frozen=True, init=False)
class Plan:
    """What a planner decided. `refusal` set: refused, `reason` says why and what to do, no steps.
    `params` holds what the planner found that its executor and reports need (e.g. a member id)."""

    kind: str  # "learner-add", "recover", ...
    cluster: str
    reason: str  # the decision, one sentence
    steps: tuple[Step, ...]
    refusal: Refusal | None
    params: Mapping[str, object]

    def __init__(
        self,
        kind: str,
        cluster: str,
        reason: str,
        steps: tuple[Step, ...] = (),
        refused: bool = False,
        *,
        refusal: Refusal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> None:
        # `refused=True` without a refusal (the first spelling of this API) means UNSAFE; a str is
        # a refusal read back from to_json()
        if refused and refusal is None:
            refusal = Refusal.UNSAFE
        refusal = Refusal(refusal) if refusal is not None else None
        for name, value in (
            ("kind", kind), ("cluster", cluster), ("reason", reason), ("steps", tuple(steps)),
            ("refusal", refusal), ("params", dict(params or {})),
        ):  # fmt: skip
            object.__setattr__(self, name, value)

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    def render(self) -> str:
        """The dry run: the decision, then one numbered block per step."""
        head = f"{self.kind} plan for cluster {self.cluster}: {self.reason}"
        if self.refusal is not None:
            return f"REFUSED ({self.refusal}): {head}"
        if not self.steps:
            return f"{head}\n  (nothing to do)"
        lines = [head]
        for i, s in enumerate(self.steps, 1):
            flag = " [destructive]" if s.destructive else ""
            held = " (holds already: will be skipped)" if s.holds else ""
            lines.append(f"  {i}. {s.description}{flag}{held}")
            lines.append(f"     why: {s.reason}")
            if s.runs:
                lines.append(f"     runs: {s.runs}")
            lines.append(f"     done when: {s.postcondition}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "cluster": self.cluster,
            "reason": self.reason,
            "refused": self.refused,
            "refusal": str(self.refusal) if self.refusal else None,
            "params": dict(self.params),
            "steps": [
                {
                    "id": s.id,
                    "action": str(s.action),
                    "host": s.host,
                    "description": s.description,
                    "postcondition": s.postcondition,
                    "reason": s.reason,
                    "destructive": s.destructive,
                    "holds": s.holds,
                    "runs": s.runs,
                    "params": params_json(s.params),
                }
                for s in self.steps
            ],
        }


def plan_from_json(d: Mapping[str, Any]) -> Plan:
    """The Plan that Plan.to_json() wrote (unknown keys ignored); its steps' params stay plain JSON
    until the plan kind's typed_plan reads them into their types."""
    step_fields = {f.name for f in dataclasses.fields(Step)}
    plan_fields = {f.name for f in dataclasses.fields(Plan)}
    steps = tuple(Step(**{k: v for k, v in s.items() if k in step_fields}) for s in d["steps"])
    return Plan(**{k: v for k, v in d.items() if k in plan_fields and k != "steps"}, steps=steps)


class StepHandler(Protocol):
    """How one kind of step is carried out and checked."""

    def done(self, step: Step) -> bool | str | None:
        """Whether the step's postcondition holds (read-only): falsy for no; True, or a sentence
        saying what was found ("member 8e9e... has peer URL ..."), for yes."""
        ...

    def run(self, step: Step) -> str | None:
        """Carry the step out; return what was done, one sentence (or None). Raise on failure."""
        ...


@dataclass(frozen=True)
class StepResult:
    step: Step
    state: StepState
    duration_s: float = 0.0
    error: str | None = None
    detail: str = ""  # what was done or found, one sentence ("member 8e9e... added"); the error if FAILED

    @property
    def ok(self) -> bool:
        return self.state in (StepState.DONE, StepState.SKIPPED)


@dataclass(frozen=True)
class Rollback:
    """What an on_failure hook undid after a failed step."""

    done: tuple[str, ...]  # what was undone, one phrase each
    errors: tuple[str, ...]  # what could not be undone

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def sentence(self) -> str:
        s = "; ".join(self.done) if self.done else "nothing to undo"
        return s + (f"; NOT undone: {'; '.join(self.errors)}" if self.errors else "")

    def to_json(self) -> dict:
        return {"ok": self.ok, "done": list(self.done), "errors": list(self.errors)}


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    results: tuple[StepResult, ...]
    rollback: Rollback | None = None  # what on_failure undid, when a step failed and it was given

    @property
    def ok(self) -> bool:
        return not self.plan.refused and all(r.ok for r in self.results)

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
                    "detail": r.detail,
                }
                for r in self.results
            ],
            "rollback": self.rollback.to_json() if self.rollback else None,
        }


@dataclass(frozen=True)
class PlanRun:
    """What one run of a capability came to: its plan, the outcome (None: refused, plan only, or
    not confirmed), whether it was confirmed, and how long it took."""

    plan: Plan
    outcome: Outcome | None
    confirmed: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        return not self.plan.refused and self.confirmed and (self.outcome is None or self.outcome.ok)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "refused": self.plan.refused,
            "reason": self.plan.reason,
            "confirmed": self.confirmed,
            "plan": self.plan.to_json(),
            "steps": self.outcome.to_json()["steps"] if self.outcome else [],
            "duration_s": round(self.duration_s, 3),
        }


class PlanRefused(EtcdDrError):
    """execute() was given a plan its planner refused."""


class PostconditionFailed(EtcdDrError):
    """A step ran without error but its postcondition does not hold."""


StepBody: TypeAlias = Callable[[], StepResult]
# run_step(step, body) -> body(), or body() inside a wrapper (a Prefect task run: the step's checkpoint)
StepRunner: TypeAlias = Callable[[Step, StepBody], StepResult]
# on_failure(failed result) -> what was undone, or None when there was nothing to undo
FailureHook: TypeAlias = Callable[[StepResult], Rollback | None]


def carry_out(
    plan: Plan,
    step: Step,
    handler: StepHandler,
    *,
    audit=None,
    say: Say = lambda _msg: None,
) -> StepResult:
    """One step: postcondition first (SKIPPED when it holds), else run it and check it again.
    Leaves one audit event. Never raises an EtcdDrError: a failure is a FAILED result."""
    t0 = time.monotonic()
    err: str | None = None
    try:
        held = handler.done(step)
        if held:
            state, detail = (
                StepState.SKIPPED,
                held if isinstance(held, str) else f"{step.postcondition} already",
            )
            say(f"skip   {step.description}: {detail}")
        else:
            say(f"run    {step.description}")
            detail = handler.run(step) or ""
            if not handler.done(step):
                raise PostconditionFailed(f"{step.description}: ran, but not true: {step.postcondition}")
            state = StepState.DONE
            say(f"done   {step.description} ({time.monotonic() - t0:.2f} s){': ' + detail if detail else ''}")
    except EtcdDrError as e:
        state, err = StepState.FAILED, str(e)
        detail = err
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
            detail=detail,
            error=err,
        )
    return StepResult(step, state, dt, err, detail)


def execute(
    plan: Plan,
    handlers: Mapping[str, StepHandler],
    *,
    audit=None,
    say: Say = lambda _msg: None,
    run_step: StepRunner | None = None,
    on_failure: FailureHook | None = None,
) -> Outcome:
    """Carry the plan out step by step; stop at the first failure (later steps are NOT_RUN), then
    call on_failure with the failed result (its Rollback goes into the Outcome)."""
    if plan.refused:
        raise PlanRefused(plan.reason)
    missing = sorted({str(s.action) for s in plan.steps} - {str(a) for a in handlers})
    if missing:
        raise ValueError(f"no handler for step action(s): {', '.join(missing)}")
    wrap = run_step or (lambda _step, body: body())
    results: list[StepResult] = []
    failed: StepResult | None = None
    for step in plan.steps:
        if failed is not None:
            results.append(StepResult(step, StepState.NOT_RUN))
            continue
        h = handlers[step.action]
        r = wrap(step, lambda step=step, h=h: carry_out(plan, step, h, audit=audit, say=say))
        results.append(r)
        if r.state is StepState.FAILED:
            failed = r
    rollback = on_failure(failed) if failed is not None and on_failure is not None else None
    return Outcome(plan, tuple(results), rollback)
