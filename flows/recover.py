"""The recovery flow: a thin Prefect layer over `etcd_dr.recovery.run.recover()` (observe, fence, plan,
confirm, execute, verify: all in the core).

What Prefect adds:
- approval: the core's `confirm(plan)` pauses the run (`pause_flow_run(wait_for_input=...)`) with a
  form that shows the plan; it goes on only when the approver ticks `approve` AND types the
  cluster's name. `approve=True` (the CLI's --yes) skips the pause;
- one task run per plan step (`tasks.recover.run_recover_step`): the checkpoint;
- one recovery per cluster: the global concurrency limit `recover-<cluster>` (limit 1, strict),
  held from before observing until the verdict, the approval wait included. The core's flock on
  the journal guards against CLI runs as well;
- artifacts: the plan (markdown), the timeline (table), the verdict (markdown).

Final states: recovered or planned -> Completed; rejected in the form -> Cancelled (an operator's
decision, nothing changed: not an error); approval timed out -> Failed (Prefect fails a run whose
pause expired, whatever the flow proposes: "The flow was ... never resumed."; the verdict artifact
says what happened); refused, busy, failed, or a second run that found the slot taken -> Failed.
Every end but Completed is a returned state whose message is the one sentence (the core's reason,
or the approval's), not an exception: these are outcomes, and a traceback would only bury them.

Setup, once per cluster (also done by every run, and by `prefect deploy` for the `recover`
deployment): `python -m flows.recover ensure-limit --inventory-block NAME` (or --cluster NAME).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.concurrency.sync import concurrency
from prefect.exceptions import FlowPauseTimeout, ObjectAlreadyExists, ObjectNotFound
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled, Failed, State
from pydantic import Field

from etcd_dr.audit import redact
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan
from etcd_dr.recovery.plan import VoterMethod, recovery_path
from etcd_dr.recovery.run import Attestation, RecoverResult, RecoverStatus, journal_path, recover
from flows.common import audited_run, cluster_inventory
from tasks.recover import run_recover_step

# The slot's lease is renewed every 3/4 of it while the run lives; a SIGKILLed run's slot comes free
# when the lease lapses (+ the server's 15 s sweep). 60 s is the server's minimum: a re-run right
# after a crash then waits about a minute, within the default slot_wait_s.
LEASE_S = 60
# A held slot is waited for by reading the limit every SLOT_POLL_S, in this thread, and acquired
# once it reads free. Prefect's own wait runs on a service thread that the process drains at exit:
# a cancelled run waiting there lived on until the runner killed it 30 s later (measured: `etcd-dr
# server` took 34 s to stop with a run waiting for its slot), and shorter attempts there each log
# an ERROR as they time out.
SLOT_POLL_S = 1.0
SLOT_ATTEMPT_S = 2.0
Log = logging.Logger | logging.LoggerAdapter


class RecoveryNotDone(EtcdDrError):
    """Another recovery of the cluster holds the slot: the run ends Failed with this message."""


# --- the concurrency limit -----------------------------------------------------------------------


def limit_name(cluster: str) -> str:
    return f"recover-{cluster}"


def ensure_concurrency_limit(cluster: str) -> GlobalConcurrencyLimitResponse:
    """Create the global concurrency limit `recover-<cluster>` (1 slot, active), or set it back to
    that if someone changed it. Idempotent; safe to call from two runs at once."""
    name = limit_name(cluster)
    with get_client(sync_client=True) as c:
        try:
            cur = c.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it meanwhile
                c.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
                )
        else:
            if cur.limit != 1 or not cur.active:
                # more slots would let two recoveries race; an inactive limit grants nothing, and
                # `concurrency(strict=True)` then refuses to run at all
                c.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
        return c.read_global_concurrency_limit_by_name(name)


def _slot(name: str, run_id: str | None, deadline: float) -> contextlib.AbstractContextManager[None]:
    """Prefect's hold on the slot, with a lease; entering it waits at most SLOT_ATTEMPT_S (or to
    `deadline`) and raises TimeoutError when the slot is still taken."""
    return concurrency(
        name,
        occupy=1,
        strict=True,
        timeout_seconds=max(0.1, min(SLOT_ATTEMPT_S, deadline - time.monotonic())),
        lease_duration=LEASE_S,
        holder=ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None,
        # a recovery under way must not be killed because the Prefect API blinked: the core's flock
        # still keeps a second recovery out
        raise_on_lease_renewal_failure=False,
    )


def _wait_until_free(name: str, deadline: float) -> None:
    """Returns once the limit `name` has a free slot, or at `deadline` (monotonic)."""
    with get_client(sync_client=True) as c:
        while time.monotonic() < deadline:
            lim = c.read_global_concurrency_limit_by_name(name)
            if lim.active_slots < lim.limit:
                return
            time.sleep(max(0.0, min(SLOT_POLL_S, deadline - time.monotonic())))


# --- the approval form ---------------------------------------------------------------------------


class RecoveryApproval(RunInput):
    """The answer to a paused recovery. Nothing is executed unless `approve` is ticked and the
    cluster's name is typed exactly; `approver` (required) and `comment` go to the audit log."""

    # titles without descriptions: each description line is ~24 px that the UI takes from the box
    # showing the plan above the fields (see approval_description)
    approve: bool = Field(default=False, title="Approve: run the plan above, nothing else")
    cluster: str = Field(default="", title="Cluster name, typed to confirm")
    approver: str = Field(min_length=1, title="Your name (audit log)")
    comment: str = Field(default="", title="Comment (audit log)")


