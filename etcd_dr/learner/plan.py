"""The learner-add planner: pure, from a ClusterState, the inventory and what was seen on the host to
a Plan of steps. No I/O here; etcd_dr.learner.run carries a plan out.

Each step names its host, its action, what it runs, whether it is destructive, its postcondition
(checked first when it runs: a step whose postcondition holds is skipped, so a re-run after a crash
adds no second member) and one sentence saying why. A refused plan says why in one sentence and
whether that is bad input (exit 2) or an unsafe cluster (exit 1); nothing is changed either way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from etcd_dr.errors import InputError
from etcd_dr.inventory import Host, Inventory, Role, RuntimeKind
from etcd_dr.runtime import member_name
from etcd_dr.state import ClusterState, MemberListSource, MemberState


class Action(enum.StrEnum):
    ISSUE_CERT = "issue-cert"
    SET_ASIDE = "set-aside-old-member"  # an old container/unit and data dir of a non-member host
    MEMBER_ADD = "member-add-learner"
    START = "start-etcd"
    WAIT_CAUGHT_UP = "wait-caught-up"
    PROMOTE = "promote"


class Refusal(enum.StrEnum):
    BAD_INPUT = "bad-input"  # the operator's request or inventory is wrong: exit 2
    UNSAFE = "unsafe"  # the cluster or host is not in a state to add a member: exit 1


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


@dataclass(frozen=True)
class Step:
    host: str
    action: Action
    runs: str  # what it runs, for the dry run and the audit record
    destructive: bool
    postcondition: str
    reason: str  # one sentence: why this step
    holds: bool = False  # the postcondition already held when planning: it will be skipped


@dataclass(frozen=True)
class Plan:
    cluster: str
    host: str
    verdict: str  # one sentence: the decision
    steps: tuple[Step, ...] = ()
    refusal: Refusal | None = None
    member_id: int | None = None  # the host's member, when it already is one
    runs_what: str = ""  # the image or binary the member runs

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    def to_json(self) -> dict:
        return {
            "cluster": self.cluster,
            "host": self.host,
            "verdict": self.verdict,
            "refusal": str(self.refusal) if self.refusal else None,
            "member_id": f"{self.member_id:x}" if self.member_id is not None else None,
            "runs": self.runs_what,
            "steps": [
                {
                    "host": s.host,
                    "action": str(s.action),
                    "runs": s.runs,
                    "destructive": s.destructive,
                    "postcondition": s.postcondition,
                    "reason": s.reason,
                    "holds": s.holds,
                }
                for s in self.steps
            ],
        }


def _refuse(inv: Inventory, host: str, kind: Refusal, sentence: str) -> Plan:
    return Plan(inv.cluster, host, sentence, refusal=kind)


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
    """Decide how to make host_name a learner (and a voter with opts.promote). Pure."""
    try:
        host = inv.host(host_name)
    except InputError as e:
        return _refuse(inv, host_name, Refusal.BAD_INPUT, f"{e}; add it to the inventory first")
    idx = inv.hosts.index(host)
    if host.is_voter:
        return _refuse(
            inv, host.name, Refusal.BAD_INPUT,
            f"{host.name} is an etcd voter in the inventory (hosts[{idx}].roles has etcd); a learner is "
            "added on a host that is not a member yet: name another host",
        )  # fmt: skip
    if not host.is_learner:
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
    if m is not None and not m.is_learner:
        return Plan(
            inv.cluster, host.name,
            f"{host.name} is already a voter of {inv.cluster} (member {m.member_id:x}): nothing to do",
            member_id=m.member_id, runs_what=what,
        )  # fmt: skip
    others = [x.name for x in state.members if x.in_member_list and x.is_learner and x.host != host.name]
    if m is None and others:
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"{inv.cluster} has a learner already ({', '.join(others)}) and etcd allows one: promote or "
            "remove it first",
        )  # fmt: skip
    if m is None and facts.runtime_running:
        return _refuse(
            inv, host.name, Refusal.UNSAFE,
            f"etcd runs on {host.name} although it is not a member of {inv.cluster}: stop it yourself "
            "first (etcd-dr does not stop an etcd it cannot place)",
        )  # fmt: skip

    e = inv.etcd
    peer, client = inv.peer_url(host), inv.client_url(host)
    name = member_name(host)
    lag = max_lag(inv, opts)
    sans = ", ".join((host.address, "127.0.0.1", host.name, "localhost", *opts.ips, *opts.dns))
    steps = [
        Step(
            host=host.name,
            action=Action.ISSUE_CERT,
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
            Step(
                host=host.name,
                action=Action.SET_ASIDE,
                runs=f"stop and rename the old etcd {kind} on {host.name}; "
                f"mv {e.data_dir} {e.data_dir}.bak-<UTC timestamp>",
                destructive=False,
                postcondition=f"no etcd {kind} named for the member and no {e.data_dir}/member on "
                f"{host.name}",
                reason=f"{host.name} is not a member but has {' and '.join(old)} from an earlier one: "
                "kept aside (never deleted) so that etcd starts clean",
            )
        )
    steps.append(
        Step(
            host=host.name,
            action=Action.MEMBER_ADD,
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
        Step(
            host=host.name,
            action=Action.START,
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
        Step(
            host=host.name,
            action=Action.WAIT_CAUGHT_UP,
            runs=f"poll Status of {client} and of the leader (up to {opts.catchup_timeout:g} s)",
            destructive=False,
            postcondition=f"{host.name}'s applied index has reached the leader's index at the start of "
            f"the wait and is within {lag} entries of the leader's",
            reason="a learner is useful (and promotable) only once it holds the data",
        )
    )
    if opts.promote:
        steps.append(
            Step(
                host=host.name,
                action=Action.PROMOTE,
                runs=f"MemberPromote (retrying `not in sync` for {opts.promote_timeout:g} s), then a "
                "linearizable member list",
                destructive=True,
                postcondition=f"the linearizable member list shows {host.name} as a voter",
                reason=f"asked to promote: voters go from {state.voters} to {state.voters + 1}, quorum "
                f"from {state.voters // 2 + 1} to {(state.voters + 1) // 2 + 1}",
            )
        )
    if m is None:
        verdict = f"{state.verdict}; {host.name} is not a member: add it as a learner running {what}" + (
            " and promote it" if opts.promote else ""
        )
    else:
        verdict = f"{state.verdict}; {host.name} is a learner already (member {m.member_id:x}): continue" + (
            " and promote it" if opts.promote else ""
        )
    return Plan(inv.cluster, host.name, verdict, tuple(steps), None, m.member_id if m else None, what)


def render_plan(plan: Plan) -> str:
    """The dry run: one numbered block per step."""
    lines = [plan.verdict]
    if plan.refused:
        return f"REFUSED ({plan.refusal}): {plan.verdict}"
    for i, s in enumerate(plan.steps, 1):
        flag = " [destructive]" if s.destructive else ""
        done = " (holds already: will be skipped)" if s.holds else ""
        lines.append(f"{i}. {s.host}: {s.action}{flag}{done}")
        lines.append(f"   why:   {s.reason}")
        lines.append(f"   runs:  {s.runs}")
        lines.append(f"   until: {s.postcondition}")
    return "\n".join(lines)
