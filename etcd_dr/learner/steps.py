"""The learner step vocabulary: each action of etcd_dr.learner.plan's plans (learner add, rejoin) is
a `LearnerAction`, a frozen params dataclass and its handler, side by side (`VOCABULARY` pairs
them), on one host's run context (`Ctx`, an etcd_dr.stepctx.StepContext). The planner builds
`Step(action=LearnerAction.X, params=XParams(...))`; the handler reads `step.typed(XParams)`;
`typed_plan` reads a plan's JSON back into the same types.

Every `done()` only observes: it looks at the host and the cluster as they are now (what a check
needs from the host in one round trip: `HostFS.look`) and says what it found in a sentence. What the
result reports (the member id, when it was added, started and caught up, a rejoin's diverged
report) is recorded by `run()` on the context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from etcd_dr.certissue import PairLook, issue_member_cert, load_ca, load_ca_cert, member_cert_problem
from etcd_dr.certs import CertKeyPair
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd import errors as E
from etcd_dr.etcd.client import EndpointStatus, EtcdClient, Member
from etcd_dr.executor import Executor, audit_log_for
from etcd_dr.inventory import Host, Inventory
from etcd_dr.plans import Params, Plan, Step, StepHandler, typed_steps
from etcd_dr.runtime import (
    DockerRuntime,
    InitialClusterState,
    MemberSpec,
    ProcessRuntime,
    member_name,
    runtime_for,
)
from etcd_dr.state import ClusterState, client_for
from etcd_dr.stepctx import Handler, HostFS, Say, StepContext

if TYPE_CHECKING:
    from etcd_dr.diverged.read import DivergedReport

# gRPC's words for a server certificate that does not verify (wrong SANs, another CA)
_TLS_VERIFY_FAILED = ("Verification Check failed", "certificate verify failed", "CERTIFICATE_VERIFY_FAILED")
_TS = "%Y%m%dT%H%M%SZ"


class StepFailed(EtcdDrError):
    """A step could not reach its postcondition."""


def stamp() -> str:
    """The UTC timestamp of names set aside (`etcd-<label>-<ts>`, `<data_dir>.bak-<ts>`)."""
    return dt.datetime.now(dt.UTC).strftime(_TS)


# --- the vocabulary: actions and their params ----------------------------------------------------


class LearnerAction(enum.StrEnum):
    """Every action a learner-add or rejoin plan may hold; `VOCABULARY` names its params and handler."""

    ISSUE_CERT = "issue-cert"
    SET_ASIDE = "set-aside-old-member"  # an old container/unit and data dir of a non-member host
    MEMBER_ADD = "member-add-learner"
    START = "start-etcd"
    WAIT_CAUGHT_UP = "wait-caught-up"
    PROMOTE = "promote"


@dataclass(frozen=True)
class CertParams(Params):
    ips: tuple[str, ...]  # extra SANs beyond the member's own
    dns: tuple[str, ...]


@dataclass(frozen=True)
class SetAsideParams(Params):
    data_dir: str
    report_diverged: bool  # a rejoin: read what the old data holds beyond the cluster first


@dataclass(frozen=True)
class MemberAddParams(Params):
    timeout_s: float  # `unhealthy cluster` until peers have been connected 5 s (NOTES)


@dataclass(frozen=True)
class StartParams(Params):
    settle_s: float  # running this long without exiting counts as started


@dataclass(frozen=True)
class CatchUpParams(Params):
    timeout_s: float
    max_lag: int  # raft entries
    same_revision: bool  # a rejoin: the leader's revision at the same applied index, or not promoted


@dataclass(frozen=True)
class PromoteParams(Params):
    timeout_s: float  # `learner not in sync` while it lags


# --- the context -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Ctx(StepContext):
    """One learner run on one host (etcd_dr.stepctx: executors, file verbs): the etcd build its
    member runs, the CA (given, or read over SSH when a certificate must be signed), a client of the
    cluster; and what run() recorded for the result."""

    host: Host
    image: str | None = None  # the operator's choice (--image/--binary), else the inventory's
    binary: str | None = None
    ca: CertKeyPair | None = None
    endpoints: tuple[str, ...] = ()  # the cluster client's: the inventory's voters unless given
    picture: ClusterState | None = None  # a rejoin: the picture it was planned from
    # recorded by run()
    member_id: int | None = None
    members: tuple[Member, ...] = ()
    t_add: float | None = None
    t_start: float | None = None
    t_caught_up: float | None = None
    caught_up_s: float | None = None
    diverged: DivergedReport | None = None
    # handles, opened when first needed (a refused plan opens nothing it does not need)
    _cluster: EtcdClient | None = field(default=None, init=False, repr=False)
    _ca_cert: bytes | None = field(default=None, init=False, repr=False)

    @classmethod
    def for_host(
        cls,
        inv: Inventory,
        host: str,
        *,
        image: str | None = None,
        binary: str | None = None,
        ca: CertKeyPair | None = None,
        say: Say | None = None,
        endpoints: Sequence[str] = (),
    ) -> Ctx:
        return cls(
            inv, audit_log_for(inv), say or (lambda _m: None), host=inv.host(host), image=image,
            binary=binary, ca=ca, endpoints=tuple(endpoints),
        )  # fmt: skip

    @property
    def ex(self) -> Executor:
        return self.executor(self.host.name)

    @property
    def hostfs(self) -> HostFS:
        return self.fs(self.host.name)

    @property
    def cluster(self) -> EtcdClient:
        """A client of the cluster: the given endpoints (a rejoin asks only the members: a lost
        master's old etcd may answer and never lead), else the inventory's voters."""
        if self._cluster is None:
            eps = list(self.endpoints) or [self.inv.client_url(v) for v in self.inv.voters]
            self._cluster = client_for(self.inv, eps)
        return self._cluster

    def runtime(self) -> DockerRuntime | ProcessRuntime:
        return runtime_for(self.inv, self.ex, host=self.host, image=self.image, binary=self.binary)

    @property
    def peer_url(self) -> str:
        return self.inv.peer_url(self.host)

    @property
    def client_url(self) -> str:
        return self.inv.client_url(self.host)

    def member(self) -> Member | None:
        """The host's member in the linearizable member list (NOTES: a serializable one may still
        show a just-promoted member as a learner). Only looks."""
        return self._find(self.cluster.member_list(linearizable=True))

    def _find(self, members: Sequence[Member]) -> Member | None:
        return next((m for m in members if self.peer_url in m.peer_urls), None)

    def record_member(self) -> Member | None:
        """member(), recorded for the result and the steps after (run() only)."""
        self.members = self.cluster.member_list(linearizable=True)
        m = self._find(self.members)
        if m is not None:
            self.member_id = m.id
        return m

    def ca_cert_pem(self) -> bytes:
        """The CA certificate (no key): the given CA's, else read once from the `ca:` host (a handle
        of the run, like an executor: it does not change while the run looks)."""
        if self._ca_cert is None:
            self._ca_cert = self.ca.cert_pem if self.ca else load_ca_cert(self.inv)
        return self._ca_cert

    def cert_problem(self, p: CertParams, *, tests: Sequence[tuple[str, str]] = ()) -> PairLook:
        """Why the host has no usable member pair for its SANs (None: it has one), its clock, and
        the `test`s asked besides: one round trip to the host."""
        return member_cert_problem(
            self.inv, self.host, self.ca_cert_pem(), self.ex, ips=p.ips, dns=p.dns, tests=tests
        )

    def event(self, action: str, outcome: str, reason: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.event(host=self.host.name, action=action, outcome=outcome, reason=reason, **details)

    def close(self) -> None:
        super().close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


# --- setting an old member aside (a step, and the rollback's parts: etcd_dr.learner.undo) ----------


def set_aside_runtime(c: Ctx, label: str = "old") -> list[str]:
    """The member's etcd stopped and renamed to etcd-<label>-<ts>, restart policy off."""
    rt = c.runtime()
    (st,) = rt.statuses().values()  # exists and running in one look
    if not st.exists:
        return []
    if st.running:
        rt.stop()
    aside = rt.rename(f"etcd-{label}-{stamp()}")
    aside.set_restart(False)  # NOTES: a renamed container keeps --restart=always and returns at boot
    name = aside.container if isinstance(aside, DockerRuntime) else aside.name
    return [f"etcd stopped and renamed to {name}"]


