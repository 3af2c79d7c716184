"""The learner-add planner: pure, from a ClusterState, the inventory and what was seen on the host to
an etcd_dr.plans.Plan. No I/O here; etcd_dr.learner.add carries a plan out with etcd_dr.plans.execute.

Each step names its host, its action (a LearnerAction) with its typed params (etcd_dr.learner.steps,
beside the handler), what it runs, whether it is destructive, its postcondition (checked first when
it runs: a step whose postcondition holds is skipped, so a re-run after a crash adds no second
member) and one sentence saying why. A refused plan says why in one sentence and whether that is
bad input or an unsafe cluster (a closed Refusal); nothing is changed either way. The plan's params
carry the host, its member id (when it is one already) and what the member runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from etcd_dr.errors import InputError
from etcd_dr.inventory import Host, Inventory, Role, RuntimeKind
from etcd_dr.learner.steps import (
    CatchUpParams,
    CertParams,
    LearnerAction,
    MemberAddParams,
    PromoteParams,
    SetAsideParams,
    StartParams,
)
from etcd_dr.plans import Params, Plan, Refusal, Step
from etcd_dr.runtime import member_name
from etcd_dr.state import ClusterState, MemberListSource, MemberState

Action = LearnerAction  # its first name (callers and flows may still use it)

KIND = "learner-add"
REJOIN_KIND = "rejoin"


@dataclass(frozen=True)
class LearnerOptions:
    """What the operator asked for. image/binary override the inventory for this host."""

    promote: bool = False
    image: str | None = None
    binary: str | None = None
    ips: tuple[str, ...] = ()  # extra SANs
    dns: tuple[str, ...] = ()
    max_lag: int | None = None  # raft entries; default: inventory check.learner_max_lag
    add_timeout: float = 30.0  # `unhealthy cluster` until peers have been connected 5 s (NOTES)
    start_settle: float = 3.0  # a started member that runs this long without exiting counts as started
    catchup_timeout: float = 600.0
    promote_timeout: float = 60.0  # `learner not in sync` while it lags
    # a host of the inventory that is no member any more (back after a recovery): its old member is
    # set aside, running or not; it is added as a learner, and a voter of the inventory promoted
    rejoin: bool = False

    def __post_init__(self) -> None:
        for name in ("add_timeout", "start_settle", "catchup_timeout", "promote_timeout"):
            if getattr(self, name) <= 0:
                raise InputError(f"learner option {name}: {getattr(self, name)} is not > 0; give seconds")
        if self.max_lag is not None and self.max_lag < 0:
            raise InputError(f"--max-lag {self.max_lag} is negative; give raft entries >= 0")


@dataclass(frozen=True)
class HostFacts:
    """What the target host looked like when planning (read-only probe over SSH)."""

    host: str
    ssh_error: str | None = None
    cert_problem: str | None = "missing"  # None: a usable member cert/key for its SANs is there
    data_dir_in_use: bool = False  # <data_dir>/member exists
    runtime_exists: bool = False  # a container/unit named like the member runtime
    runtime_running: bool = False
    clock_skew_s: float | None = None


def _refuse(inv: Inventory, host: str, kind: Refusal, sentence: str) -> Plan:
    return Plan(KIND, inv.cluster, sentence, refusal=kind, params={"host": host})


def _plan(
    inv: Inventory, host: Host, verdict: str, steps: list[Step], member_id: int | None, what: str
) -> Plan:
    params = {"host": host.name, "member_id": member_id, "runs": what}
    return Plan(KIND, inv.cluster, verdict, tuple(steps), params=params)


def _step(host: Host, action: LearnerAction, params: Params, description: str, runs: str, **kw) -> Step:
    return Step(f"{action}:{host.name}", action, host.name, description, runs=runs, params=params, **kw)


def _member_of(state: ClusterState, host: Host) -> MemberState | None:
    for m in state.members:
        if m.in_member_list and m.host == host.name:
            return m
    return None


def runs_what(inv: Inventory, host: Host, opts: LearnerOptions) -> str | None:
    """The image (docker) or binary (process) the member on host will run, or None if unknown."""
    if inv.etcd.runtime is RuntimeKind.DOCKER:
        return opts.image or inv.etcd_image_for(host)
    return opts.binary or inv.etcd_binary_for(host)


def max_lag(inv: Inventory, opts: LearnerOptions) -> int:
    return opts.max_lag if opts.max_lag is not None else inv.check.learner_max_lag


def plan_learner_add(
    inv: Inventory, state: ClusterState, host_name: str, facts: HostFacts | None, opts: LearnerOptions
) -> Plan:
    """Decide how to make host_name a learner (and a voter with opts.promote), or with opts.rejoin
    how to bring an inventory voter that is no member any more back as a voter. Pure."""
    plan = _plan_add(inv, state, host_name, facts, opts)
    return dataclasses.replace(plan, kind=REJOIN_KIND) if opts.rejoin else plan


def _plan_add(
    inv: Inventory, state: ClusterState, host_name: str, facts: HostFacts | None, opts: LearnerOptions
) -> Plan:
    try:
        host = inv.host(host_name)
    except InputError as e:
        return _refuse(inv, host_name, Refusal.BAD_INPUT, f"{e}; add it to the inventory first")
    idx = inv.hosts.index(host)
    if opts.rejoin and not (host.is_voter or host.is_learner):
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"{host.name} is not an etcd voter or learner in the inventory (hosts[{idx}].roles has no "
            "etcd nor etcd-learner): rejoin brings a lost member back; add other hosts with `etcd-dr "
            "learner add`",
        )  # fmt: skip
    if opts.rejoin and host.is_voter != opts.promote:
        want = "a voter: promote" if host.is_voter else "a learner: do not promote"
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"{host.name} rejoins as {want} it (hosts[{idx}].roles); rejoin() chooses this itself",
        )  # fmt: skip
    if host.is_voter and not opts.rejoin:
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"{host.name} is an etcd voter in the inventory (hosts[{idx}].roles has etcd); a learner is "
            "added on a host that is not a member yet: name another host",
        )  # fmt: skip
    if not host.is_learner and not opts.rejoin:
        roles = ", ".join(r.value for r in Role if r in host.roles)
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"{host.name} has roles [{roles}] in the inventory, not etcd-learner; add etcd-learner to "
            f"hosts[{idx}].roles so that etcd-dr knows the member it adds, then run again",
        )  # fmt: skip
    what = runs_what(inv, host, opts)
    if not what:
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"no image for {host.name}'s etcd container: set etcd.image or hosts[{idx}].etcd_image in the "
            "inventory, or pass --image",
        )  # fmt: skip

    if state.forked:  # the member list is one side's: adding to it picks a side for the operator
        return _refuse(inv, host.name, Refusal.UNSAFE, state.fork_advice)
    if not state.quorum:
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"{state.verdict}; a member can only be added while quorum holds: recover quorum first",
        )  # fmt: skip
    if state.member_list_source is not MemberListSource.LINEARIZABLE:
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"the member list was read from {state.member_list_source}, not agreed by the quorum; "
            "run again when the cluster answers linearizable reads",
        )  # fmt: skip
    if facts is None or facts.ssh_error:
        why = facts.ssh_error if facts else "not probed"
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"{host.name} cannot be reached over SSH ({why}); fix the connection and run again",
        )  # fmt: skip

    m = _member_of(state, host)
    if m is not None and not m.is_learner and opts.rejoin:
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"{host.name} is a voter member of {inv.cluster} already (member {m.member_id:x}): nothing to "
            "rejoin",
        )  # fmt: skip
    if m is not None and not m.is_learner:
        done = f"{host.name} is already a voter of {inv.cluster} (member {m.member_id:x}): nothing to do"
        return _plan(inv, host, done, [], m.member_id, what)
    others = [x.name for x in state.members if x.in_member_list and x.is_learner and x.host != host.name]
    if m is None and others:
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"{inv.cluster} has a learner already ({', '.join(others)}) and etcd allows one: promote or "
            "remove it first",
        )  # fmt: skip
    if m is None and facts.runtime_running and not opts.rejoin:
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"etcd runs on {host.name} although it is not a member of {inv.cluster}: stop it yourself "
            "first (etcd-dr does not stop an etcd it cannot place)",
        )  # fmt: skip

    steps = _steps(inv, state, host, facts, opts, m, what)
    return _plan(inv, host, _verdict(state, host, m, opts, what), steps, m.member_id if m else None, what)


def _steps(
    inv: Inventory,
    state: ClusterState,
    host: Host,
    facts: HostFacts,
    opts: LearnerOptions,
    m: MemberState | None,
    what: str,
) -> list[Step]:
    """The steps of a plan that was not refused: each with its params, what it runs, why, and
    whether the planner saw its postcondition hold already."""
    e = inv.etcd
    peer, client = inv.peer_url(host), inv.client_url(host)
    name = member_name(host)
    lag = max_lag(inv, opts)
    sans = ", ".join((host.address, "127.0.0.1", host.name, "localhost", *opts.ips, *opts.dns))
    steps = [
        _step(
            host,
            LearnerAction.ISSUE_CERT,
            CertParams(opts.ips, opts.dns),
            f"issue {host.name}'s member certificate",
            runs=f"sign kube-etcd-{host.address_dashed}.pem with kube-ca (SANs {sans}); write it and its "
            f"key (0600) to {host.name}:{e.cert_dir}",
            destructive=False,
            postcondition=f"{e.cert_path(host)} and its key are a pair signed by kube-ca for these SANs, "
            f"valid on {host.name}'s clock",
            reason="a member needs a certificate its peers trust: "
            + (facts.cert_problem or "a valid one is there, kept"),
            holds=facts.cert_problem is None,
        )
    ]
    if m is None and (facts.data_dir_in_use or facts.runtime_exists):
        kind = "container" if e.runtime is RuntimeKind.DOCKER else "unit"
        old = [f"an etcd {kind}"] if facts.runtime_exists else []
        old += [f"{e.data_dir}/member"] if facts.data_dir_in_use else []
        steps.append(
            _step(
                host,
                LearnerAction.SET_ASIDE,
                SetAsideParams(e.data_dir, report_diverged=opts.rejoin),
                f"set the old etcd {kind} and data dir on {host.name} aside",
                runs=f"stop and rename the old etcd {kind} on {host.name}; "
                f"mv {e.data_dir} {e.data_dir}.bak-<UTC timestamp>"
                + ("; read what its db holds beyond the recovered cluster (reported)" if opts.rejoin else ""),
                destructive=False,
                postcondition=f"no etcd {kind} named for the member and no {e.data_dir}/member on "
                f"{host.name}",
                reason=f"{host.name} is not a member but has {' and '.join(old)} from an earlier one"
                + (" (removed by a recovery; it must not start on its old data)" if opts.rejoin else "")
                + ": kept aside (never deleted) so that etcd starts clean",
            )
        )
    steps.append(
        _step(
            host,
            LearnerAction.MEMBER_ADD,
            MemberAddParams(opts.add_timeout),
            f"add {host.name} to {inv.cluster} as a learner",
            runs=f"MemberAdd peerURLs=[{peer}] isLearner=true "
            f"(retrying `unhealthy cluster` for {opts.add_timeout:g} s)",
            destructive=False,
            postcondition=f"the linearizable member list has a member with peer URL {peer}",
            reason=f"{host.name} is not a member yet"
            if m is None
            else f"{host.name} is a learner already (member {m.member_id:x})",
            holds=m is not None,
        )
    )
    prefix = (
        f"docker run -d --name {e.container} --network=host --restart=always {what}"
        if e.runtime is RuntimeKind.DOCKER
        else what
    )
    started = m is not None and facts.runtime_running
    steps.append(
        _step(
            host,
            LearnerAction.START,
            StartParams(opts.start_settle),
            f"start etcd on {host.name} to join the cluster",
            runs=f"{prefix} --name={name} --initial-cluster=<members>,{name}={peer} "
            "--initial-cluster-state=existing",
            destructive=False,
            postcondition=f"etcd runs on {host.name}: {client} answers Status, or it has run "
            f"{opts.start_settle:g} s without exiting (a member answers only once it has the data)",
            reason=f"{host.name}'s member runs"
            if started
            else f"start {host.name}'s member ({e.runtime}: {what}) so that it joins the cluster",
            holds=started,
        )
    )
    steps.append(
        _step(
            host,
            LearnerAction.WAIT_CAUGHT_UP,
            CatchUpParams(opts.catchup_timeout, lag, same_revision=opts.rejoin),
            f"wait until {host.name} has caught up with the leader",
            runs=f"poll Status of {client} and of the leader (up to {opts.catchup_timeout:g} s)",
            destructive=False,
            postcondition=f"{host.name}'s applied index has reached the leader's index at the start of "
            f"the wait and is within {lag} entries of the leader's",
            reason="a learner is useful (and promotable) only once it holds the data",
        )
    )
    if opts.promote:
        steps.append(
            _step(
                host,
                LearnerAction.PROMOTE,
                PromoteParams(opts.promote_timeout),
                f"promote {host.name} to voter",
                runs=f"MemberPromote (retrying `not in sync` for {opts.promote_timeout:g} s), then a "
                "linearizable member list",
                destructive=True,
                postcondition=f"the linearizable member list shows {host.name} as a voter",
                reason=f"asked to promote: voters go from {state.voters} to {state.voters + 1}, quorum "
                f"from {state.voters // 2 + 1} to {(state.voters + 1) // 2 + 1}",
            )
        )
    return steps


def _verdict(state: ClusterState, host: Host, m: MemberState | None, opts: LearnerOptions, what: str) -> str:
    if m is None and opts.rejoin:
        verdict = (
            f"{state.verdict}; {host.name} is an inventory voter but no member: rejoin it as a learner "
            f"running {what} and promote it"
            if host.is_voter
            else f"{state.verdict}; {host.name} is an inventory learner but no member: rejoin it as a "
            f"learner running {what}"
        )
    elif m is None:
        verdict = f"{state.verdict}; {host.name} is not a member: add it as a learner running {what}" + (
            " and promote it" if opts.promote else ""
        )
    else:
        verdict = f"{state.verdict}; {host.name} is a learner already (member {m.member_id:x}): continue" + (
            " and promote it" if opts.promote else ""
        )
    return verdict
