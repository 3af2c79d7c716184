"""Carry out a learner-add Plan: one executor loop, each step checking its postcondition first.

    res = add_learner(inv, "node1", LearnerOptions(promote=True))
    print(res.verdict)   # "node1 joined lab-lb as a learner and caught up in 0.41 s; promoted to voter"

On a failed step after the cluster was touched (member add, start, catch-up, promote), the member is
rolled back so that a retry starts clean: its etcd stopped and renamed aside (`etcd-failed-<ts>`,
restart policy off), the member removed, its data dir moved to `<data_dir>.bak-<UTC ts>` (never
deleted). Every step, membership change and rollback is an audit record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from etcd_dr.audit import AuditLog
from etcd_dr.certissue import existing_pair_problem, issue_member_cert, load_ca, load_ca_cert, read_host_clock
from etcd_dr.certs import CertKeyPair
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd import errors as E
from etcd_dr.etcd.client import EndpointStatus, EtcdClient, Member
from etcd_dr.executor import Executor, audit_log_for, executor_for
from etcd_dr.inventory import Host, Inventory
from etcd_dr.learner.plan import Action, HostFacts, LearnerOptions, Plan, Step, max_lag, plan_learner_add
from etcd_dr.runtime import InitialClusterState, MemberSpec, member_name, runtime_for
from etcd_dr.state import ClusterState, observe

Say = Callable[[str], None]
_TS = "%Y%m%dT%H%M%SZ"
# Steps after which a failure leaves something in the cluster or on the host to undo.
# gRPC's words for a server certificate that does not verify (wrong SANs, another CA)
_TLS_VERIFY_FAILED = ("Verification Check failed", "certificate verify failed", "CERTIFICATE_VERIFY_FAILED")
_ROLLBACK_AFTER = frozenset({Action.MEMBER_ADD, Action.START, Action.WAIT_CAUGHT_UP, Action.PROMOTE})


class StepStatus(enum.StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # its postcondition held already
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    host: str
    action: Action
    status: StepStatus
    detail: str  # one sentence
    duration_s: float


@dataclass(frozen=True)
class RollbackResult:
    done: tuple[str, ...]  # what was undone, one phrase each
    errors: tuple[str, ...]  # what could not be undone

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def sentence(self) -> str:
        s = "; ".join(self.done) if self.done else "nothing to undo"
        return s + (f"; NOT undone: {'; '.join(self.errors)}" if self.errors else "")


@dataclass(frozen=True)
class LearnerAddResult:
    plan: Plan
    results: tuple[StepResult, ...]
    ok: bool
    verdict: str
    member_id: int | None = None
    caught_up_s: float | None = None  # from starting etcd (or the wait, if it ran already) to caught up
    join_s: float | None = None  # member add + start + catch-up
    rollback: RollbackResult | None = None
    duration_s: float = 0.0

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
                    "action": str(r.action),
                    "host": r.host,
                    "status": str(r.status),
                    "detail": r.detail,
                    "duration_s": _r(r.duration_s),
                }
                for r in self.results
            ],
            "rollback": (
                {
                    "ok": self.rollback.ok,
                    "done": list(self.rollback.done),
                    "errors": list(self.rollback.errors),
                }
                if self.rollback
                else None
            ),
        }


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


class StepFailed(EtcdDrError):
    """A step could not reach its postcondition."""


class Session:
    """Live handles for one run on one host: its executor and runtime, an etcd client for the
    voters, the audit log, the CA (given, or read over SSH when a certificate must be signed)."""

    def __init__(
        self,
        inv: Inventory,
        host: str,
        opts: LearnerOptions,
        *,
        ca: CertKeyPair | None = None,
        say: Say | None = None,
        client: EtcdClient | None = None,
    ) -> None:
        self.inv = inv
        self.host: Host = inv.host(host)
        self.opts = opts
        self.ca = ca
        self.say = say or (lambda _m: None)
        self.audit: AuditLog | None = audit_log_for(inv)
        self._ex: Executor | None = None
        self._client = client
        self._own_client = client is None
        self._ca_cert: bytes | None = None
        self.member_id: int | None = None
        self.members: tuple[Member, ...] = ()
        self.t_add: float | None = None
        self.t_start: float | None = None
        self.caught_up_s: float | None = None
        self.t_caught_up: float | None = None

    # -- handles (lazy: a refused plan opens nothing it does not need)

    @property
    def ex(self) -> Executor:
        if self._ex is None:
            self._ex = executor_for(self.inv, self.host, audit=self.audit)
        return self._ex

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            e = self.inv.etcd
            self._client = EtcdClient(
                [self.inv.client_url(v) for v in self.inv.voters],
                ca_cert=e.client.ca_cert,
                cert=e.client.cert,
                key=e.client.key,
                dial_timeout=e.dial_timeout,
                request_timeout=e.request_timeout,
            )
        return self._client

    def runtime(self):
        return runtime_for(self.inv, self.ex, host=self.host, image=self.opts.image, binary=self.opts.binary)

    @property
    def peer_url(self) -> str:
        return self.inv.peer_url(self.host)

    @property
    def client_url(self) -> str:
        return self.inv.client_url(self.host)

    def event(self, action: str, outcome: str, reason: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.event(host=self.host.name, action=action, outcome=outcome, reason=reason, **details)

    def close(self) -> None:
        if self._ex is not None:
            self._ex.close()
            self._ex = None
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads

    def member(self) -> Member | None:
        """The host's member in the linearizable member list (NOTES: a serializable one may still
        show a just-promoted member as a learner)."""
        self.members = self.client.member_list(linearizable=True)
        for m in self.members:
            if self.peer_url in m.peer_urls:
                self.member_id = m.id
                return m
        return None

    def data_dir_in_use(self) -> bool:
        return self.ex.run(["test", "-d", f"{self.inv.etcd.data_dir}/member"], check=False).ok

    def ca_cert_pem(self) -> bytes:
        """The CA certificate (no key): the given CA's, else read once from the `ca:` host."""
        if self._ca_cert is None:
            self._ca_cert = self.ca.cert_pem if self.ca else load_ca_cert(self.inv)
        return self._ca_cert