def data_dir_aside(c: Ctx, data_dir: str | None = None) -> str | None:
    """The data dir moved to <data_dir>.bak-<UTC ts> (never deleted); where it went, or None when
    there was none (one round trip either way)."""
    d = data_dir or c.inv.etcd.data_dir
    return c.hostfs.move_aside(
        d, f"bak-{stamp()}", missing_ok=True, reason="move the member's data dir aside (never deleted)"
    )


# --- the handlers, one per action --------------------------------------------------------------------


class IssueCert(Handler[Ctx]):
    """The member's certificate and key, signed by kube-ca for its SANs, valid on its host's clock."""

    def done(self, step: Step) -> str | None:
        why = self.c.cert_problem(step.typed(CertParams)).problem
        return "a valid member certificate signed by kube-ca is there: kept" if why is None else None

    def run(self, step: Step) -> str:
        p, c = step.typed(CertParams), self.c
        ca = c.ca or load_ca(c.inv)  # the key is read only now, when a certificate must be signed
        return issue_member_cert(c.inv, c.host, ca, executor=c.ex, ips=p.ips, dns=p.dns).reason


class SetAside(Handler[Ctx]):
    """A non-member host's old etcd (container or unit) stopped and renamed, its data dir moved
    aside; for a rejoin, what that data holds beyond the recovered cluster is read first."""

    def done(self, step: Step) -> str | None:
        p, c = step.typed(SetAsideParams), self.c
        if c.member() is not None:
            return f"{c.host.name} is a member now: its etcd and data dir stay"
        (st,) = c.runtime().statuses().values()
        if not st.exists and not c.hostfs.is_dir(f"{p.data_dir}/member"):
            return "no old etcd and no old data dir"
        return None

    def run(self, step: Step) -> str:
        p, c = step.typed(SetAsideParams), self.c
        done = set_aside_runtime(c)
        kept = data_dir_aside(c, p.data_dir)
        if kept:
            done.append(f"data dir moved to {kept}")
        if kept and p.report_diverged and c.picture is not None:
            # a lost master's data may hold writes its old majority acknowledged after the survivor's
            # last one: read and report them before anything else happens (nothing dropped silently);
            # imported here: the diverged reader pulls in the snapshot tools, which a learner add
            # does not otherwise need
            from etcd_dr.diverged.read import report_for, save_report

            c.diverged = save_report(c.inv, report_for(c.inv, c.host.name, kept, c.picture, ex=c.ex), c.audit)
            c.say(c.diverged.sentence)
            done.append(c.diverged.sentence)
        return "; ".join(done) or "nothing was there"


