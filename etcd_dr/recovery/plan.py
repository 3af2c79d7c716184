"""Recovery after quorum loss, decided as a plan: which path, on which host, and what it may lose.

`plan_recovery()` is pure: a frozen ClusterState, the inventory, the snapshot catalog's records and
the fencing evidence in, a `Plan` (kind "recover") out. It never touches a host; the plan's steps
carry in their params everything the executor loop will need (host paths, runtime, image, the exact
etcd arguments), so a dry run shows exactly what would happen.

The paths, in the order they are tried:

- quorum held, or a majority of voters answers: nothing to recover; the plan is refused and says so.
- a voter answers: `--force-new-cluster` once on the most advanced voter (raft index, then applied
  index, then the preference order), after a graceful stop and a backup copy of its data dir and
  with its old container kept; then a restart without the flag. Or, asked for (VoterMethod), its
  own db restored like a learner's. Only when every other voter is fenced.
- no voter, a learner answers: `--force-new-cluster` on a learner panics ("removed all voters"), so
  its `member/snap/db` is copied and restored (`--skip-hash-check`) into a new one-member cluster,
  in a staging dir that is then swapped in.
- nothing answers: the newest verified snapshot is restored onto one voter (the first in the
  inventory that answered SSH, unless told). Where a delta log continues it (etcd_dr.deltalog),
  `recover` first rolls it forward to the last revision on record (a new verified snapshot), and
  the plan says what is lost from there: the writes after that revision.

Every decision is one sentence (`Plan.reason`), ending with the data the plan may lose.
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.inventory import Host, Inventory, RuntimeKind
from etcd_dr.plans import Plan, Refusal, Step
from etcd_dr.recovery.evidence import FENCED as FENCED  # re-exported: callers import them from here
from etcd_dr.recovery.evidence import NO_PROBE, FenceEvidence, FenceKind, Probe
from etcd_dr.recovery.evidence import THIS_MACHINE as THIS_MACHINE
from etcd_dr.recovery.evidence import Sighting as Sighting
from etcd_dr.recovery.steps import (
    FORCE_FLAG,
    CopyParams,
    FenceCheckParams,
    FenceStopParams,
    MemberParams,
    PutFileParams,
    RecordedFence,
    RestoreParams,
    RetireParams,
    RunParams,
    StopParams,
    SwapParams,
    VerifyParams,
    WaitParams,
)
from etcd_dr.recovery.steps import RecoveryAction as A
from etcd_dr.runtime import (
    RKE_BINDS,
    InitialClusterState,
    MemberSpec,
    etcd_flags,
    member_name,
)
from etcd_dr.state import ClusterState, MemberState, Reach

KIND = "recover"
# The forced run is one-off and alone, so two more flags only make it faster (the last of a repeated
# flag wins): a raft snapshot at once records the one-member membership, so the restart without the
# flag knows it is alone and elects itself in ~1 s; and etcd's default timings shorten the forced
# run's own first election (it boots seeing the old membership, waits 5 s for peers, then an
# election timeout: 5-10 s with RKE's 5000 ms).
FORCED_RUN_FLAGS = (FORCE_FLAG, "--snapshot-count=1", "--heartbeat-interval=100", "--election-timeout=1000")
# a start with RKE's timings can wait a full randomized election timeout (NOTES: 5-10 s); room for 2 cores
HEALTHY_TIMEOUT_S = 90


class RecoveryPath(enum.StrEnum):
    NONE = "none"  # quorum held (or a majority answers): nothing to recover
    VOTER_RESTORE = "voter-restore"  # the surviving voter's own db restored as a one-member cluster
    FORCE_NEW_CLUSTER = "force-new-cluster"
    LEARNER_RESTORE = "learner-restore"
    SNAPSHOT_RESTORE = "snapshot-restore"


class VoterMethod(enum.StrEnum):
    """How a surviving voter becomes a one-member cluster.

    FORCE_NEW_CLUSTER (the default): a graceful stop, a backup copy, one start with
    `--force-new-cluster`, a restart without it. The cluster keeps its id, so lost members that come
    back with their old data are told they were removed and stop. (Killed instead of stopped, the
    voter may lose its unsynced commit index and the flag then drops an applied entry:
    etcd-io/etcd#14009, seen on this lab as a rejoined member one revision behind.)
    RESTORE: the voter's own db restored into a new one-member cluster: keeps all it applied and
    elects at once, but the cluster gets a new id: lost members that come back with their data can
    form their old quorum again. Only when they will not come back, or are rejoined one at a time
    (`etcd-dr rejoin`) as they return."""

    RESTORE = "restore"
    FORCE_NEW_CLUSTER = "force-new-cluster"


class SnapshotLike(Protocol):
    """What the planner reads from a snapshot record (etcd_dr.snapshots.SnapshotRecord has it)."""

    @property
    def id(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def path(self) -> Path | str: ...
    @property
    def created(self) -> datetime: ...
    @property
    def verified(self) -> bool: ...
    @property
    def revision(self) -> int: ...
    @property
    def raft_index(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def version(self) -> str: ...  # the source member's etcd version ("" if unknown)


NO_EVIDENCE: Mapping[str, FenceEvidence] = MappingProxyType({})
# etcd's advice for restoring a Kubernetes cluster's snapshot (etcdutl 3.5+): far past any revision
# a client may have seen since the snapshot
BUMP_REVISION = 1_000_000_000


@dataclass(frozen=True)
class LogEnd:
    """Where the delta log ends for the snapshot a restore would use (etcd_dr.deltalog): the last
    revision on record that continues the newest verified snapshot, when it was received, and when
    the watcher last heard from the cluster (about when the fault came)."""

    revision: int
    received_at: datetime | None = None
    heard_at: datetime | None = None
    error: str = ""  # why the roll-forward onto the snapshot failed, when it did
    snapshot_revision: int = 0  # the newest verified snapshot's, which the log continues


def plan_recovery(
    state: ClusterState,
    inv: Inventory,
    *,
    snapshots: Sequence[SnapshotLike] = (),
    fenced: Mapping[str, FenceEvidence] = NO_EVIDENCE,
    highest_index_seen: int | None = None,
    prefer: Sequence[str] = (),
    target: str | None = None,
    method: VoterMethod = VoterMethod.FORCE_NEW_CLUSTER,
    probe: Probe = NO_PROBE,
    unattended: bool = False,
    deltalog: LogEnd | None = None,
) -> Plan:
    """The recovery plan for what `state` shows. Pure. `method` says how a surviving voter is
    turned into a one-member cluster (VoterMethod). `fenced`: the evidence per voter (FenceKind);
    `probe`: who tried the voters' ports and what answered: any answer from a lost voter refuses the
    plan (a partition, not a loss). `unattended` (no one approves this run): an attestation does
    not count. `deltalog`: where the delta log ends (the snapshot path's loss is then bounded by
    it). Raises InputError for bad arguments (unknown host in prefer/target, negative index);
    otherwise a refused plan says why and what to do."""
    rank = _ranking(inv, prefer)
    if highest_index_seen is not None and highest_index_seen < 0:
        raise InputError(f"highest_index_seen: {highest_index_seen} is negative; give a raft index or None")
    if target is not None and not inv.host(target).is_voter:
        raise InputError(
            f"target: {target} is not an etcd voter in the inventory; pick one of {_voters(inv)}"
        )

    if state.forked:  # two sides that lead: nothing to recover, and forcing either forks a third
        return _refuse(inv, state.fork_advice)
    if state.quorum:
        return _refuse(inv, f"{state.verdict}; nothing to recover")
    if state.voters and state.voters_answering >= state.quorum_needed:
        return _refuse(
            inv,
            f"quorum not lost: {state.voters_answering} of {state.voters} voters answer (a majority) but "
            "agree on no leader yet; wait for their election, never force a new cluster while a quorum "
            "answers",
        )
    # without a member list, assess() lists the inventory's etcd hosts as members: same rule
    voters = [m for m in state.members if m.in_member_list and not m.is_learner]
    reachable = [m for m in voters if m.status is not None and m.host]
    head = f"quorum lost: {len(reachable)} of {state.voters} voters reachable"
    lost = [str(m.host) for m in voters if m.status is None and m.host]
    seen = sorted((s for s in probe.sightings if s.host in lost), key=lambda s: (s.seen_from, s.host, s.port))
    if seen:
        alive = sorted({s.host for s in seen})
        return _refuse(
            inv,
            f"{head}; refused: a partition, not a loss: {'; '.join(map(str, seen))}: {_and(alive)} "
            f"{'is' if len(alive) == 1 else 'are'} alive and may "
            "still form a majority that accepts writes; never force a new cluster beside it: heal the "
            "network (or stop etcd on the lost voters) and check `etcd-dr status`",
        )
    alive = sorted(h for h in lost if h in fenced and fenced[h].kind is FenceKind.ALIVE)
    if alive:
        return _refuse(
            inv,
            f"{head}; refused: a partition, not a loss: "
            f"{'; '.join(f'{h}: {fenced[h].how}' for h in alive)}; never force a new cluster beside "
            "it: heal the network and check `etcd-dr status` (a voter cut off just now may still name "
            "its old leader for an election timeout: plan again in a few seconds)",
        )
    fenced = _weigh(inv, fenced, lost, probe, unattended)
    learners = [m for m in state.members if m.is_learner and m.status is not None and m.host]
    if reachable or learners:
        chosen = _survivor(state, inv, head, reachable or learners, voters, fenced, highest_index_seen, rank)
        if isinstance(chosen, Plan):
            return chosen  # refused
        if not reachable or method is VoterMethod.RESTORE:
            return _db_restore(inv, chosen)
        return _force_new_cluster(inv, chosen)
    return _snapshot_restore(
        state, inv, voters, snapshots, fenced, highest_index_seen, rank, target, deltalog
    )


def recovery_path(plan: Plan) -> RecoveryPath:
    """Which path a recovery plan takes (its params; from its steps for a journal of older plans)."""
    if "path" in plan.params:
        return RecoveryPath(str(plan.params["path"]))
    ids = {s.id.split(":", 1)[0] for s in plan.steps}
    if "force-new-cluster" in ids:
        return RecoveryPath.FORCE_NEW_CLUSTER
    if "copy-db" in ids:
        return RecoveryPath.LEARNER_RESTORE
    if "put-snapshot" in ids:
        return RecoveryPath.SNAPSHOT_RESTORE
    return RecoveryPath.NONE


# --- choosing ------------------------------------------------------------------------------------


def _voters(inv: Inventory) -> str:
    return ", ".join(h.name for h in inv.voters)


def _ranking(inv: Inventory, prefer: Sequence[str]) -> dict[str, int]:
    """Preference rank of each host: the `prefer` list first, then the inventory's order."""
    for i, name in enumerate(prefer):
        inv.host(name)  # raises InputError naming the host and the known ones
        if name in prefer[:i]:
            raise InputError(f"prefer: {name} is listed twice; list each host once")
    order = [*prefer, *(h.name for h in inv.hosts if h.name not in prefer)]
    return {name: i for i, name in enumerate(order)}


def _pick(members: Sequence[MemberState], rank: Mapping[str, int]) -> tuple[MemberState, str]:
    """The most advanced member, and the sentence that says why it won."""

    def key(m: MemberState) -> tuple[int, int, int]:
        assert m.status is not None
        return (m.status.raft_index, m.status.raft_applied_index, -rank.get(m.host or m.name, len(rank)))

    best = max(members, key=key)
    st = best.status
    assert st is not None
    role = "learner " if best.is_learner else ""
    same_index = [m for m in members if m.status and m.status.raft_index == st.raft_index]
    if len(same_index) == 1:
        return best, f"{role}{best.name} has the highest raft index {st.raft_index}"
    names = _and([m.name for m in same_index])
    applied = st.raft_applied_index
    same_applied = [m for m in same_index if m.status and m.status.raft_applied_index == applied]
    if len(same_applied) == 1:
        return best, (
            f"{names} share the highest raft index {st.raft_index}, "
            f"{role}{best.name} has the highest applied index {st.raft_applied_index}"
        )
    return best, (
        f"{_and([m.name for m in same_applied])} share raft index {st.raft_index} and applied index "
        f"{st.raft_applied_index}, {role}{best.name} comes first in the preference order"
    )


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _weigh(
    inv: Inventory, fenced: Mapping[str, FenceEvidence], lost: Sequence[str], probe: Probe, unattended: bool
) -> Mapping[str, FenceEvidence]:
    """The evidence as this run may use it: what the probe saw of each silent, unfenced voter is
    added to its sentence; unattended, an attestation does not count (no one answers for it)."""
    out = dict(fenced)
    e = inv.etcd
    for h, ev in fenced.items():
        if ev.kind is FenceKind.ATTESTED and unattended:
            out[h] = FenceEvidence(
                h,
                FenceKind.NONE,
                f"{ev.how}, but this run is unattended and an attestation counts only in an approved "
                "or explicit run",
            )
        elif ev.kind is FenceKind.NONE and h in lost and probe.probers:
            out[h] = dataclasses.replace(
                ev,
                how=f"{ev.how}; no answer on {e.client_port} or {e.peer_port} from "
                f"{_and(list(probe.probers))}, but silence is not evidence",
            )
    return out


def _risk(others: Sequence[MemberState], fenced: Mapping[str, FenceEvidence]) -> str:
    """The risk an attestation takes, one sentence per attester (empty without attestations)."""
    by: dict[str, list[str]] = {}
    for m in others:
        ev = fenced.get(str(m.host))
        if ev is not None and ev.kind is FenceKind.ATTESTED:
            by.setdefault(ev.by or "an operator", []).append(str(m.host))
    return "".join(
        f"; {_and(hosts)} {'is' if len(hosts) == 1 else 'are'} fenced only by {who}'s word: if "
        f"{'it is' if len(hosts) == 1 else 'they are'} still running, the cluster forks"
        for who, hosts in by.items()
    )


def _fencing_problem(
    others: Sequence[MemberState], fenced: Mapping[str, FenceEvidence]
) -> tuple[str | None, tuple[str, ...]]:
    """Why the other voters are not known to be fenced (None when they all are), and the voters
    that only lack evidence (an operator's attestation could fence them)."""
    strangers = [m.name for m in others if not m.host]
    if strangers:
        return (
            f"voter {_and(strangers)} is not in the inventory, so it cannot be checked or fenced: add it "
            "to the inventory (or remove it from the membership) and plan again"
        ), ()
    missing = [m.host for m in others if m.host not in fenced]
    if missing:
        return (
            f"no fencing evidence for {_and([str(h) for h in missing])}: gather it "
            "(etcd_dr.recovery.fencing.gather: power state, etcd stopped over SSH) and plan again"
        ), ()
    unfenced = tuple(str(m.host) for m in others if not fenced[str(m.host)].settled)
    if unfenced:
        problems = "; ".join(f"{h} is not fenced ({fenced[h].how})" for h in unfenced)
        return (
            f"{problems}; fence {'it' if len(unfenced) == 1 else 'them'} (stop etcd and keep it from "
            "starting again, or power off), or, knowing it is down, attest it (`--confirm-down HOST` or "
            "the approval form), then plan again"
        ), unfenced
    return None, ()


def _loss(kept: str, index: int, highest_seen: int | None, state: ClusterState) -> str:
    """What the plan may lose, one clause: the raft entries between the index it keeps and the
    highest index ever observed (given, or seen in this observation)."""
    observed = [m.status.raft_index for m in state.members if m.status is not None]
    known = [i for i in (highest_seen, *observed) if i is not None]
    highest = max(known, default=index)
    if highest > index:
        n = highest - index
        return (
            f"may lose up to {n} raft {'entry' if n == 1 else 'entries'} beyond {kept}'s index {index} "
            f"(the highest index observed is {highest})"
        )
    if highest_seen is None:
        return (
            f"may lose what the lost members had beyond {kept}'s index {index} "
            "(no highest raft index on record to bound it)"
        )
    return (
        f"loses no raft entry observed: none beyond {kept}'s index {index} "
        f"(the highest observed is {highest})"
    )


# --- shared step builders ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Paths:
    """Where a plan puts things on the host, all beside the data dir (same filesystem: renames are
    atomic) and stamped with the observation time so a re-run of the same plan finds its own."""

    data_dir: str
    ts: str

    @property
    def backup(self) -> str:
        return f"{self.data_dir}.bak-{self.ts}"

    @property
    def work(self) -> str:
        return f"{self.data_dir}.restore-{self.ts}"

    @property
    def db(self) -> str:
        return posixpath.join(self.work, "db")

    @property
    def staging(self) -> str:
        return posixpath.join(self.work, "data")


def _stamp(state: ClusterState) -> str:
    return state.observed_at.strftime("%Y%m%dT%H%M%SZ")


def _runtime_path(inv: Inventory, host_path: str) -> str:
    """The data dir as etcd sees it: RKE's container mounts /var/lib/etcd at /var/lib/rancher/etcd."""
    if inv.etcd.runtime is not RuntimeKind.DOCKER:
        return host_path
    for host_dir, ctr_dir in RKE_BINDS:
        if host_path == host_dir or host_path.startswith(host_dir + "/"):
            return ctr_dir + host_path[len(host_dir) :]
    return host_path


def _stops(others: Sequence[MemberState], fenced: Mapping[str, FenceEvidence]) -> str:
    """The plan's own fencing, one clause (empty when it stops no one)."""
    hosts = [str(m.host) for m in others if fenced[str(m.host)].kind is FenceKind.TO_STOP]
    if not hosts:
        return ""
    one = len(hosts) == 1
    return (
        f"; {_and(hosts)} still {'runs' if one else 'run'} etcd but {'knows' if one else 'know'} no "
        f"leader (asked on {'its' if one else 'their'} own host): stopped for good first"
    )


def _fence_steps(
    inv: Inventory, others: Sequence[MemberState], fenced: Mapping[str, FenceEvidence]
) -> tuple[Step, ...]:
    """Stop for good each voter the evidence says to stop, then check every other voter again."""
    stops = tuple(
        _fence_stop_step(inv, inv.host(str(m.host)))
        for m in others
        if fenced[str(m.host)].kind is FenceKind.TO_STOP
    )
    return (*stops, _fence_check_step(inv, others, fenced))


def _fence_stop_step(inv: Inventory, host: Host) -> Step:
    return Step(
        id=f"fence-stop:{host.name}",
        action=A.FENCE_STOP,
        host=host.name,
        description=f"ask {host.name}'s etcd on {host.name} again; with no leader, stop it for good "
        "(restart=no, then stop); its data dir stays as it is",
        postcondition=f"etcd on {host.name} is not running and does not start again by itself",
        reason="a lost voter whose etcd still runs can join a majority again when the network heals; "
        "stopped for good it cannot, and a member that knows no leader accepts no write to lose",
        destructive=True,
        # 5 s of TERM, then KILL: one lab run's graceful stop of such a member took docker's whole
        # 30 s (another's 0.8 s); its data is kept as it is, and etcd's WAL and bbolt survive a kill
        params=FenceStopParams(**MemberParams.fields_of(inv, host), timeout_s=5),
    )


def _fence_check_step(
    inv: Inventory, others: Sequence[MemberState], fenced: Mapping[str, FenceEvidence]
) -> Step:
    hosts = [str(m.host) for m in others]
    what = _and(hosts) if hosts else "no other voter"
    return Step(
        id="fence-check",
        action=A.FENCE_CHECK,
        host=None,
        description=f"check again that {what} cannot take part: etcd stopped for good, power off, or "
        "attested; and that none answers on 2379 or 2380",
        postcondition=f"{what}: each fenced on positive evidence (stopped over SSH, power off, or the "
        "attestation recorded here), none seen answering",
        reason="a forked or restored cluster beside a live old member would split the cluster in two; "
        "silence is not evidence (a partitioned majority is silent too)",
        params=FenceCheckParams(
            hosts=tuple(hosts),
            ports=(inv.etcd.client_port, inv.etcd.peer_port),
            evidence={
                h: RecordedFence(kind=fenced[h].kind, how=fenced[h].how, by=fenced[h].by)
                for h in hosts
                if h in fenced
            },
        ),
    )


def _stop_step(inv: Inventory, host: Host, ts: str, *, voter: bool) -> Step:
    """A stop that leaves the WAL synced (see recovery_steps.EtcdStop for how a leader is handled)."""
    name = host.name
    why = (
        "a killed etcd can lose the commit index it had not synced (a commit-only change waits in "
        "the WAL's buffer), and --force-new-cluster then drops an entry its db had applied "
        "(etcd-io/etcd#14009)"
        if voter
        else "a learner flushes its db on a graceful stop; the copy must be of a quiet file"
    )
    return Step(
        id=f"stop:{name}",
        action=A.STOP,
        host=name,
        description=f"stop etcd on {name} with its WAL synced",
        postcondition=f"etcd on {name} is not running",
        reason=why,
        destructive=True,
        params=StopParams(
            **MemberParams.fields_of(inv, host),
            timeout_s=30,
            sync_leader=voter,
            sync_key=f"/etcd-dr/recovery/wal-sync-{ts}",
            # a member without a leader campaigns one to two election timeouts after it lost it (raft
            # randomizes), which fsyncs its HardState; the lab saw 12.0-12.7 s from the step's start
            # with RKE's 5 s (a loaded machine): three, and 2 s for SSH and the log
            campaign_wait_s=3 * inv.etcd.election_timeout / 1000 + 2 if voter else None,
        ),
    )


def _retire_step(inv: Inventory, host: Host, ts: str) -> Step:
    rp = MemberParams.fields_of(inv, host)
    old = f"{rp['name']}-old-{ts}"
    what = "container" if inv.etcd.runtime is RuntimeKind.DOCKER else "unit"
    return Step(
        id=f"retire:{host.name}",
        action=A.RETIRE,
        host=host.name,
        description=f"rename {what} {rp['name']} on {host.name} to {old} and keep it, never restarted",
        postcondition=f"{what} {old} exists on {host.name} with restart=no, "
        f"and no {what} is named {rp['name']}",
        reason="the old member is kept until the new one is healthy (it can be renamed back); "
        "a renamed container keeps --restart=always and would come back at boot",
        params=RetireParams(**rp, new_name=old, restart="no"),
    )


def _run_step(
    inv: Inventory,
    host: Host,
    step_id: str,
    description: str,
    reason: str,
    *,
    extra_flags: Sequence[str] = (),
    restart_always: bool,
    image_from: str,
    forced_name: str | None = None,
) -> Step:
    spec = MemberSpec.for_host(
        inv,
        host,
        [host],
        state=InitialClusterState.NEW,
        data_dir=_runtime_path(inv, inv.etcd.data_dir),
        extra_flags=extra_flags,
    )
    rp = MemberParams.fields_of(inv, host)
    return Step(
        id=step_id,
        action=A.RUN,
        host=host.name,
        description=description,
        postcondition=f"{rp['name']} on {host.name} runs with exactly these arguments, "
        f"restart={'always' if restart_always else 'no'}",
        reason=reason,
        destructive=True,
        params=RunParams(
            **rp,
            member=spec.name,
            initial_cluster=f"{spec.name}={spec.peer_url}",
            extra_flags=tuple(extra_flags),
            args=tuple(etcd_flags(spec)),
            restart="always" if restart_always else "no",
            image_from=image_from,  # same etcd version as the data: the retired member's image
            forced_name=forced_name,
        ),
    )


def _wait_step(inv: Inventory, host: Host, step_id: str, why: str) -> Step:
    return Step(
        id=step_id,
        action=A.WAIT_HEALTHY,
        host=host.name,
        description=f"wait until {host.name} leads a one-member cluster",
        postcondition=f"{host.name} answers Status as leader, member list holds only {host.name}",
        reason=why,
        params=WaitParams(endpoint=inv.client_url(host), members=1, timeout_s=HEALTHY_TIMEOUT_S),
    )


def _verify_step(inv: Inventory, host: Host, ts: str, min_revision: int, source: str) -> Step:
    return Step(
        id=f"verify:{host.name}",
        action=A.VERIFY,
        host=host.name,
        description=f"verify the recovered cluster on {host.name}: one member, a write accepted, "
        f"revision >= {min_revision}, keys counted",
        postcondition=f"one member ({host.name}), a probe write accepted, revision >= {min_revision}",
        reason=f"recovery is done when the cluster takes writes and kept at least what {source} held",
        params=VerifyParams(
            endpoint=inv.client_url(host),
            members=1,
            min_revision=min_revision,
            probe_key=f"/etcd-dr/recovery/{ts}",
            count_keys=True,
        ),
    )


def _restore_step(
    inv: Inventory,
    host: Host,
    paths: _Paths,
    version: str,
    *,
    skip_hash_check: bool,
    source: str,
    bump: bool = False,
) -> Step:
    name = member_name(host)
    peer = inv.peer_url(host)
    # etcdctl restore is deprecated from 3.5 on (etcdutl); 3.4 has no etcdutl
    tool = "etcdctl" if version.startswith("3.4") or not version else "etcdutl"
    # a snapshot is behind what clients saw: etcdutl (3.5+) moves the revision past it and marks it
    # compacted, so a watcher relists instead of missing events at revisions reused by new writes
    bumped = [f"--bump-revision={BUMP_REVISION}", "--mark-compacted"] if bump and tool == "etcdutl" else []
    argv = [
        tool, "snapshot", "restore", paths.db,
        *(["--skip-hash-check"] if skip_hash_check else []), *bumped,
        f"--name={name}", f"--initial-cluster={name}={peer}",
        f"--initial-advertise-peer-urls={peer}", f"--data-dir={paths.staging}",
    ]  # fmt: skip
    return Step(
        id=f"restore:{host.name}",
        action=A.SNAPSHOT_RESTORE,
        host=host.name,
        description=f"restore {source} into staging dir {paths.staging} on {host.name} as one-member "
        f"cluster {name}",
        postcondition=f"{paths.staging}/member/wal exists on {host.name}",
        reason="a restore goes to a staging dir first so a failed one leaves the data dir untouched"
        + (
            f"; the revision is moved {BUMP_REVISION} past the snapshot's and marked compacted, so "
            "clients that saw later revisions relist instead of missing events"
            if bumped
            else ""
        ),
        params=RestoreParams(
            **MemberParams.fields_of(inv, host),
            db=paths.db,
            staging=paths.staging,
            work_dir=paths.work,  # a one-off container mounts it at the same path
            argv=tuple(argv),  # argv[0] is the tool: etcdctl (3.4) or etcdutl
        ),
    )


def _swap_step(inv: Inventory, host: Host, paths: _Paths) -> Step:
    return Step(
        id=f"swap:{host.name}",
        action=A.SWAP_DIR,
        host=host.name,
        description=f"move {paths.data_dir} on {host.name} aside to {paths.backup} (kept) and the "
        f"restored {paths.staging} into its place",
        postcondition=f"{paths.data_dir} is the restored dir and {paths.backup} holds the old one",
        reason="the old data dir is never deleted: it is moved aside, a rename on the same filesystem",
        destructive=True,
        params=SwapParams(data_dir=paths.data_dir, staging=paths.staging, aside=paths.backup),
    )


def _refuse(inv: Inventory, reason: str, unfenced: Sequence[str] = ()) -> Plan:
    # bad arguments raise InputError; a refused recovery is about the cluster's state. `unfenced`:
    # the voters only evidence stands for (an attended run may ask an operator to attest them)
    params = {"unfenced": list(unfenced)} if unfenced else {}
    return Plan(kind=KIND, cluster=inv.cluster, reason=reason, refusal=Refusal.UNSAFE, params=params)


def _ssh_problem(m: MemberState) -> str | None:
    if m.ssh in (Reach.UNREACHABLE, Reach.HOST_KEY_REFUSED):
        return f"{m.name} answers on 2379 but not over SSH ({m.ssh}: {m.ssh_error}); fix SSH to {m.name}"
    return None


# --- the paths -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Survivor:
    """The member a survivor path works on, and what every such plan says and needs."""

    member: MemberState
    host: Host
    decision: str  # "quorum lost: ...; master3 has the highest raft index ..."
    others: tuple[MemberState, ...]  # the voters that must be fenced
    fenced: Mapping[str, FenceEvidence]  # the evidence that they are
    ts: str
    paths: _Paths
    loss: str  # what the plan may lose, one clause

    @property
    def status(self) -> EndpointStatus:
        assert self.member.status is not None
        return self.member.status


def _survivor(
    state: ClusterState,
    inv: Inventory,
    head: str,
    candidates: Sequence[MemberState],
    voters: Sequence[MemberState],
    fenced: Mapping[str, FenceEvidence],
    highest_seen: int | None,
    rank: Mapping[str, int],
) -> _Survivor | Plan:
    """The most advanced candidate, or the refused plan when another voter is not fenced or the
    candidate cannot be reached over SSH."""
    best, why = _pick(candidates, rank)
    assert best.status is not None and best.host is not None
    decision = f"{head}; {why}"
    others = tuple(m for m in voters if m is not best)
    problem, unfenced = _fencing_problem(others, fenced)
    if problem:
        return _refuse(inv, f"{decision}; refused: {problem}", unfenced)
    problem = _ssh_problem(best)
    if problem:
        return _refuse(inv, f"{decision}; refused: {problem}")
    ts = _stamp(state)
    loss = _loss(best.name, best.status.raft_index, highest_seen, state)
    host = inv.host(best.host)
    return _Survivor(best, host, decision, others, fenced, ts, _Paths(inv.etcd.data_dir, ts), loss)


def _force_new_cluster(inv: Inventory, sv: _Survivor) -> Plan:
    host, ts, paths, st, best = sv.host, sv.ts, sv.paths, sv.status, sv.member
    name = MemberParams.fields_of(inv, host)["name"]
    old = f"{name}-old-{ts}"
    forced = _run_step(
        inv,
        host,
        f"force-new-cluster:{host.name}",
        f"start etcd on {host.name} once with {FORCE_FLAG} and itself as the only member (restart=no)",
        "it rewrites the membership to this one member and keeps its data; restart=no so that a "
        "restart can never force again",
        extra_flags=FORCED_RUN_FLAGS,
        restart_always=False,
        image_from=old,
    )
    plain = _run_step(
        inv,
        host,
        f"recreate:{host.name}",
        f"recreate etcd on {host.name} without {FORCE_FLAG} (restart=always); the forced one is "
        f"renamed to {name}-forced-{ts} and kept",
        f"{FORCE_FLAG} must not stay on: every restart would force again",
        restart_always=True,
        image_from=old,
        forced_name=f"{name}-forced-{ts}",
    )
    steps = (
        *_fence_steps(inv, sv.others, sv.fenced),
        _stop_step(inv, host, ts, voter=True),
        Step(
            id=f"backup:{host.name}",
            action=A.COPY_DIR,
            host=host.name,
            description=f"copy {paths.data_dir} on {host.name} to {paths.backup} (kept, never deleted)",
            postcondition=f"{paths.backup} is a complete copy of {paths.data_dir}",
            reason=f"{FORCE_FLAG} rewrites the data dir in place: the copy is the way back",
            params=CopyParams(src=paths.data_dir, dst=paths.backup),
        ),
        _retire_step(inv, host, ts),
        forced,
        _wait_step(inv, host, f"wait-forced:{host.name}", "the flag may come off only once it took effect"),
        plain,
        _wait_step(inv, host, f"wait-healthy:{host.name}", "the member must come back without the flag"),
        _verify_step(inv, host, ts, st.revision, f"{best.name} (revision {st.revision})"),
    )
    return Plan(
        kind=KIND,
        cluster=inv.cluster,
        reason=f"{sv.decision}; force a new cluster on {best.name} once, then restart it without the flag; "
        f"{sv.loss}{_stops(sv.others, sv.fenced)}{_risk(sv.others, sv.fenced)}",
        steps=steps,
        params={"path": str(RecoveryPath.FORCE_NEW_CLUSTER)},
    )


def _db_restore(inv: Inventory, sv: _Survivor) -> Plan:
    """A survivor's own db restored into a new one-member cluster: a learner's (all voters lost:
    --force-new-cluster on a learner panics) or, asked for, a voter's (VoterMethod.RESTORE)."""
    host, ts, paths, st, best = sv.host, sv.ts, sv.paths, sv.status, sv.member
    voter = not best.is_learner
    who = "the voter" if voter else "the learner"
    steps = (
        *_fence_steps(inv, sv.others, sv.fenced),
        _stop_step(inv, host, ts, voter=voter),
        _copy_db_step(
            host,
            paths,
            f"{who}'s db holds "
            + ("everything it applied" if voter else "the newest data left")
            + "; the restore works on a copy",
        ),
        # a member's db has no snapshot hash appended: --skip-hash-check (NOTES)
        _restore_step(inv, host, paths, st.version, skip_hash_check=True, source=f"{who}'s db ({best.name})"),
        *_start_restored(
            inv,
            host,
            paths,
            ts,
            "a restored data dir is a new one-member cluster that elects itself at once; "
            + (
                f"no {FORCE_FLAG}"
                if voter
                else f"{FORCE_FLAG} is never used on a learner (panic: removed all voters)"
            ),
            st.revision,
            f"{'' if voter else 'learner '}{best.name} (revision {st.revision})",
        ),
    )
    why = (
        "(a new cluster id: rejoin the lost masters one at a time as they return)"
        if voter
        else f"({FORCE_FLAG} on a learner panics: removed all voters)"
    )
    return Plan(
        kind=KIND,
        cluster=inv.cluster,
        reason=f"{sv.decision}; restore its {'own ' if voter else ''}db into a new one-member cluster on "
        f"{best.name} {why}; {sv.loss}{_stops(sv.others, sv.fenced)}{_risk(sv.others, sv.fenced)}",
        steps=steps,
        params={"path": str(RecoveryPath.VOTER_RESTORE if voter else RecoveryPath.LEARNER_RESTORE)},
    )


def _copy_db_step(host: Host, paths: _Paths, reason: str) -> Step:
    return Step(
        id=f"copy-db:{host.name}",
        action=A.COPY_FILE,
        host=host.name,
        description=f"copy {paths.data_dir}/member/snap/db on {host.name} to {paths.db}",
        postcondition=f"{paths.db} exists, a complete copy of {paths.data_dir}/member/snap/db",
        reason=reason,
        params=CopyParams(src=f"{paths.data_dir}/member/snap/db", dst=paths.db),
    )


def _snapshot_restore(
    state: ClusterState,
    inv: Inventory,
    voters: Sequence[MemberState],
    snapshots: Sequence[SnapshotLike],
    fenced: Mapping[str, FenceEvidence],
    highest_seen: int | None,
    rank: Mapping[str, int],
    target: str | None,
    deltalog: LogEnd | None = None,
) -> Plan:
    head = f"quorum lost: 0 of {state.voters} voters reachable, no etcd member answers"
    mine = [s for s in snapshots if s.verified and s.cluster == inv.cluster]
    if not mine:
        return _refuse(
            inv,
            f"{head}; refused: no verified snapshot of cluster {inv.cluster} ({len(snapshots)} given); "
            "power a member back on, or take, verify and catalog a snapshot",
        )
    snap = max(mine, key=lambda s: (s.created, s.id))
    host = _restore_target(state, inv, rank, target)
    others = [m for m in voters if m.host != host.name]
    taken = snap.created.strftime("%Y-%m-%dT%H:%M:%SZ")
    decision = (
        f"{head}; restore snapshot {snap.id} (newest verified, revision {snap.revision}, taken {taken}) "
        f"onto {host.name}"
    )
    problem, unfenced = _fencing_problem(others, fenced)
    if problem:
        return _refuse(inv, f"{decision}; refused: {problem}", unfenced)
    ts = _stamp(state)
    paths = _Paths(inv.etcd.data_dir, ts)
    loss = _log_loss(snap, deltalog) or _loss(f"snapshot {snap.id}", snap.raft_index, highest_seen, state)
    steps = (
        *_fence_steps(inv, others, fenced),
        Step(
            id=f"put-snapshot:{host.name}",
            action=A.PUT_FILE,
            host=host.name,
            description=f"copy snapshot {snap.path} to {host.name}:{paths.db} and check its sha256",
            postcondition=f"{paths.db} on {host.name} has sha256 {snap.sha256}",
            reason="the restore runs on the target host, from a copy whose hash is checked",
            params=PutFileParams(src=str(snap.path), dst=paths.db, sha256=snap.sha256, snapshot=snap.id),
        ),
        _stop_step(inv, host, ts, voter=True),
        _restore_step(
            inv, host, paths, snap.version, skip_hash_check=False, source=f"snapshot {snap.id}", bump=True
        ),
        *_start_restored(
            inv,
            host,
            paths,
            ts,
            "a restored data dir is a new one-member cluster: no flag needed",
            snap.revision,
            f"snapshot {snap.id} (revision {snap.revision})",
        ),
    )
    return Plan(
        kind=KIND,
        cluster=inv.cluster,
        reason=f"{decision}; {loss}{_stops(others, fenced)}{_risk(others, fenced)}",
        steps=steps,
        params={"path": str(RecoveryPath.SNAPSHOT_RESTORE)},
    )


def _log_loss(snap: SnapshotLike, log: LogEnd | None) -> str | None:
    """What a snapshot restore loses where a delta log runs: the writes after its last revision."""
    if log is None or log.revision < snap.revision:
        return None
    if log.revision > snap.revision:
        why = (
            f"rolling it forward failed ({log.error})"
            if log.error
            else "it is not rolled forward onto it (`recover` does that before it restores; by hand: "
            "`etcd-dr snapshot roll-forward`)"
        )
        return (
            f"may lose the writes after revision {snap.revision}: the delta log holds them up to revision "
            f"{log.revision}, but {why}"
        )
    when = ""
    if log.received_at is not None and log.heard_at is not None:
        gap = max((log.heard_at - log.received_at).total_seconds(), 0.0)
        when = f", {gap:.1f} s before the fault"
    elif log.received_at is not None:
        when = f", received {log.received_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return f"may lose the writes after revision {log.revision} (the last one on record{when})"


def _start_restored(
    inv: Inventory, host: Host, paths: _Paths, ts: str, why_start: str, revision: int, source: str
) -> tuple[Step, ...]:
    """The tail both restore paths share: retire the old member, swap the restored data dir in,
    start it as a one-member cluster from the old member's image, wait, verify."""
    old = f"{MemberParams.fields_of(inv, host)['name']}-old-{ts}"
    return (
        _retire_step(inv, host, ts),
        _swap_step(inv, host, paths),
        _run_step(
            inv,
            host,
            f"start:{host.name}",
            f"start etcd on {host.name} as the only member of the restored cluster (restart=always)",
            why_start,
            restart_always=True,
            image_from=old,
        ),
        _wait_step(inv, host, f"wait-healthy:{host.name}", "the restored member must elect itself"),
        _verify_step(inv, host, ts, revision, source),
    )


def _restore_target(state: ClusterState, inv: Inventory, rank: Mapping[str, int], target: str | None) -> Host:
    """The host told, else the first voter (preference order) that answered SSH, else the first voter."""
    if target is not None:
        return inv.host(target)
    voters = sorted(inv.voters, key=lambda h: rank.get(h.name, len(rank)))
    if not voters:
        raise InputError("hosts: the inventory has no etcd voter to restore onto; give one the etcd role")

    def ssh_ok(h: Host) -> bool:
        try:
            return state.member(h.name).ssh is Reach.OK
        except KeyError:
            return False

    return next((h for h in voters if ssh_ok(h)), voters[0])