# ---------------------------------------------------------------------------------------------
# Facts and the whole run


def gather_facts(s: Session) -> HostFacts:
    """Read-only probe of the target host for the planner."""
    try:
        clock = read_host_clock(s.ex)
        rt = s.runtime()
        exists = rt.exists()
        return HostFacts(
            host=s.host.name,
            cert_problem=existing_pair_problem(
                s.inv, s.host, s.ca_cert_pem(), s.ex, clock.now, ips=s.opts.ips, dns=s.opts.dns
            ),
            data_dir_in_use=s.data_dir_in_use(),
            runtime_exists=exists,
            runtime_running=exists and rt.is_running(),
            clock_skew_s=clock.skew_s,
        )
    except InputError:
        raise
    except EtcdDrError as e:
        return HostFacts(host=s.host.name, ssh_error=str(e))


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
    with Session(inv, host, opts, ca=ca, say=say) as s:
        facts = gather_facts(s) if probe_wanted(inv, host) else None
        plan = plan_learner_add(inv, state, host, facts, opts)
        if plan.refused or dry_run:
            if plan.refused:
                s.event("learner-add.plan", "refused", plan.verdict)
            return LearnerAddResult(
                plan, (), not plan.refused, plan.verdict, plan.member_id, duration_s=time.monotonic() - t0
            )
        res = execute(plan, s)
    return dataclasses.replace(res, duration_s=time.monotonic() - t0)


def probe_wanted(inv: Inventory, host: str) -> bool:
    """Worth probing over SSH: a host of the inventory that may become a learner."""
    try:
        h = inv.host(host)
    except InputError:
        return False
    return h.is_learner


StepRunner = Callable[[Session, Step], StepResult]
Rollbacker = Callable[[Session, str], RollbackResult]