class MemberAdd(Handler[Ctx]):
    """`member add --learner` with the host's peer URL, retrying `unhealthy cluster`."""

    def done(self, step: Step) -> str | None:
        m = self.c.member()
        return f"member {m.id:x} has peer URL {self.c.peer_url}" if m else None

    def run(self, step: Step) -> str:
        p, c = step.typed(MemberAddParams), self.c
        c.t_add = time.monotonic()
        end = c.t_add + p.timeout_s
        refused = 0
        while True:
            try:
                r = c.cluster.member_add([c.peer_url], is_learner=True)
            except E.UnhealthyCluster:
                # NOTES: refused until the peers have been connected for 5 s (strict reconfig check)
                refused += 1
                if time.monotonic() > end:
                    raise StepFailed(
                        f"etcd answered `unhealthy cluster` for {p.timeout_s:g} s ({refused} tries); "
                        "check that every voter is connected to its peers"
                    ) from None
                time.sleep(0.5)
                continue
            except E.EtcdTimeout:
                m = c.record_member()  # the outcome of a timed-out write is unknown: look
                if m is None:
                    raise
                c.event(
                    "member-add", "ok", "learner added (the call timed out but the member is there)",
                    member_id=f"{m.id:x}",
                )  # fmt: skip
                return f"member {m.id:x} added as a learner (after a timeout)"
            except E.TooManyLearners:
                raise StepFailed("etcd refused: the cluster has its one learner already") from None
            c.member_id, c.members = r.member.id, r.members
            c.event(
                "member-add", "ok", f"{c.host.name} added as a learner", member_id=f"{r.member.id:x}",
                peer_url=c.peer_url,
            )  # fmt: skip
            waited = f" after {refused} `unhealthy cluster` answers" if refused else ""
            return f"member {r.member.id:x} added as a learner{waited}"