class AttestationForm(RecoveryApproval):
    """The approval form plus the hosts the approver attests are down: only for the pause that asks
    for it (a list field is 155 px of the form: on the plan's form it would squeeze the plan out of
    sight, see approval_description)."""

    down: list[str] = Field(
        default_factory=list,
        title="Hosts you attest are down",
        description="The voters you know are down (no power-off or stopped-etcd evidence was found). "
        "Recorded with your name; the plan then says the cluster forks if one still runs",
    )


@dataclass(frozen=True)
class Approval:
    """What became of the approval: `state` is not-needed (approve=True), approved, rejected or
    timed-out; `sentence` says it for the log, the audit record and the verdict."""

    state: str
    sentence: str
    waited_s: float = 0.0
    approver: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("approved", "not-needed")


def judge(answer: RecoveryApproval, cluster: str) -> Approval:
    """The form's answer, decided: approved only with the box ticked and the name typed exactly."""
    who = answer.approver.strip() or "?"
    why = f" ({answer.comment.strip()})" if answer.comment.strip() else ""
    if not answer.approve:
        return Approval("rejected", f"rejected by {who}{why}", approver=who)
    if answer.cluster.strip() != cluster:
        return Approval(
            "rejected",
            f"not approved: {who} ticked approve but typed {answer.cluster.strip()!r}, "
            f"not the cluster's name {cluster!r}{why}",
            approver=who,
        )
    return Approval("approved", f"approved by {who}{why}", approver=who)


def approval_description(
    plan: Plan, timeout_s: int, resumed: bool = False, plan_url: str | None = None
) -> str:
    """The form's text (markdown), short enough to be read where it is shown: Prefect's UI puts it
    in a box above the fields that gets what the fields leave (in a 1280x860 window about 300 px,
    some 12 lines; measured by tests/flows/test_ui_browser.py, which checks the decision and every
    destructive step lie in it). So: the decision, the destructive steps by their
    number in the plan, what approving does and does not allow, and a link to the whole plan (the
    artifact `recover-plan-<cluster>`, also in the run's Artifacts tab)."""
    expires = (datetime.now(UTC) + timedelta(seconds=timeout_s)).strftime("%Y-%m-%d %H:%M UTC")
    destructive = [(i, s) for i, s in enumerate(plan.steps, 1) if s.destructive]
    whole = f"[the plan]({plan_url})" if plan_url else "the plan (the run's Artifacts tab)"
    lines = [
        f"**Recovery of `{plan.cluster}`: approval needed.** {plan.reason}",
        "",
        *(
            ["**Resuming** an unfinished recovery (its journal): steps already done are skipped.", ""]
            if resumed
            else []
        ),
        # the list right under its heading (no blank line: a list may interrupt a paragraph); what a
        # step does, not what follows a ';' or '(' ("; the forced one is kept"): the plan has that
        f"**Destructive: {len(destructive)} of {len(plan.steps)} steps.**",
        *(f"- step {i}: {_on(_gist(s.description), s.host)}" for i, s in destructive),
        "",
        f"**Approve** runs the {len(plan.steps)} steps of {whole} (each with why and done-when), nothing "
        "else; the cluster is checked again first and nothing is done if it changed. "
        f"Expires {expires}, changing nothing.",
    ]
    return redact("\n".join(lines))