def execute(
    plan: Plan, s: Session, *, run_step: StepRunner | None = None, rollback: Rollbacker | None = None
) -> LearnerAddResult:
    """The executor loop. run_step/rollback default to the core's; a Prefect flow passes task
    wrappers of the same functions (one task run per step: its checkpoint)."""
    run_step = run_step or run_one
    rollback = rollback or set_aside_member
    t0 = time.monotonic()
    s.event("learner-add.plan", "ok", plan.verdict, steps=[str(st.action) for st in plan.steps])
    s.say(plan.verdict)
    results: list[StepResult] = []
    for step in plan.steps:
        r = run_step(s, step)
        results.append(r)
        s.say(f"{r.action}: {r.status} ({r.duration_s:.2f} s) {r.detail}")
        if r.status is StepStatus.FAILED:
            rb = None
            if step.action in _ROLLBACK_AFTER:
                rb = rollback(s, f"{step.action} failed: {r.detail}")
                s.say(f"rolled back: {rb.sentence}")
            verdict = f"{s.host.name}: {step.action} failed: {r.detail}" + (
                f"; rolled back ({rb.sentence})" if rb else "; nothing in the cluster was changed"
            )
            return LearnerAddResult(
                plan,
                tuple(results),
                False,
                verdict,
                s.member_id,
                s.caught_up_s,
                None,
                rb,
                time.monotonic() - t0,
            )
    join = s.t_caught_up - s.t_add if s.t_add is not None and s.t_caught_up is not None else None
    return LearnerAddResult(
        plan, tuple(results), True, _success(plan, s, results), s.member_id, s.caught_up_s, join, None,
        time.monotonic() - t0,
    )  # fmt: skip


def _success(plan: Plan, s: Session, results: list[StepResult]) -> str:
    if not plan.steps:
        return plan.verdict
    promoted = any(r.action is Action.PROMOTE for r in results)
    added = any(r.action is Action.MEMBER_ADD and r.status is StepStatus.DONE for r in results)
    mid = f"{s.member_id:x}" if s.member_id is not None else "?"
    if added:
        head = f"{s.host.name} joined {plan.cluster} as a learner (member {mid})"
    else:
        head = f"{s.host.name} was a learner of {plan.cluster} already (member {mid})"
    if s.caught_up_s is not None:
        head += f", caught up {s.caught_up_s:.2f} s after {'its start' if s.t_start else 'the wait began'}"
    if promoted:
        head += "; promoted to voter: set its role to etcd in the inventory"
    return head


def run_one(s: Session, step: Step) -> StepResult:
    """Run one step: postcondition first (skip if it holds), then the action, then the postcondition
    again. Records the outcome in the audit log."""
    t0 = time.monotonic()
    check, act = _STEPS[step.action]
    try:
        already = check(s)
        if already is not None:
            status, detail = StepStatus.SKIPPED, already
        else:
            status, detail = StepStatus.DONE, act(s)
    except EtcdDrError as e:
        status, detail = StepStatus.FAILED, str(e)
    dt_s = time.monotonic() - t0
    outcome = {StepStatus.DONE: "ok", StepStatus.SKIPPED: "skipped", StepStatus.FAILED: "failed"}[status]
    s.event(f"learner-add.{step.action}", outcome, step.reason, detail=detail, duration_s=dt_s)
    return StepResult(s.host.name, step.action, status, detail, dt_s)


# ---------------------------------------------------------------------------------------------
# Steps: check(session) -> sentence when the postcondition holds (skip), else None;
#        act(session) -> sentence of what was done, or raises


def _check_cert(s: Session) -> str | None:
    now = read_host_clock(s.ex).now
    why = existing_pair_problem(s.inv, s.host, s.ca_cert_pem(), s.ex, now, ips=s.opts.ips, dns=s.opts.dns)
    return "a valid member certificate signed by kube-ca is there: kept" if why is None else None


def _issue_cert(s: Session) -> str:
    ca = s.ca or load_ca(s.inv)  # the key is read only now, when a certificate must be signed
    res = issue_member_cert(s.inv, s.host, ca, executor=s.ex, ips=s.opts.ips, dns=s.opts.dns)
    return res.reason