def _initial_cluster(c: Ctx) -> tuple[tuple[str, str], ...]:
    """--initial-cluster from the member list as etcd has it (not the inventory): every member's
    name and peer URLs, the new one named the RKE way."""
    if not c.members or c._find(c.members) is None:
        c.record_member()
    out: list[tuple[str, str]] = []
    for m in c.members:
        ours = c.peer_url in m.peer_urls
        name = member_name(c.host) if ours else m.name
        if not name:
            raise StepFailed(
                f"member {m.id:x} ({', '.join(m.peer_urls)}) was added but never started: etcd cannot "
                "join a cluster with such a member in --initial-cluster; start or remove it first"
            )
        out += [(name, u) for u in m.peer_urls]
    return tuple(out)


def _probe(c: Ctx, rt: DockerRuntime | ProcessRuntime) -> EndpointStatus | None:
    """The member's Status, or None while it does not answer yet (a joining member serves clients
    only once it has applied what it was sent: 17 s for a 1 GiB db). Raises StepFailed when waiting
    cannot help: its etcd exited, or its certificate does not verify."""
    e = c.inv.etcd
    try:
        return c.cluster.status(c.client_url, timeout=e.dial_timeout)
    except EtcdDrError as err:
        last = str(err)
    if any(x in last for x in _TLS_VERIFY_FAILED):
        raise StepFailed(
            f"etcd on {c.host.name} runs but its certificate does not verify for {c.client_url} "
            f"({last[-200:]}): check the SANs of {e.cert_path(c.host)}"
        )
    if not rt.is_running():
        tail = " | ".join(rt.logs(tail=5).strip().splitlines()[-3:])
        raise StepFailed(f"etcd on {c.host.name} exited: {tail[-400:]}")
    return None


class Start(Handler[Ctx]):
    """etcd started on the host to join with --initial-cluster-state=existing; done when it runs
    (a member still receiving a big db does not answer yet: that is the wait's job)."""

    def done(self, step: Step) -> str | None:
        return f"etcd runs on {self.c.host.name}" if self.c.runtime().is_running() else None

    def run(self, step: Step) -> str:
        """Started; returns once it answers, or once it has kept running for settle_s."""
        p, c = step.typed(StartParams), self.c
        c.t_start = time.monotonic()
        e = c.inv.etcd
        rt = c.runtime()
        if rt.exists():
            rt.restart()  # an earlier attempt created it for this member: same flags, same data dir
            how = "restarted the existing member"
        else:
            spec = MemberSpec.for_host(
                c.inv, c.host, (), state=InitialClusterState.EXISTING, data_dir=rt.data_dir_for(e.data_dir)
            )
            rt.start(dataclasses.replace(spec, initial_cluster=_initial_cluster(c)))
            built = rt.image if isinstance(rt, DockerRuntime) else rt.binary
            how = f"started ({e.runtime}: {built or ''})"
        while True:
            st = _probe(c, rt)
            if st is not None:
                return f"{how}; answers as {'a learner' if st.is_learner else 'a voter'} (etcd {st.version})"
            if time.monotonic() - c.t_start >= p.settle_s:
                return f"{how}; running for {p.settle_s:g} s, not answering yet (still receiving data)"
            time.sleep(0.2)