def _gist(description: str) -> str:
    return description.split("; ")[0].split(" (")[0]


def _on(description: str, host: str | None) -> str:
    """A step's description naming its host (most already do)."""
    return description if not host or host in description.split() else f"{description} (on {host})"


# --- artifacts -----------------------------------------------------------------------------------


def _key(kind: str, cluster: str) -> str:
    return f"recover-{kind}-{cluster}".lower().replace("_", "-").replace(".", "-")


def plan_markdown(plan: Plan, path: str) -> str:
    lines = [f"## Recovery plan for `{plan.cluster}` ({path})", "", f"**Decision.** {plan.reason}", ""]
    if plan.refused:
        lines.append(f"**Refused ({plan.refusal}).** Nothing is changed.")
    elif plan.steps:
        lines += [
            "| # | step | host | destructive | what | done when | why |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, s in enumerate(plan.steps, 1):
            cells = (
                s.id,
                s.host or "-",
                "yes" if s.destructive else "no",
                s.description,
                s.postcondition,
                s.reason,
            )
            lines.append(f"| {i} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return redact("\n".join(lines))


def timeline_rows(res: RecoverResult, approval: Approval | None) -> list[dict[str, str]]:
    """observe, fence, plan, approval, each step, total: what happened and how long it took."""

    def row(step: str, state: str, secs: float | None, detail: str = "") -> dict[str, str]:
        return {
            "step": step,
            "state": state,
            "duration_s": f"{secs:.2f}" if secs is not None else "",
            "detail": redact(detail),
        }

    t = res.timings
    rows = [row(p, "done", t[p]) for p in ("observe", "fence", "plan") if p in t]
    if res.resumed:
        rows.insert(0, row("journal", "resumed", None, "the unfinished recovery's plan, not planned again"))
    if approval is not None:
        rows.append(row("approval", approval.state, approval.waited_s, approval.sentence))
    if "recheck" in t:  # the fresh look under the cluster lease, just before the first destructive step
        stale = res.status is RecoverStatus.STALE
        fits = (
            "the cluster changed since the plan was made"
            if stale
            else "the plan fits what the cluster is now"
        )
        rows.append(row("recheck", "changed" if stale else "done", t["recheck"], fits))
    done = {r.step.id: r for r in res.outcome.results} if res.outcome else {}
    for s in res.plan.steps:
        r = done.get(s.id)
        rows.append(row(s.id, str(r.state), r.duration_s, r.detail) if r else row(s.id, "not-run", None))
    rows.append(row("total", str(res.status), t.get("total"), res.reason))
    return rows


def verdict_markdown(res: RecoverResult, approval: Approval | None) -> str:
    first = (
        datetime.fromtimestamp(res.first_write_at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
        if res.first_write_at
        else "-"
    )
    facts = [
        ("status", str(res.status)),
        ("path", str(res.path)),
        ("approval", approval.sentence if approval else "-"),
        ("keys", "-" if res.keys is None else str(res.keys)),
        ("revision", "-" if res.revision is None else str(res.revision)),
        ("first write accepted", first),
        ("resumed from journal", "yes" if res.resumed else "no"),
        ("journal", res.journal or "-"),
    ]
    timings = ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items() if not k.startswith("step:"))
    lines = [
        f"## Recovery of `{res.plan.cluster}`: {res.status}",
        "",
        f"**Reason.** {res.reason}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v.replace('|', '/')} |" for k, v in facts),
        "",
        f"**Timings (s).** {timings or '-'}",
    ]
    return redact("\n".join(lines))


def _publish_plan(plan: Plan, path: str) -> str:
    """The plan as the run's artifact; returns its page in the UI (a path: the UI is the server's
    root, and a full URL from the run's PREFECT_API_URL may name a host the browser cannot reach,
    as compose's `http://server:4200`)."""
    aid = create_markdown_artifact(
        key=_key("plan", plan.cluster), markdown=plan_markdown(plan, path), description=redact(plan.reason)
    )
    return f"/artifacts/artifact/{aid}"


# --- the flow ------------------------------------------------------------------------------------


@contextlib.contextmanager
def recovery_slot(cluster: str, run_id: str | None, wait_s: float) -> Iterator[None]:
    """Hold the cluster's one recovery slot (created first if missing). Raises RecoveryNotDone
    when another run holds it for longer than `wait_s`: nothing was done then."""
    ensure_concurrency_limit(cluster)
    name = limit_name(cluster)
    deadline = time.monotonic() + wait_s
    with contextlib.ExitStack() as stack:
        while True:
            _wait_until_free(name, deadline)
            try:
                stack.enter_context(_slot(name, run_id, deadline))
                break
            except TimeoutError:  # taken between the read and the acquire, or still taken
                if time.monotonic() >= deadline:
                    raise RecoveryNotDone(
                        f"another recovery of cluster {cluster} holds the concurrency slot {name} "
                        f"(waited {wait_s:g} s); nothing was done: wait for it, then check `etcd-dr status`"
                    ) from None
        yield


@flow(name="etcd-recover", log_prints=False)
def recover_flow(
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    approve: bool = False,
    method: Literal["restore", "force-new-cluster"] | None = None,
    approval_timeout_s: int = 3600,
    plan_only: bool = False,
    target: str | None = None,
    slot_wait_s: int = 120,
    approval_poll_s: int = 10,
) -> dict | State:
    """Recover one cluster's etcd after quorum loss. Without `approve`, the run pauses with the plan
    and waits up to `approval_timeout_s` for an approver; `plan_only` shows the plan and changes
    nothing. `method`: how a surviving voter becomes a one-member cluster (default: the core's);
    `target`: the host a snapshot restore goes to. A second run for the same cluster waits up to
    `slot_wait_s` for the first to finish, then fails having done nothing."""
    logger = get_run_logger()
    kw: dict[str, Any] = {"method": VoterMethod(method)} if method else {}  # bad input fails first
    if target:
        kw["target"] = target
    try:
        with (
            audited_run() as run_id,
            cluster_inventory(inventory_block, inventory_path, "recover_flow") as inv,
            recovery_slot(inv.cluster, run_id, slot_wait_s),
        ):
            approval = ApprovalGate(inv, logger, approval_timeout_s, approval_poll_s)
            res = recover(
                inv,
                yes=approve,
                plan_only=plan_only,
                say=logger.info,
                confirm=approval.confirm,
                run_step=run_recover_step,
                # unattended (approve=true, an alert-started run): no one to attest; fencing then
                # rests on power-off or stopped-etcd evidence alone
                attest=None if approve or plan_only else approval.attest,
                **kw,
            )
    except RecoveryNotDone as e:
        logger.error("%s", e)
        return Failed(message=str(e))
    if not approval.plan_published:
        _publish_plan(res.plan, str(res.path))
    decision = approval.decision
    if decision is None and approve and res.outcome is not None:
        decision = Approval("not-needed", "approve=true: executed without a pause (approved by the caller)")
    return _finish(res, decision, logger)


class ApprovalGate:
    """The core's confirm(plan) callback: publish the plan, pause the run with the approval form,
    judge the answer, audit it. And attest(refused plan): the same form, asking which silent voters
    the approver attests are down."""

    def __init__(self, inv: Inventory, logger: Log, timeout_s: int, poll_s: int) -> None:
        self.inv, self.audit = inv, audit_log_for(inv)
        self.logger, self.timeout_s, self.poll_s = logger, timeout_s, poll_s
        self.decision: Approval | None = None
        self.plan_published = False

    def confirm(self, plan: Plan) -> bool:
        url = _publish_plan(plan, str(recovery_path(plan)))  # the approver opens it from the form
        self.plan_published = True
        # the core plans afresh or resumes its journal; the journal exists only in the second case
        resumed = journal_path(self.inv).exists()
        return self.ask(approval_description(plan, self.timeout_s, resumed, url), plan, "recover-approval")

    def ask(self, text: str, plan: Plan, action: str) -> bool:
        """Pause with the approval form showing `text`, judge the answer, audit it as `action`."""
        form = RecoveryApproval.with_initial_data(description=text)
        self.logger.info("waiting up to %d s for approval in the Prefect UI: %s", self.timeout_s, plan.reason)
        t0 = time.monotonic()
        comment = ""
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=self.timeout_s, poll_interval=self.poll_s)
            a = judge(answer, plan.cluster)
            comment = answer.comment.strip()
        except FlowPauseTimeout:
            a = Approval("timed-out", f"approval timed out after {self.timeout_s} s")
        a = Approval(a.state, a.sentence, time.monotonic() - t0, a.approver)
        self.decision = a
        (self.logger.info if a.ok else self.logger.warning)("%s", a.sentence)
        if self.audit is not None:
            self.audit.event(
                host="-",
                action=action,
                outcome={"approved": "ok", "rejected": "refused", "timed-out": "timeout"}[a.state],
                reason=a.sentence,
                approver=a.approver,
                comment=comment,
                waited_s=round(a.waited_s, 1),
            )
        return a.ok

    def attest(self, plan: Plan) -> Attestation | None:
        form = AttestationForm.with_initial_data(description=attest_description(plan, self.timeout_s))
        self.logger.warning(
            "no fencing evidence; asking for an attestation in the Prefect UI: %s", plan.reason
        )
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=self.timeout_s, poll_interval=self.poll_s)
        except FlowPauseTimeout:
            return None
        a = judge(answer, plan.cluster)
        down = tuple(dict.fromkeys(h.strip() for h in answer.down if h.strip()))
        if not a.ok or not down:
            self.logger.warning("no attestation: %s", a.sentence if not a.ok else "no host listed")
            return None
        return Attestation(down, str(a.approver), "the approval form")