def _check_set_aside(s: Session) -> str | None:
    if s.member() is not None:
        return f"{s.host.name} is a member now: its etcd and data dir stay"
    if not s.runtime().exists() and not s.data_dir_in_use():
        return "no old etcd and no old data dir"
    return None


def _set_aside(s: Session) -> str:
    done = _set_aside_runtime(s) + _move_data_dir(s)
    return "; ".join(done) or "nothing was there"


def _check_added(s: Session) -> str | None:
    m = s.member()
    return f"member {m.id:x} has peer URL {s.peer_url}" if m else None


def _member_add(s: Session) -> str:
    s.t_add = time.monotonic()
    end = s.t_add + s.opts.add_timeout
    refused = 0
    while True:
        try:
            r = s.client.member_add([s.peer_url], is_learner=True)
        except E.UnhealthyCluster:
            # NOTES: refused until the peers have been connected for 5 s (strict reconfig check)
            refused += 1
            if time.monotonic() > end:
                raise StepFailed(
                    f"etcd answered `unhealthy cluster` for {s.opts.add_timeout:g} s ({refused} tries); "
                    "check that every voter is connected to its peers"
                ) from None
            time.sleep(0.5)
            continue
        except E.EtcdTimeout:
            m = s.member()  # the outcome of a timed-out write is unknown: look
            if m is None:
                raise
            s.event(
                "member-add",
                "ok",
                "learner added (the call timed out but the member is there)",
                member_id=f"{m.id:x}",
            )
            return f"member {m.id:x} added as a learner (after a timeout)"
        except E.TooManyLearners:
            raise StepFailed("etcd refused: the cluster has its one learner already") from None
        s.member_id = r.member.id
        s.members = r.members
        s.event(
            "member-add",
            "ok",
            f"{s.host.name} added as a learner",
            member_id=f"{r.member.id:x}",
            peer_url=s.peer_url,
        )
        waited = f" after {refused} `unhealthy cluster` answers" if refused else ""
        return f"member {r.member.id:x} added as a learner{waited}"


def _check_started(s: Session) -> str | None:
    # running is enough: a member still receiving a big db does not answer yet (the wait's job)
    return f"etcd runs on {s.host.name}" if s.runtime().is_running() else None


def _initial_cluster(s: Session) -> tuple[tuple[str, str], ...]:
    """--initial-cluster from the member list as etcd has it (not the inventory): every member's
    name and peer URLs, the new one named the RKE way."""
    if not s.members or all(s.peer_url not in m.peer_urls for m in s.members):
        s.member()
    out: list[tuple[str, str]] = []
    for m in s.members:
        ours = s.peer_url in m.peer_urls
        name = member_name(s.host) if ours else m.name
        if not name:
            raise StepFailed(
                f"member {m.id:x} ({', '.join(m.peer_urls)}) was added but never started: etcd cannot "
                "join a cluster with such a member in --initial-cluster; start or remove it first"
            )
        out += [(name, u) for u in m.peer_urls]
    return tuple(out)


def _probe(s: Session, rt) -> EndpointStatus | None:
    """The member's Status, or None while it does not answer yet (a joining member serves clients
    only once it has applied what it was sent: 17 s for a 1 GiB db). Raises StepFailed when waiting
    cannot help: its etcd exited, or its certificate does not verify."""
    e = s.inv.etcd
    try:
        return s.client.status(s.client_url, timeout=e.dial_timeout)
    except EtcdDrError as err:
        last = str(err)
    if any(x in last for x in _TLS_VERIFY_FAILED):
        raise StepFailed(
            f"etcd on {s.host.name} runs but its certificate does not verify for {s.client_url} "
            f"({last[-200:]}): check the SANs of {e.cert_path(s.host)}"
        )
    if not rt.is_running():
        tail = " | ".join(rt.logs(tail=5).strip().splitlines()[-3:])
        raise StepFailed(f"etcd on {s.host.name} exited: {tail[-400:]}")
    return None


