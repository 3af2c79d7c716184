"""The learner-add steps as etcd_dr.plans step handlers, one per Action. Each pairs a check (a
sentence when the postcondition holds, else None: etcd_dr.plans.execute skips the step, and checks
again after the run) with an act (the sentence of what was done, or it raises)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from etcd_dr.certissue import existing_pair_problem, issue_member_cert, load_ca, read_host_clock
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd import errors as E
from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.learner.plan import Action, max_lag
from etcd_dr.learner.session import Session
from etcd_dr.learner.undo import data_dir_aside, set_aside_runtime
from etcd_dr.plans import Step, StepHandler
from etcd_dr.runtime import InitialClusterState, MemberSpec, member_name

# gRPC's words for a server certificate that does not verify (wrong SANs, another CA)
_TLS_VERIFY_FAILED = ("Verification Check failed", "certificate verify failed", "CERTIFICATE_VERIFY_FAILED")

Check = Callable[[Session], str | None]
Act = Callable[[Session], str]


class StepFailed(EtcdDrError):
    """A step could not reach its postcondition."""


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
    done = set_aside_runtime(s)
    kept = data_dir_aside(s)
    if kept:
        done.append(f"data dir moved to {kept}")
    if kept and s.opts.rejoin and s.state is not None:
        # a lost master's data may hold writes its old majority acknowledged after the survivor's
        # last one: read and report them before anything else happens (nothing dropped silently)
        from etcd_dr.diverged.read import report_for, save_report

        s.diverged = save_report(s.inv, report_for(s.inv, s.host.name, kept, s.state, ex=s.ex), s.audit)
        s.say(s.diverged.sentence)
        done.append(s.diverged.sentence)
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


def _check_caught_up(s: Session) -> str | None:
    # no look ahead: how far behind is relative to now, so the wait always runs; after it, this
    # run's wait saw the postcondition hold
    if s.t_caught_up is None:
        return None
    return f"{s.host.name} caught up {s.caught_up_s:.2f} s after its start in this run"


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
                    same = _same_revision(s, rt) if s.opts.rejoin else ""
                    s.t_caught_up = time.monotonic()
                    s.caught_up_s = s.t_caught_up - (s.t_start or t0)
                    return (
                        f"applied index {mine.raft_applied_index} vs leader {leader.raft_index} "
                        f"(baseline {baseline}, bound {lag}), {s.t_caught_up - t0:.2f} s of waiting; "
                        f"db {mine.db_size} bytes{same}"
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


def _same_revision(s: Session, rt, tries: int = 20) -> str:
    """A rejoin copies the recovered member's raft log, and after --force-new-cluster that log can
    lack an entry its store had applied (etcd-io/etcd#14009: applied before the WAL was synced, then
    discarded as uncommitted): the new member then holds other data at other revisions. At one
    applied index a consistent member has the leader's revision; a different one is not promoted.
    Returns what was seen (a clause), or raises StepFailed."""
    for _ in range(tries):
        mine = _probe(s, rt)
        if mine is not None and mine.leader:
            leader = _leader_status(s, mine.leader)
            again = _probe(s, rt)
            at = mine.raft_applied_index
            if again is not None and leader.raft_applied_index == at == again.raft_applied_index:
                if mine.revision != leader.revision:
                    raise StepFailed(
                        f"{s.host.name} has revision {mine.revision} where the leader has "
                        f"{leader.revision} at the same applied index {at}: its copy of the data "
                        "differs (the recovered member's raft log lacks writes its store has, "
                        "etcd-io/etcd#14009); not promoted: restore the cluster from a snapshot of "
                        "the recovered member's db"
                    )
                return f"; revision {mine.revision} as on the leader at applied index {at}"
        time.sleep(0.1)
    return "; revision not compared: the cluster kept applying writes"


def _leader_status(s: Session, leader_id: int):
    for m in s.members:
        if m.id == leader_id and m.client_urls:
            return s.client.status(m.client_urls[0], timeout=s.inv.etcd.dial_timeout)
    # no leader known to the learner yet, or a stale list: ask who leads (after all voters were
    # lost, the leader may be on a host the inventory calls a learner)
    for v in s.inv.etcd_hosts:
        if v.name == s.host.name:
            continue
        with contextlib.suppress(EtcdDrError):
            st = s.client.status(s.inv.client_url(v), timeout=s.inv.etcd.dial_timeout)
            if st.is_leader:
                s.member()  # refresh: the leader's client URL is in the list next time
                return st
    raise StepFailed("no member reports itself leader")


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


_STEPS: dict[Action, tuple[Check, Act]] = {
    Action.ISSUE_CERT: (_check_cert, _issue_cert),
    Action.SET_ASIDE: (_check_set_aside, _set_aside),
    Action.MEMBER_ADD: (_check_added, _member_add),
    Action.START: (_check_started, _start),
    Action.WAIT_CAUGHT_UP: (_check_caught_up, _wait_caught_up),
    Action.PROMOTE: (_check_promoted, _promote),
}


@dataclass(frozen=True)
class LearnerStep:
    """An etcd_dr.plans StepHandler: one learner step's check and act, on one session."""

    session: Session
    check: Check
    act: Act

    def done(self, step: Step) -> str | None:
        return self.check(self.session)

    def run(self, step: Step) -> str:
        return self.act(self.session)


def handlers(s: Session) -> dict[str, StepHandler]:
    """The handler of every learner action, bound to the session."""
    return {str(a): LearnerStep(s, check, act) for a, (check, act) in _STEPS.items()}