def _leader_status(c: Ctx, leader_id: int) -> EndpointStatus:
    for m in c.members:
        if m.id == leader_id and m.client_urls:
            return c.cluster.status(m.client_urls[0], timeout=c.inv.etcd.dial_timeout)
    # no leader known to the learner yet, or a stale list: ask who leads (after all voters were
    # lost, the leader may be on a host the inventory calls a learner)
    for v in c.inv.etcd_hosts:
        if v.name == c.host.name:
            continue
        with contextlib.suppress(EtcdDrError):
            st = c.cluster.status(c.inv.client_url(v), timeout=c.inv.etcd.dial_timeout)
            if st.is_leader:
                c.record_member()  # refresh: the leader's client URL is in the list next time
                return st
    raise StepFailed("no member reports itself leader")


def same_revision(c: Ctx, rt: DockerRuntime | ProcessRuntime, tries: int = 20) -> str:
    """A rejoin copies the recovered member's raft log, and after --force-new-cluster that log can
    lack an entry its store had applied (etcd-io/etcd#14009: applied before the WAL was synced, then
    discarded as uncommitted): the new member then holds other data at other revisions. At one
    applied index a consistent member has the leader's revision; a different one is not promoted.
    Returns what was seen (a clause), or raises StepFailed."""
    for _ in range(tries):
        mine = _probe(c, rt)
        if mine is not None and mine.leader:
            leader = _leader_status(c, mine.leader)
            again = _probe(c, rt)
            at = mine.raft_applied_index
            if again is not None and leader.raft_applied_index == at == again.raft_applied_index:
                if mine.revision != leader.revision:
                    raise StepFailed(
                        f"{c.host.name} has revision {mine.revision} where the leader has "
                        f"{leader.revision} at the same applied index {at}: its copy of the data "
                        "differs (the recovered member's raft log lacks writes its store has, "
                        "etcd-io/etcd#14009); not promoted: restore the cluster from a snapshot of "
                        "the recovered member's db"
                    )
                return f"; revision {mine.revision} as on the leader at applied index {at}"
        time.sleep(0.1)
    return "; revision not compared: the cluster kept applying writes"


class WaitCaughtUp(Handler[Ctx]):
    """Caught up: the learner has applied at least the leader's index when the wait began (so the
    data that existed when it joined is in), and is within max_lag of the leader's index now."""

    def done(self, step: Step) -> str | None:
        # no look ahead: how far behind is relative to now, so the wait always runs; after it, the
        # wait this run recorded is the postcondition seen holding
        if self.c.t_caught_up is None or self.c.caught_up_s is None:
            return None
        return f"{self.c.host.name} caught up {self.c.caught_up_s:.2f} s after its start in this run"

    def run(self, step: Step) -> str:
        p, c = step.typed(CatchUpParams), self.c
        t0 = time.monotonic()
        end = t0 + p.timeout_s
        rt = c.runtime()
        baseline = _leader_status(c, 0).raft_index
        last = "not answering yet"
        while True:
            try:
                mine = _probe(c, rt)
                if mine is not None:
                    leader = _leader_status(c, mine.leader)
                    behind = leader.raft_index - mine.raft_applied_index
                    if mine.leader and mine.raft_applied_index >= baseline and behind <= p.max_lag:
                        same = same_revision(c, rt) if p.same_revision else ""
                        c.t_caught_up = time.monotonic()
                        c.caught_up_s = c.t_caught_up - (c.t_start or t0)
                        return (
                            f"applied index {mine.raft_applied_index} vs leader {leader.raft_index} "
                            f"(baseline {baseline}, bound {p.max_lag}), {c.t_caught_up - t0:.2f} s of "
                            f"waiting; db {mine.db_size} bytes{same}"
                        )
                    last = (
                        f"applied {mine.raft_applied_index}, leader at {leader.raft_index}, "
                        f"baseline {baseline}"
                    )
            except StepFailed:
                raise
            except EtcdDrError as err:
                last = str(err)
            if time.monotonic() > end:
                raise StepFailed(f"{c.host.name} not caught up after {p.timeout_s:g} s: {last[-300:]}")
            time.sleep(0.1)