def attest_description(plan: Plan, timeout_s: int) -> str:
    """The form's text when only voters without evidence stand in the way (markdown)."""
    hosts = ", ".join(f"`{h}`" for h in plan.params.get("unfenced", []))  # type: ignore[union-attr]
    return redact(
        "\n".join(
            [
                f"## Recovery of etcd cluster `{plan.cluster}`: refused for want of fencing evidence",
                "",
                f"**Why.** {plan.reason}",
                "",
                f"No power driver or SSH check proved {hosts} down, and silence is not evidence: a "
                "partitioned majority is silent too. If you KNOW they are down (you see them off), list "
                "them under *Hosts you attest are down*, tick **Approve** and type the cluster's name. "
                "Your name is recorded; a new plan is made and shown for approval, stating that the "
                "cluster forks if one still runs. Anything else changes nothing.",
                "",
                f"This request expires in {timeout_s} s.",
            ]
        )
    )


def _finish(res: RecoverResult, approval: Approval | None, logger: Log) -> dict | State:
    cluster = res.plan.cluster
    create_table_artifact(
        key=_key("timeline", cluster),
        table=timeline_rows(res, approval),
        description=redact(f"**{res.status}**: {res.reason}"),
    )
    create_markdown_artifact(
        key=_key("verdict", cluster), markdown=verdict_markdown(res, approval), description=str(res.status)
    )
    if res.status in (RecoverStatus.RECOVERED, RecoverStatus.PLANNED):
        logger.info("%s: %s", res.status, res.reason)
        return {**res.to_json(), "approval": approval.sentence if approval else None}
    if res.status is RecoverStatus.NOT_CONFIRMED:
        why = f"{approval.sentence if approval else 'not approved'}; nothing was changed"
        logger.warning(why)
        if approval is not None and approval.state == "rejected":
            return Cancelled(message=why)
        return Failed(message=why)  # timed out: Prefect fails the expired pause in any case
    logger.error("%s: %s", res.status, res.reason)
    return Failed(message=f"{res.status}: {res.reason}")


