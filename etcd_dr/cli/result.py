"""One set of exit codes for every command, the one mapping from the core's outcomes to them, and one
way to print a result (one JSON object with --json, else text).

The core reports closed outcomes (a `Health`, a `Refusal`, a `RecoverStatus`, ok or not); only here
do they become process exit codes. A new command returns `exit_for(...)` of its result. One command
passes another code through on purpose: `lab ssh HOST -- CMD` exits with CMD's code, as ssh(1)."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable
from functools import singledispatch
from typing import TYPE_CHECKING

from etcd_dr.state import Health

if TYPE_CHECKING:
    from etcd_dr.plans import Plan, PlanRun, Refusal
    from etcd_dr.recovery.run import RecoverResult
    from etcd_dr.rejoin.run import RejoinResult


class Exit(enum.IntEnum):
    OK = 0  # done, healthy, or a plan shown
    FAILED = 1  # not healthy, a step failed, refused as unsafe, another run holds the cluster
    BAD_INPUT = 2  # the request, the inventory or the confirmation is wrong: nothing was changed
    FORKED = 3  # status only: two clusters that each lead, worse than a lost quorum (other hands)
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


@singledispatch
def exit_for(outcome: object) -> Exit:
    # the results of the commands that act, by type name: importing their modules here would make
    # every command (`status` too) import the recovery and the rejoin at start
    by_name = _BY_NAME.get(type(outcome).__name__)
    if by_name is None:
        raise TypeError(f"no exit code for {type(outcome).__name__}: add it to etcd_dr/cli/result.py")
    return by_name(outcome)


@exit_for.register
def _(ok: bool) -> Exit:
    return Exit.OK if ok else Exit.FAILED


@exit_for.register
def _(health: Health) -> Exit:
    return {
        Health.QUORUM: Exit.OK,
        Health.NO_LEADER: Exit.FAILED,
        Health.QUORUM_LOST: Exit.FAILED,
        Health.FORKED: Exit.FORKED,
    }[health]


# RecoverStatus value -> exit code. A refusal without its closed reason predates Refusal: bad input
# (2), as recover always said.
_RECOVER = {
    "recovered": Exit.OK,
    "planned": Exit.OK,
    "refused": Exit.BAD_INPUT,
    "not-confirmed": Exit.BAD_INPUT,
    "busy": Exit.FAILED,
    "stale": Exit.FAILED,
    "failed": Exit.FAILED,
}


def _recover(res: RecoverResult) -> Exit:
    if res.status == "refused" and res.plan.refusal is not None:
        return exit_for(res.plan.refusal)  # quorum held, a voter not fenced: 1; bad input: 2
    return _RECOVER[str(res.status)]


def _rejoin(res: RejoinResult) -> Exit:
    # the first refusal's code (the hosts after it were not tried), else ok or failed
    refused = next((r.plan.refusal for r in res.results if r.plan.refusal is not None), None)
    return exit_for(refused) if refused is not None else exit_for(res.ok)


def _refusal(refusal: Refusal) -> Exit:
    from etcd_dr.plans import Refusal  # loaded already: the refusal came from a plan

    return Exit.BAD_INPUT if refusal is Refusal.BAD_INPUT else Exit.FAILED


_BY_NAME: dict[str, Callable[..., Exit]] = {
    "Refusal": _refusal,  # by name: a command that runs no plan (snapshot) need not import plans
    "RecoverResult": _recover,
    "RejoinResult": _rejoin,
    # etcd_dr.kubernetes: a decision refused (the rke up it would fail) is unsafe, not bad input
    "Decided": lambda d: exit_for(d.decision.ok),
    "Written": lambda w: Exit.OK,
    "KubernetesResult": lambda r: _KUBERNETES[str(r.status)],
}

# KubernetesStatus value -> exit code: a refused decision (the rke up it would fail) is unsafe, as
# `kubernetes plan` says it; not confirmed is the recovery's 2
_KUBERNETES = {
    "restored": Exit.OK,
    "planned": Exit.OK,
    "refused": Exit.FAILED,
    "not-confirmed": Exit.BAD_INPUT,
    "busy": Exit.FAILED,
    "stale": Exit.FAILED,
    "failed": Exit.FAILED,
}


def plan_exit(plan: Plan, ok: bool) -> Exit:
    """A command that runs one plan: its refusal's code when it refused, else ok or failed."""
    return exit_for(plan.refusal) if plan.refusal is not None else exit_for(ok)


def emit(
    as_json: bool, data: Callable[[], object], text: Callable[[], str | None], *, indent: int | None = 2
) -> None:
    """Print the result: one JSON object (--json) or the text for people (None: nothing to add).
    Both are callables so that only the one asked for is built."""
    out = json.dumps(data(), indent=indent) if as_json else text()
    if out is not None:
        print(out)


def emit_plan_run(as_json: bool, res: PlanRun, what: str, *, plan_only: bool = False) -> Exit:
    """Print one capability's run (the plan when nothing ran, else how it went and the failed
    step), its refusal on stderr, and its exit code: 2 when it was not confirmed (nothing changed)."""

    def text() -> str | None:
        if res.plan.refused:
            return None  # said on stderr
        if plan_only or res.outcome is None:
            return res.plan.render()
        out = f"{what} {'ok' if res.ok else 'FAILED'} in {res.duration_s:.1f} s: {res.plan.reason}"
        if res.outcome.failed is not None:
            out += f"\nfailed step: {res.outcome.failed.step.description}: {res.outcome.failed.error}"
        return out

    emit(as_json, res.to_json, text)
    if res.plan.refused:
        print(f"etcd-dr: {res.plan.reason}", file=sys.stderr)
    if not res.confirmed and not res.plan.refused:
        if not as_json:
            print("etcd-dr: not confirmed: pass --yes; nothing was changed", file=sys.stderr)
        return Exit.BAD_INPUT
    return plan_exit(res.plan, res.ok)