def _start(s: Session) -> str:
    """Start it; done when it answers, or when it has kept running for opts.start_settle (a member
    receiving a big db answers only once caught up: that is the next step's wait)."""
    s.t_start = time.monotonic()
    e = s.inv.etcd
    rt = s.runtime()
    if rt.exists():
        rt.restart()  # an earlier attempt created it for this member: same flags, same data dir
        how = "restarted the existing member"
    else:
        spec = MemberSpec.for_host(
            s.inv, s.host, (), state=InitialClusterState.EXISTING, data_dir=rt.data_dir_for(e.data_dir)
        )
        rt.start(dataclasses.replace(spec, initial_cluster=_initial_cluster(s)))
        how = f"started ({e.runtime}: {getattr(rt, 'image', None) or getattr(rt, 'binary', '')})"
    settle = s.opts.start_settle
    while True:
        st = _probe(s, rt)
        if st is not None:
            return f"{how}; answers as {'a learner' if st.is_learner else 'a voter'} (etcd {st.version})"
        if time.monotonic() - s.t_start >= settle:
            return f"{how}; running for {settle:g} s, not answering yet (still receiving data)"
        time.sleep(0.2)


def _never(_s: Session) -> str | None:
    return None


def _wait_caught_up(s: Session) -> str:
    """Caught up: the learner has applied at least the leader's index when the wait began (so the
    data that existed when it joined is in), and is within max_lag of the leader's index now."""
    lag = max_lag(s.inv, s.opts)
    t0 = time.monotonic()
    end = t0 + s.opts.catchup_timeout
    rt = s.runtime()
    baseline = _leader_status(s, 0).raft_index
    last = "not answering yet"
    while True:
        try:
            mine = _probe(s, rt)
            if mine is not None:
                leader = _leader_status(s, mine.leader)
                behind = leader.raft_index - mine.raft_applied_index
                if mine.leader and mine.raft_applied_index >= baseline and behind <= lag:
                    s.t_caught_up = time.monotonic()
                    s.caught_up_s = s.t_caught_up - (s.t_start or t0)
                    return (
                        f"applied index {mine.raft_applied_index} vs leader {leader.raft_index} "
                        f"(baseline {baseline}, bound {lag}), {s.t_caught_up - t0:.2f} s of waiting; "
                        f"db {mine.db_size} bytes"
                    )
                last = (
                    f"applied {mine.raft_applied_index}, leader at {leader.raft_index}, baseline {baseline}"
                )
        except StepFailed:
            raise
        except EtcdDrError as err:
            last = str(err)
        if time.monotonic() > end:
            raise StepFailed(f"{s.host.name} not caught up after {s.opts.catchup_timeout:g} s: {last[-300:]}")
        time.sleep(0.1)


def _leader_status(s: Session, leader_id: int):
    for m in s.members:
        if m.id == leader_id and m.client_urls:
            return s.client.status(m.client_urls[0], timeout=s.inv.etcd.dial_timeout)
    # no leader known to the learner yet, or a stale list: ask the voters who leads
    for v in s.inv.voters:
        with contextlib.suppress(EtcdDrError):
            st = s.client.status(s.inv.client_url(v), timeout=s.inv.etcd.dial_timeout)
            if st.is_leader:
                s.member()  # refresh: the leader's client URL is in the list next time
                return st
    raise StepFailed("no voter reports itself leader")


def _check_promoted(s: Session) -> str | None:
    m = s.member()
    if m is None:
        raise StepFailed(f"{s.host.name} is not a member (any more): nothing to promote")
    return f"member {m.id:x} is a voter" if not m.is_learner else None


