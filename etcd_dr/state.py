"""A frozen picture of an etcd cluster: what answers, who leads, whether quorum holds.

`observe(inventory)` gathers (SSH reachability of each etcd host, etcd Status of each endpoint, the
member list) in parallel under one deadline, then `assess()` — a pure function — turns what was
gathered into a `ClusterState` with a one-sentence verdict. It works when quorum is lost: Status and
the serializable (local) member list still answer then; the linearizable member list is asked only
when Status says a leader is there, so a lost quorum costs one dial timeout, not a request timeout.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import contextvars
import datetime as dt
import enum
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from etcd_dr.errors import EtcdDrError, HostKeyError
from etcd_dr.etcd.client import EndpointStatus, EtcdClient, Member
from etcd_dr.inventory import Host, Inventory

if TYPE_CHECKING:  # the executor (SSH) is imported only by a look that uses it
    from etcd_dr.executor import Executor


class Reach(enum.StrEnum):
    """How a host answered over SSH."""

    OK = "ok"
    UNREACHABLE = "unreachable"
    HOST_KEY_REFUSED = "host-key-refused"
    NOT_CHECKED = "not-checked"


class Health(enum.StrEnum):
    """What the picture says, closed: `status`'s exit code and the planners' refusals key on it."""

    QUORUM = "quorum"  # one cluster; a majority of voters answer and agree on a leader that answers
    NO_LEADER = "no-leader"  # a majority answers but agrees on no leader (an election, a partition)
    QUORUM_LOST = "quorum-lost"  # fewer than a majority of voters answer
    FORKED = "forked"  # the answering members form two or more clusters that each have a leader


class MemberListSource(enum.StrEnum):
    LINEARIZABLE = "linearizable"  # agreed by the quorum: authoritative
    LOCAL = "local"  # one member's own view (quorum lost): may be stale
    INVENTORY = "inventory"  # no member answered: the inventory's etcd hosts stand in


@dataclass(frozen=True)
class MemberState:
    """One etcd member (or one inventory etcd host that is not, or no longer, a member)."""

    name: str  # the inventory host name when the member maps to one, else etcd's member name
    host: str | None  # inventory host name, None if the member is not in the inventory
    member_name: str | None  # etcd's own name for it (RKE: etcd-<host>); None if not a member
    member_id: int | None
    endpoint: str
    is_learner: bool
    ssh: Reach
    ssh_error: str | None
    status: EndpointStatus | None
    etcd_error: str | None
    in_member_list: bool

    @property
    def etcd_reachable(self) -> bool:
        return self.status is not None

    @property
    def raft_index(self) -> int | None:
        return self.status.raft_index if self.status else None


@dataclass(frozen=True)
class ClusterSide:
    """Answering members that form one cluster, as each of them reports it (Status: the header's
    cluster id, the leader it knows, its term)."""

    cluster_id: int
    leader: str | None  # the member that says it leads this cluster (its own word), None: none does
    members: tuple[str, ...]
    revision: int  # the highest revision among its members: what this side holds
    raft_term: int

    def describe(self) -> str:
        """'master1, master2 (cluster 3ed8..., leader master1, revision 1234)'"""
        lead = f"leader {self.leader}" if self.leader else "no leader"
        return f"{', '.join(self.members)} (cluster {self.cluster_id:x}, {lead}, revision {self.revision})"

    def to_json(self) -> dict:
        return {
            "cluster_id": f"{self.cluster_id:x}",
            "leader": self.leader,
            "members": list(self.members),
            "revision": self.revision,
            "raft_term": self.raft_term,
        }


@dataclass(frozen=True)
class ClusterState:
    cluster: str
    observed_at: dt.datetime
    members: tuple[MemberState, ...]
    member_list_source: MemberListSource
    voters: int
    voters_answering: int
    quorum_needed: int
    quorum: bool
    leader: str | None
    most_advanced: str | None  # reachable member with the highest raft index (voters first on ties)
    verdict: str
    duration_s: float = field(compare=False, default=0.0)
    # the answering members grouped into the clusters they report (one, unless something is wrong)
    clusters: tuple[ClusterSide, ...] = ()
    forked: bool = False  # two or more of `clusters` have a leader: both may accept writes

    @property
    def health(self) -> Health:
        if self.forked:
            return Health.FORKED
        if self.quorum:
            return Health.QUORUM
        return Health.NO_LEADER if self.voters_answering >= self.quorum_needed else Health.QUORUM_LOST

    @property
    def fork_advice(self) -> str:
        """For a refusal on a forked cluster: the verdict (which side holds what) and what to do."""
        return f"{self.verdict}; {FORK_ADVICE}"

    def member(self, name: str) -> MemberState:
        for m in self.members:
            if m.name == name or m.host == name:
                return m
        raise KeyError(name)

    def to_json(self) -> dict:
        """The shape `etcd-dr status --json` prints (documented in README.md)."""
        return {
            "cluster": self.cluster,
            "quorum": self.quorum,
            "health": str(self.health),
            "forked": self.forked,
            "clusters": [c.to_json() for c in self.clusters],
            "verdict": self.verdict,
            "leader": self.leader,
            "voters": self.voters,
            "voters_answering": self.voters_answering,
            "quorum_needed": self.quorum_needed,
            "most_advanced": self.most_advanced,
            "member_list_source": str(self.member_list_source),
            "observed_at": self.observed_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "members": [
                {
                    "name": m.name,
                    "host": m.host,
                    "member_name": m.member_name,
                    "id": f"{m.member_id:x}" if m.member_id is not None else None,
                    "endpoint": m.endpoint,
                    "is_learner": m.is_learner,
                    "reachable": m.etcd_reachable,
                    "ssh": str(m.ssh),
                    # as the member itself reports them (Status): a fork shows here first
                    "cluster_id": f"{m.status.cluster_id:x}" if m.status else None,
                    "reported_id": f"{m.status.member_id:x}" if m.status else None,
                    "reported_leader": f"{m.status.leader:x}" if m.status and m.status.leader else None,
                    "raft_index": m.status.raft_index if m.status else None,
                    "raft_applied_index": m.status.raft_applied_index if m.status else None,
                    "raft_term": m.status.raft_term if m.status else None,
                    "revision": m.status.revision if m.status else None,
                    "version": m.status.version if m.status else None,
                    "db_size": m.status.db_size if m.status else None,
                    "errors": list(m.status.errors) if m.status else [],
                    "error": m.etcd_error or m.ssh_error,
                    "ssh_error": m.ssh_error,
                }
                for m in self.members
            ],
        }


@dataclass(frozen=True)
class Gathered:
    """Raw results of one observation round, before any decision: the input of assess()."""

    statuses: Mapping[str, EndpointStatus | str]  # endpoint -> status, or the error text
    ssh: Mapping[str, tuple[Reach, str | None]]  # inventory host name -> reachability
    member_list: tuple[Member, ...] | None
    member_list_source: MemberListSource
    started: float
    finished: float
    # asked only when two or more members say they lead: each one's own (serializable) member list,
    # as its voters' ids (endpoint -> ids); None where it did not answer
    leader_views: Mapping[str, tuple[int, ...] | None] = field(default_factory=dict)


def _host_of_url(url: str) -> str:
    return urlparse(url).hostname or url


def assess(inv: Inventory, g: Gathered, now: dt.datetime | None = None) -> ClusterState:
    """Pure: decide what the gathered results mean. Unit-tested on fixtures."""
    by_address = {h.address: h for h in inv.etcd_hosts}
    by_name = {h.name: h for h in inv.etcd_hosts}
    members: list[MemberState] = []
    seen_hosts: set[str] = set()

    def host_for(m: Member) -> Host | None:
        if m.name in by_name:
            return by_name[m.name]
        for url in (*m.peer_urls, *m.client_urls):
            h = by_address.get(_host_of_url(url))
            if h:
                return h
        return None

    def state_for(
        name: str, member_name: str | None, host: Host | None, mid: int | None, learner: bool, listed: bool
    ) -> MemberState:
        endpoint = inv.client_url(host) if host else ""
        raw = g.statuses.get(endpoint) if endpoint else None
        status = raw if isinstance(raw, EndpointStatus) else None
        # a member that is not in the inventory has no endpoint we asked; say so
        err = raw if isinstance(raw, str) else (None if host else "not in the inventory: not asked")
        reach, ssh_err = (
            g.ssh.get(host.name, (Reach.NOT_CHECKED, None)) if host else (Reach.NOT_CHECKED, None)
        )
        if status is not None:
            learner = status.is_learner if not listed else learner
            mid = mid if mid is not None else status.member_id
        return MemberState(
            name,
            host.name if host else None,
            member_name,
            mid,
            endpoint,
            learner,
            reach,
            ssh_err,
            status,
            err,
            listed,
        )

    if g.member_list is not None:
        for m in g.member_list:
            h = host_for(m)
            if h:
                seen_hosts.add(h.name)
            # RKE names members etcd-<host>; the operator thinks in hosts. A member added but never
            # started has no name yet.
            name = h.name if h else (m.name or f"{m.id:x}")
            members.append(state_for(name, m.name or None, h, m.id, m.is_learner, True))
    for h in inv.etcd_hosts:
        if h.name not in seen_hosts:
            members.append(state_for(h.name, None, h, None, h.is_learner, g.member_list is None))

    order = {h.name: i for i, h in enumerate(inv.hosts)}
    members.sort(key=lambda m: (order.get(m.host or "", len(order)), m.name))
    listed = [m for m in members if m.in_member_list]
    voters = [m for m in listed if not m.is_learner]
    needed = len(voters) // 2 + 1 if voters else 1
    answering = [m for m in voters if m.status is not None]
    # quorum: a majority of voters answer AND agree on one leader that is a voter and answers itself
    # (for up to an election timeout, survivors still name a leader that just died)
    id_to_name = {m.member_id: m.name for m in listed if m.member_id is not None}
    leader_votes: dict[int, int] = {}
    for m in answering:
        if m.status and m.status.leader:
            leader_votes[m.status.leader] = leader_votes.get(m.status.leader, 0) + 1
    leader_id, votes = max(leader_votes.items(), key=lambda kv: kv[1], default=(0, 0))
    leader_answers = any(m.member_id == leader_id for m in answering)
    quorum = len(answering) >= needed and votes >= needed and leader_answers
    sides = _sides(members, g.leader_views)
    forked = sum(1 for c in sides if c.leader) > 1
    # a fork's majority is a majority of one side's membership, not of the cluster's: never "held"
    quorum = quorum and not forked
    leader = id_to_name.get(leader_id) if quorum else None

    reachable = [m for m in members if m.status is not None]
    most = max(
        reachable,
        key=lambda m: (m.status.raft_index, m.status.raft_applied_index, not m.is_learner),
        default=None,
    )

    if forked:
        verdict = f"forked: the members form {len(sides)} clusters: {_and(c.describe() for c in sides)}"
    else:
        verdict = _verdict(quorum, len(voters), len(answering), leader, most, members, g.member_list_source)
        if len(sides) > 1:
            verdict += f"; the answering members report {len(sides)} cluster ids: " + _and(
                c.describe() for c in sides
            )
    refused = [m.name for m in members if m.ssh is Reach.HOST_KEY_REFUSED]
    if refused:
        verdict += (
            f"; {_and(refused)}: SSH host key refused (not the one in known_hosts), so what is "
            "learnt over SSH there (reachability, files, runtime) is unknown"
        )
    return ClusterState(
        cluster=inv.cluster,
        observed_at=now or dt.datetime.now(dt.UTC),
        members=tuple(members),
        member_list_source=g.member_list_source,
        voters=len(voters),
        voters_answering=len(answering),
        quorum_needed=needed,
        quorum=quorum,
        leader=leader,
        most_advanced=most.name if most else None,
        verdict=verdict,
        duration_s=g.finished - g.started,
        clusters=sides,
        forked=forked,
    )


FORK_ADVICE = (
    "both sides accept writes: stop etcd on the side whose writes you give up (export them first "
    "with `etcd-dr diverged export`), then `etcd-dr rejoin` moves its data aside and joins it to the "
    "other side"
)


def _and(parts: Iterable[str]) -> str:
    items = list(parts)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sides(
    members: Sequence[MemberState], views: Mapping[str, tuple[int, ...] | None]
) -> tuple[ClusterSide, ...]:
    """Group the answering members into the clusters they say they are in. What is a fork:

    - Different cluster ids. A cluster id is fixed when a cluster is bootstrapped (from its first
      membership): two ids that answer are two clusters. A restore onto a survivor makes a new id
      while the lost masters, back together, elect a leader in the old one.
    - One cluster id, two members that each say they lead (their own word, not a follower's). Raft
      elects at most one leader per term, so two leaders at the SAME term are two clusters (a
      --force-new-cluster copy keeps the id). At different terms it is the normal moment after an
      election: the old leader has not heard the new term yet, steps down at the first message that
      carries it, and commits nothing meanwhile (a majority has moved on): not a fork, UNLESS the
      two leaders' own member lists differ. A forced copy lists only itself while the returning old
      members list the old membership; a stale leader shares the membership of the new one.
    - A member naming a leader outside the member list read is not a fork by itself: that list may
      come from either side, and just after a member remove it is normal. The leaders' own lists
      decide instead.
    A side with no leader (members of an old cluster left behind, a removed member restarting)
    accepts no writes: it is listed, it is not a fork, and rejoin sets such members aside.
    """
    by_cluster: dict[int, list[MemberState]] = {}
    for m in members:
        if m.status is not None:
            by_cluster.setdefault(m.status.cluster_id, []).append(m)
    sides: list[list[MemberState]] = []
    heads: list[MemberState | None] = []
    for group in by_cluster.values():
        leaders = sorted((m for m in group if m.status and m.status.is_leader), key=_term, reverse=True)
        teams: list[list[MemberState]] = []  # a distinct leader first, then stale leaders merged in
        for ld in leaders:
            team = next((t for t in teams if not _distinct(t[0], ld, views)), None)
            if team is None:
                teams.append([ld])
            else:
                team.append(ld)
        own = [[*t] for t in teams]
        rest: list[MemberState] = []
        for m in group:
            if m.status is None or m.status.is_leader:
                continue
            named = m.status.leader
            i = next((i for i, t in enumerate(teams) if any(_reported_id(x) == named for x in t)), None)
            if i is None and len(teams) == 1:
                i = 0  # one leader in this cluster: a member that knows none yet is still in it
            (own[i] if i is not None else rest).append(m)
        for t, members_of in zip(teams, own, strict=True):
            sides.append(members_of)
            heads.append(t[0])
        if rest:
            sides.append(rest)
            heads.append(None)
    order = {m.name: i for i, m in enumerate(members)}
    out = []
    for side, head in zip(sides, heads, strict=True):
        side.sort(key=lambda m: order[m.name])
        out.append(
            ClusterSide(
                cluster_id=side[0].status.cluster_id if side[0].status else 0,
                leader=head.name if head else None,
                members=tuple(m.name for m in side),
                revision=max(m.status.revision for m in side if m.status),
                raft_term=max(m.status.raft_term for m in side if m.status),
            )
        )
    out.sort(key=lambda c: order[c.members[0]])
    return tuple(out)


def _reported_id(m: MemberState) -> int:
    """The member id the member itself reports (a restored member has a new one; the member list
    read from the other side still shows its old one)."""
    return m.status.member_id if m.status else 0


def _term(m: MemberState) -> int:
    return m.status.raft_term if m.status else 0


def _distinct(a: MemberState, b: MemberState, views: Mapping[str, tuple[int, ...] | None]) -> bool:
    """Whether two members that both say they lead the same cluster id lead two clusters."""
    if _term(a) == _term(b):
        return True
    va, vb = views.get(a.endpoint), views.get(b.endpoint)
    return va is not None and vb is not None and set(va) != set(vb)


def _verdict(
    quorum: bool,
    voters: int,
    answering: int,
    leader: str | None,
    most: MemberState | None,
    members: list[MemberState],
    source: MemberListSource,
) -> str:
    learners = [m for m in members if m.is_learner and m.in_member_list]
    if quorum:
        s = f"quorum held: {answering} of {voters} voters healthy, leader {leader}"
        down = [m.name for m in members if not m.is_learner and m.in_member_list and m.status is None]
        if down:
            s += f"; not answering: {', '.join(down)}"
        for lm in learners:
            s += f"; learner {lm.name} {'answering' if lm.status else 'not answering'}"
        return s
    if most is None:
        return f"quorum lost: 0 of {voters} voters reachable, no etcd member answers"
    role = "learner " if most.is_learner else ""
    best = f"{role}{most.name} has the highest raft index {most.status.raft_index}"
    if answering >= voters // 2 + 1:
        s = (
            f"no leader: {answering} of {voters} voters answer, enough for quorum, but none leads "
            f"(an election under way, or a partition); {best}"
        )
    else:
        s = f"quorum lost: {answering} of {voters} voters reachable, {best}"
    if source is MemberListSource.INVENTORY:
        s += " (member list unavailable: voters taken from the inventory)"
    return s


ExecutorFactory = Callable[[Host], "Executor"]


def _ssh_probe(make: ExecutorFactory, host: Host, timeout: float = 5.0) -> tuple[Reach, str | None]:
    ex = None
    try:
        ex = make(host)
        ex.run(["true"], timeout=timeout, reason="observe: reachability")
        return Reach.OK, None
    except HostKeyError as e:
        return Reach.HOST_KEY_REFUSED, str(e)
    except EtcdDrError as e:
        return Reach.UNREACHABLE, str(e)
    finally:
        if ex is not None:
            ex.close()


def client_for(
    inv: Inventory,
    endpoints: Sequence[str] | None = None,
    *,
    dial_timeout: float | None = None,
    request_timeout: float | None = None,
    server_names: Mapping[str, str] | None = None,
) -> EtcdClient:
    """The one way from an inventory to an etcd client: its TLS files, every etcd host's client URL
    (or `endpoints`), its timeouts unless given, through the inventory's bastion when it has one.
    `server_names`: see EtcdClient."""
    e = inv.etcd
    dialer = None
    if inv.bastion is not None:  # only then: the executor (SSH) is not imported for nothing
        from etcd_dr.executor import bastion_for

        dialer = bastion_for(inv)
    return EtcdClient(
        list(endpoints) if endpoints is not None else [inv.client_url(h) for h in inv.etcd_hosts],
        ca_cert=e.client.ca_cert,
        cert=e.client.cert,
        key=e.client.key,
        dial_timeout=e.dial_timeout if dial_timeout is None else dial_timeout,
        request_timeout=e.request_timeout if request_timeout is None else request_timeout,
        server_names=server_names,
        dialer=dialer,
    )


def _reason(endpoint: str, message: str) -> str:
    """The why of a one-endpoint failure, without the client's multi-endpoint framing."""
    marker = f"({endpoint}: "
    if marker in message:
        return message.split(marker, 1)[1].removesuffix(")")
    return message


def _submit(pool: cf.ThreadPoolExecutor, fn: Callable, *args: object) -> cf.Future:
    """Submit in a copy of the caller's context: pool threads do not inherit contextvars, and the
    audit records they write must carry the flow run id."""
    return pool.submit(contextvars.copy_context().run, fn, *args)


# `status`: what any one member's etcd and its host's SSH get to answer, all asked at once. A live
# member answers Status in 10-50 ms and SSH in 0.1-0.3 s (the lab on a loaded 2-core machine; a
# second data center adds a few round trips); a dead one then costs 1.2 s once, not the etcd dial
# timeout and then the SSH connect timeout (3.4 s with two masters off, before).
LOOK_DEADLINE_S = 1.2


def observe(
    inv: Inventory,
    *,
    executor_factory: ExecutorFactory | None = None,
    check_ssh: bool = True,
    client: EtcdClient | None = None,
    known_down: Mapping[str, str] | None = None,
    deadline_s: float | None = None,
) -> ClusterState:
    """Look at the cluster once (in parallel, bounded by the inventory's timeouts) and assess it.
    `known_down`: host -> why it cannot answer (a power driver said off just now): not dialed, so a
    look with powered-off hosts costs no dial timeout. `deadline_s`: each member's etcd status and
    its host's SSH answer (connect and `true`) must come within it, all probes at once, so a host
    that answers nothing costs the deadline once (not the dial timeout, then the SSH connect
    timeout); never longer than the inventory's timeouts."""
    started = time.monotonic()
    down = dict(known_down or {})
    dial = inv.etcd.dial_timeout if deadline_s is None else min(deadline_s, inv.etcd.dial_timeout)
    own_client = client is None
    client = client or client_for(inv, dial_timeout=dial)
    if executor_factory is None and check_ssh:
        from etcd_dr.executor import audit_log_for, executor_for

        audit = audit_log_for(inv)

        def executor_factory(h: Host) -> Executor:
            return executor_for(inv, h, audit=audit, connect_timeout=deadline_s)

    up = [h for h in inv.etcd_hosts if h.name not in down]
    probe_s = 5.0 if deadline_s is None else deadline_s
    try:
        with cf.ThreadPoolExecutor(max_workers=2 * len(up) + 1) as pool:
            ask = functools.partial(client.status, timeout=deadline_s)
            status_f = {inv.client_url(h): _submit(pool, ask, inv.client_url(h)) for h in up}
            ssh_f = (
                {h.name: _submit(pool, _ssh_probe, executor_factory, h, probe_s) for h in up}
                if check_ssh and executor_factory
                else {}
            )
            statuses: dict[str, EndpointStatus | str] = {
                inv.client_url(inv.host(h)): why for h, why in down.items()
            }
            for ep, f in status_f.items():
                try:
                    statuses[ep] = f.result()
                except EtcdDrError as e:
                    statuses[ep] = _reason(ep, str(e))
            members, source = _member_list(client, statuses, len(inv.voters))
            views = _leader_views(pool, client, statuses)
            ssh = {name: f.result() for name, f in ssh_f.items()}
            if check_ssh and executor_factory:
                ssh.update({h: (Reach.UNREACHABLE, why) for h, why in down.items()})
    finally:
        if own_client:
            client.close()
    g = Gathered(statuses, ssh, members, source, started, time.monotonic(), views)
    return assess(inv, g)


def _leader_views(
    pool: cf.ThreadPoolExecutor, client: EtcdClient, statuses: Mapping[str, EndpointStatus | str]
) -> dict[str, tuple[int, ...] | None]:
    """When two or more members say they lead: each one's own member list (its voters' ids), which
    tells a stale leader (same membership) from a forked one (assess: _sides). Costs nothing when
    one member leads, the normal case."""
    leaders = [s.endpoint for s in statuses.values() if isinstance(s, EndpointStatus) and s.is_leader]
    if len(leaders) < 2:
        return {}

    def view(ep: str) -> tuple[int, ...] | None:
        try:
            return tuple(
                m.id for m in client.member_list(linearizable=False, endpoint=ep) if not m.is_learner
            )
        except EtcdDrError:
            return None

    futures = {ep: _submit(pool, view, ep) for ep in leaders}
    return {ep: f.result() for ep, f in futures.items()}


def _member_list(
    client: EtcdClient, statuses: Mapping[str, EndpointStatus | str], voters_expected: int
) -> tuple[tuple[Member, ...] | None, MemberListSource]:
    answered = [s for s in statuses.values() if isinstance(s, EndpointStatus)]
    if not answered:
        return None, MemberListSource.INVENTORY
    voters = [s for s in answered if not s.is_learner]
    # Ask the quorum only when it can answer: a majority of the inventory's voters answered and one
    # of them knows a leader. A lone survivor still names the dead leader for up to an election
    # timeout; asking then would cost a full request timeout for nothing.
    if len(voters) >= voters_expected // 2 + 1 and any(s.leader for s in voters):
        try:
            return client.member_list(linearizable=True), MemberListSource.LINEARIZABLE
        except EtcdDrError:
            pass
    # A member that leads a cluster of which it is the only voter is right by itself: after a
    # recovery onto a host the inventory calls a learner (all voters lost), or onto one voter.
    leader = next((s for s in voters if s.is_leader), None)
    if leader is not None:
        with contextlib.suppress(EtcdDrError):
            own = client.member_list(linearizable=False, endpoint=leader.endpoint)
            if [m.id for m in own if not m.is_learner] == [leader.member_id]:
                return own, MemberListSource.LINEARIZABLE
    # quorum (probably) lost: ask the most advanced member for its own view
    best = max(answered, key=lambda s: (not s.is_learner, s.raft_index))
    try:
        return client.member_list(linearizable=False, endpoint=best.endpoint), MemberListSource.LOCAL
    except EtcdDrError:
        return None, MemberListSource.INVENTORY