# --- setup ---------------------------------------------------------------------------------------


def _cluster_of_block(block: str) -> str:
    import yaml

    from blocks.inventory import ClusterInventory

    data = yaml.safe_load(ClusterInventory.load(block).inventory_yaml) or {}
    name = data.get("cluster") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise InputError(f"ClusterInventory block {block!r}: its inventory has no cluster name")
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m flows.recover",
        description="Setup for the recovery flow: create the concurrency limit recover-<cluster> (1 slot).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensure-limit", help="create (or repair) the limit recover-<cluster>; idempotent")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--cluster", help="the cluster's name (the inventory's `cluster:`)")
    g.add_argument("--inventory-block", help="a saved ClusterInventory block")
    g.add_argument("-i", "--inventory", help="an inventory file")
    args = p.parse_args(argv)
    try:
        if args.cluster:
            cluster = args.cluster
        elif args.inventory_block:
            cluster = _cluster_of_block(args.inventory_block)
        else:
            from etcd_dr.inventory import load_inventory

            cluster = load_inventory(args.inventory).cluster
        lim = ensure_concurrency_limit(cluster)
    except EtcdDrError as err:
        print(f"etcd-dr: {err}", file=sys.stderr)
        return 2
    print(f"concurrency limit {lim.name}: limit {lim.limit}, active {lim.active}, in use {lim.active_slots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