def _promote(s: Session) -> str:
    assert s.member_id is not None
    end = time.monotonic() + s.opts.promote_timeout
    tries = 0
    while True:
        tries += 1
        try:
            s.client.member_promote(s.member_id)
            break
        except E.LearnerNotInSync:
            if time.monotonic() > end:
                raise StepFailed(
                    "etcd still says the learner is not in sync with the leader after "
                    f"{s.opts.promote_timeout:g} s"
                ) from None
            time.sleep(0.2)
        except E.MemberNotLearner:
            break
        except E.EtcdTimeout:
            if _check_promoted(s) is None:
                raise
            break
    m = s.member()  # linearizable: a serializable read may still say learner (NOTES)
    if m is None or m.is_learner:
        raise StepFailed("promote answered but the linearizable member list still shows a learner")
    s.event("member-promote", "ok", f"{s.host.name} promoted to voter", member_id=f"{m.id:x}", tries=tries)
    return f"member {m.id:x} promoted to voter ({tries} tr{'y' if tries == 1 else 'ies'})"


_STEPS: dict[Action, tuple[Callable[[Session], str | None], Callable[[Session], str]]] = {
    Action.ISSUE_CERT: (_check_cert, _issue_cert),
    Action.SET_ASIDE: (_check_set_aside, _set_aside),
    Action.MEMBER_ADD: (_check_added, _member_add),
    Action.START: (_check_started, _start),
    Action.WAIT_CAUGHT_UP: (_never, _wait_caught_up),
    Action.PROMOTE: (_check_promoted, _promote),
}


# ---------------------------------------------------------------------------------------------
# Rollback / removal: stop + rename aside, member remove, data dir aside. Each part checks first.


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime(_TS)


def _set_aside_runtime(s: Session, label: str = "old") -> list[str]:
    rt = s.runtime()
    if not rt.exists():
        return []
    if rt.is_running():
        rt.stop()
    aside = rt.rename(f"etcd-{label}-{_stamp()}")
    aside.set_restart(False)  # NOTES: a renamed container keeps --restart=always and returns at boot
    name = getattr(aside, "container", None) or getattr(aside, "name", "")
    return [f"etcd stopped and renamed to {name}"]


def _move_data_dir(s: Session) -> list[str]:
    d = s.inv.etcd.data_dir
    if not s.ex.run(["test", "-e", d], check=False).ok:
        return []
    dest = f"{d}.bak-{_stamp()}"
    s.ex.run(["mv", d, dest], reason="move the member's data dir aside (never deleted)")
    return [f"data dir moved to {dest}"]


def _remove_member(s: Session, reason: str) -> list[str]:
    m = s.member()
    if m is None:
        return []
    s.client.member_remove(m.id)
    s.event("member-remove", "ok", reason, member_id=f"{m.id:x}")
    return [f"member {m.id:x} removed"]


def set_aside_member(
    s: Session, reason: str, *, label: str = "failed", action: str = "learner-add.rollback"
) -> RollbackResult:
    """Undo a (partial) learner add so that a retry starts clean: etcd stopped and renamed to
    etcd-<label>-<ts>, the member removed, the data dir moved aside. Each part runs even when
    another failed; what could not be undone is reported."""
    done: list[str] = []
    errors: list[str] = []
    # stop first: a removed member that still runs shuts down, and --restart=always brings it back
    parts = (lambda x: _set_aside_runtime(x, label), lambda x: _remove_member(x, reason), _move_data_dir)
    for part in parts:
        try:
            done += part(s)
        except EtcdDrError as e:
            errors.append(str(e))
    rb = RollbackResult(tuple(done), tuple(errors))
    s.event(action, "ok" if rb.ok else "failed", reason, done=list(done), errors=list(errors))
    return rb


def remove_learner(inv: Inventory, host: str, *, say: Say | None = None) -> RollbackResult:
    """Take host's member out again (learner or promoted), the same way a rollback does. Refused for
    hosts the inventory calls voters (masters are not removed this way)."""
    h = inv.host(host)
    if h.is_voter:
        raise InputError(
            f"{h.name} is an etcd voter in the inventory: etcd-dr does not remove masters this way"
        )
    with Session(inv, host, LearnerOptions(), say=say) as s:
        return set_aside_member(
            s, f"remove {h.name}'s member as asked", label="removed", action="learner.remove"
        )