class Promote(Handler[Ctx]):
    """`member promote`, retrying `not in sync`; done when the linearizable member list shows a voter."""

    def done(self, step: Step) -> str | None:
        m = self.c.member()
        if m is None:
            raise StepFailed(f"{self.c.host.name} is not a member (any more): nothing to promote")
        return f"member {m.id:x} is a voter" if not m.is_learner else None

    def run(self, step: Step) -> str:
        p, c = step.typed(PromoteParams), self.c
        if c.member_id is None and c.record_member() is None:
            raise StepFailed(f"{c.host.name} is not a member (any more): nothing to promote")
        end = time.monotonic() + p.timeout_s
        tries = 0
        while True:
            tries += 1
            try:
                c.cluster.member_promote(c.member_id)
                break
            except E.LearnerNotInSync:
                if time.monotonic() > end:
                    raise StepFailed(
                        f"etcd still says the learner is not in sync with the leader after {p.timeout_s:g} s"
                    ) from None
                time.sleep(0.2)
            except E.MemberNotLearner:
                break
            except E.EtcdTimeout:
                if not self.done(step):
                    raise
                break
        m = c.record_member()  # linearizable: a serializable read may still say learner (NOTES)
        if m is None or m.is_learner:
            raise StepFailed("promote answered but the linearizable member list still shows a learner")
        c.event(
            "member-promote", "ok", f"{c.host.name} promoted to voter", member_id=f"{m.id:x}", tries=tries
        )
        return f"member {m.id:x} promoted to voter ({tries} tr{'y' if tries == 1 else 'ies'})"


# --- the pairing ---------------------------------------------------------------------------------

VOCABULARY: dict[LearnerAction, tuple[type[Params], Callable[[Ctx], StepHandler]]] = {
    LearnerAction.ISSUE_CERT: (CertParams, IssueCert),
    LearnerAction.SET_ASIDE: (SetAsideParams, SetAside),
    LearnerAction.MEMBER_ADD: (MemberAddParams, MemberAdd),
    LearnerAction.START: (StartParams, Start),
    LearnerAction.WAIT_CAUGHT_UP: (CatchUpParams, WaitCaughtUp),
    LearnerAction.PROMOTE: (PromoteParams, Promote),
}


def handlers(c: Ctx) -> dict[str, StepHandler]:
    """The handler of every learner action, on the run's context."""
    return {str(a): h(c) for a, (_, h) in VOCABULARY.items()}


def typed_plan(plan: Plan) -> Plan:
    """A learner plan read back from JSON with each step's action and params in their types; raises
    ParamsError naming the step for an action or params this version does not know."""
    return typed_steps(plan, LearnerAction, {a: cls for a, (cls, _) in VOCABULARY.items()}, "learner")


__all__ = [
    "VOCABULARY",
    "CatchUpParams",
    "CertParams",
    "Ctx",
    "LearnerAction",
    "MemberAddParams",
    "PromoteParams",
    "SetAsideParams",
    "StartParams",
    "StepFailed",
    "data_dir_aside",
    "handlers",
    "same_revision",
    "set_aside_runtime",
    "typed_plan",
]
