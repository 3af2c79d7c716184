"""plan_recovery(): every path on ClusterState fixtures built by assess() (no I/O)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EndpointStatus, Member
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.plans import params_json
from etcd_dr.recovery.fencing import attest
from etcd_dr.recovery.plan import (
    FenceEvidence,
    FenceKind,
    Probe,
    RecoveryPath,
    Sighting,
    VoterMethod,
    plan_recovery,
    recovery_path,
)
from etcd_dr.state import ClusterState, Gathered, MemberListSource, Reach, assess


def _pj(step):
    """A step's params as the plan's JSON shows them (they are typed: etcd_dr.recovery.steps)."""
    return params_json(step.params)


NOW = dt.datetime(2026, 11, 27, 9, 41, 0, tzinfo=dt.UTC)
TS = "20261127T094100Z"
VOTER = frozenset({Role.ETCD, Role.CONTROLPLANE})


def inventory(voters: int = 3) -> Inventory:
    hosts = tuple(Host(f"master{i}", f"10.9.0.{10 + i}", VOTER) for i in range(1, voters + 1))
    return Inventory(
        cluster="t",
        hosts=(*hosts, Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER, Role.WORKER}))),
        etcd=EtcdSettings(
            RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k")), image="lab/etcd:3.4.23"
        ),
        ssh=SshSettings(Path("id"), Path("kh")),
    )


INV = inventory()
INV5 = inventory(5)


def mid(name: str) -> int:
    return 0x100 + (int(name[-1]) if name.startswith("master") else 0x21)


def status(inv: Inventory, name: str, index: int, applied: int | None = None, leader: str | None = None):
    return EndpointStatus(
        endpoint=inv.client_url(inv.host(name)),
        member_id=mid(name),
        leader=mid(leader) if leader else 0,
        raft_index=index,
        raft_applied_index=index if applied is None else applied,
        raft_term=4,
        revision=index - 100,
        version="3.4.23",
        db_size=4096,
        db_size_in_use=4096,
        is_learner=name == "node1",
        errors=(),
    )


def cluster(inv: Inventory, up: dict, ssh: dict | None = None, members: bool = True) -> ClusterState:
    """up: host -> (raft index[, applied]) or a status; everyone else is down."""
    statuses = {}
    for h in inv.etcd_hosts:
        v = up.get(h.name)
        if isinstance(v, EndpointStatus):
            statuses[inv.client_url(h)] = v
        elif v is not None:
            statuses[inv.client_url(h)] = status(inv, h.name, *v)
        else:
            statuses[inv.client_url(h)] = "context deadline exceeded"
    listed = tuple(
        Member(mid(h.name), f"etcd-{h.name}", (inv.peer_url(h),), (inv.client_url(h),), h.is_learner)
        for h in inv.etcd_hosts
    )
    g = Gathered(
        statuses=statuses,
        ssh={h.name: (ssh or {}).get(h.name, (Reach.OK, None)) for h in inv.etcd_hosts},
        member_list=listed if members else None,
        member_list_source=MemberListSource.LOCAL if members else MemberListSource.INVENTORY,
        started=0.0,
        finished=0.1,
    )
    return assess(inv, g, now=NOW)


def fenced(*hosts: str) -> dict[str, FenceEvidence]:
    return {h: FenceEvidence(h, FenceKind.POWER_OFF, "powered off (the lab's power state)") for h in hosts}


def all_args(plan) -> str:
    return json.dumps([_pj(s) for s in plan.steps])


# --- nothing to do -------------------------------------------------------------------------------


def test_quorum_held_refuses_and_says_so() -> None:
    s = cluster(INV, {h: (100, 100, "master1") for h in ("master1", "master2", "master3", "node1")})
    assert s.quorum
    p = plan_recovery(s, INV, fenced=fenced("master2", "master3"))
    assert p.refused and p.steps == () and p.kind == "recover"
    assert (
        p.reason
        == "quorum held: 3 of 3 voters healthy, leader master1; learner node1 answering; nothing to recover"
    )
    assert recovery_path(p) is RecoveryPath.NONE


def test_a_forked_cluster_is_refused_naming_each_side_and_what_to_do() -> None:
    # master3 restored into a new cluster (new id, leads itself), master1 and master2 lead the old one
    old = {
        h: replace(status(INV, h, 900, leader="master1"), cluster_id=0xAAA) for h in ("master1", "master2")
    }
    m3 = replace(status(INV, "master3", 200), cluster_id=0xBBB, member_id=0x777, leader=0x777)
    s = cluster(INV, {**old, "master3": m3})
    assert s.forked
    p = plan_recovery(s, INV, fenced=fenced("master1", "master2"), method=VoterMethod.RESTORE)
    assert p.refused and p.steps == ()
    assert p.reason.startswith(
        "forked: the members form 2 clusters: master1, master2 (cluster aaa, leader master1, revision "
        "800) and master3 (cluster bbb, leader master3, revision 100); both sides accept writes: stop etcd "
        "on the side whose writes you give up"
    )


def test_a_majority_that_answers_without_a_leader_is_not_forced() -> None:
    s = cluster(INV, {"master1": (100,), "master2": (101,)})
    assert not s.quorum
    p = plan_recovery(s, INV, fenced=fenced("master3"))
    assert p.refused and not p.steps
    assert p.reason.startswith("quorum not lost: 2 of 3 voters answer (a majority)")


# --- the most advanced voter: its own db restored (--method restore) ----------------------------------------


def test_the_surviving_voter_restored_from_its_own_db_when_asked() -> None:
    s = cluster(INV, {"master3": (65451,), "node1": (65440,)})
    p = plan_recovery(
        s, INV, fenced=fenced("master1", "master2"), highest_index_seen=65463, method=VoterMethod.RESTORE
    )
    assert not p.refused and recovery_path(p) is RecoveryPath.VOTER_RESTORE
    assert p.reason == (
        "quorum lost: 1 of 3 voters reachable; master3 has the highest raft index 65451; restore its own "
        "db into a new one-member cluster on master3 (a new cluster id: rejoin the lost masters one at a "
        "time as they return); may lose up to 12 raft entries beyond master3's index 65451 (the highest "
        "index observed is 65463)"
    )
    assert [st.id for st in p.steps] == [
        "fence-check",
        "stop:master3",
        "copy-db:master3",
        "restore:master3",
        "retire:master3",
        "swap:master3",
        "start:master3",
        "wait-healthy:master3",
        "verify:master3",
    ]
    steps = {st.id: st for st in p.steps}
    assert steps["stop:master3"].action == "etcd-stop"
    assert _pj(steps["copy-db:master3"]) == {
        "src": "/var/lib/etcd/member/snap/db",
        "dst": f"/var/lib/etcd.restore-{TS}/db",
    }
    restore = _pj(steps["restore:master3"])
    assert restore["argv"][:4] == ["etcdctl", "snapshot", "restore", f"/var/lib/etcd.restore-{TS}/db"]
    assert "--skip-hash-check" in restore["argv"]  # a member's db has no snapshot hash appended
    assert "--initial-cluster=etcd-master3=https://10.9.0.13:2380" in restore["argv"]
    swap = _pj(steps["swap:master3"])
    assert swap["aside"] == f"/var/lib/etcd.bak-{TS}"
    assert swap["staging"] == f"/var/lib/etcd.restore-{TS}/data"
    start = _pj(steps["start:master3"])
    assert "--force-new-cluster" not in all_args(p) and start["restart"] == "always"
    assert start["image_from"] == f"etcd-old-{TS}"
    assert _pj(steps["verify:master3"])["min_revision"] == 65451 - 100
    json.dumps(p.to_json())


# --- force-new-cluster on the most advanced voter (the default) ---------------------------------

FNC = VoterMethod.FORCE_NEW_CLUSTER


def test_force_new_cluster_on_the_only_surviving_voter() -> None:
    s = cluster(INV, {"master3": (65451,), "node1": (65440,)})
    p = plan_recovery(s, INV, fenced=fenced("master1", "master2"), highest_index_seen=65463)
    assert not p.refused and recovery_path(p) is RecoveryPath.FORCE_NEW_CLUSTER
    assert p.reason == (
        "quorum lost: 1 of 3 voters reachable; master3 has the highest raft index 65451; force a new "
        "cluster on master3 once, then restart it without the flag; may lose up to 12 raft entries "
        "beyond master3's index 65451 (the highest index observed is 65463)"
    )
    assert [st.id for st in p.steps] == [
        "fence-check",
        "stop:master3",
        "backup:master3",
        "retire:master3",
        "force-new-cluster:master3",
        "wait-forced:master3",
        "recreate:master3",
        "wait-healthy:master3",
        "verify:master3",
    ]
    steps = {st.id: st for st in p.steps}
    assert _pj(steps["fence-check"])["hosts"] == ["master1", "master2"]
    stop = steps["stop:master3"]
    assert stop.action == "etcd-stop" and _pj(stop)["sync_leader"] is True
    assert "etcd-io/etcd#14009" in stop.reason  # why not a kill
    assert _pj(steps["backup:master3"]) == {"src": "/var/lib/etcd", "dst": f"/var/lib/etcd.bak-{TS}"}
    retire = _pj(steps["retire:master3"])
    assert (retire["new_name"], retire["restart"]) == (f"etcd-old-{TS}", "no")
    forced = _pj(steps["force-new-cluster:master3"])
    assert "--force-new-cluster" in forced["args"] and forced["restart"] == "no"
    assert "--initial-cluster=etcd-master3=https://10.9.0.13:2380" in forced["args"]
    assert "--data-dir=/var/lib/rancher/etcd" in forced["args"]  # RKE's mount, as etcd sees it
    assert forced["image_from"] == f"etcd-old-{TS}"
    plain = _pj(steps["recreate:master3"])
    assert "--force-new-cluster" not in plain["args"] and plain["restart"] == "always"
    assert plain["forced_name"] == f"etcd-forced-{TS}"
    verify = _pj(steps["verify:master3"])
    assert verify["min_revision"] == 65451 - 100 and verify["members"] == 1
    assert p.destructive and "[destructive]" in p.render()
    json.dumps(p.to_json())  # a plan is data: it travels to the UI and the audit log


def test_a_learner_ahead_of_the_voter_still_leaves_the_voter_forced_and_counts_as_loss() -> None:
    s = cluster(INV, {"master3": (500,), "node1": (510,)})
    p = plan_recovery(s, INV, fenced=fenced("master1", "master2"), method=FNC)
    assert recovery_path(p) is RecoveryPath.FORCE_NEW_CLUSTER
    assert (
        "may lose up to 10 raft entries beyond master3's index 500 (the highest index observed is 510)"
        in (p.reason)
    )


@pytest.mark.parametrize(
    ("up", "prefer", "chosen", "why"),
    [
        (
            {"master1": (700,), "master4": (705,)},
            (),
            "master4",
            "master4 has the highest raft index 705",
        ),
        (
            {"master1": (700, 690), "master4": (700, 698)},
            (),
            "master4",
            "master1 and master4 share the highest raft index 700, master4 has the highest applied index 698",
        ),
        (
            {"master1": (700,), "master4": (700,)},
            (),
            "master1",
            "master1 and master4 share raft index 700 and applied index 700, master1 comes first in the "
            "preference order",
        ),
        (
            {"master1": (700,), "master4": (700,)},
            ("master4",),
            "master4",
            "master1 and master4 share raft index 700 and applied index 700, master4 comes first in the "
            "preference order",
        ),
    ],
)
def test_tie_breaks_raft_index_then_applied_then_preference(up, prefer, chosen, why) -> None:
    s = cluster(INV5, up)
    assert s.voters == 5 and not s.quorum
    others = [f"master{i}" for i in range(1, 6) if f"master{i}" != chosen]
    p = plan_recovery(s, INV5, fenced=fenced(*others), prefer=prefer, method=FNC)
    assert not p.refused, p.reason
    assert p.reason.startswith(
        f"quorum lost: 2 of 5 voters reachable; {why}; force a new cluster on {chosen}"
    )
    assert p.steps[4].id == f"force-new-cluster:{chosen}"


def test_a_reachable_second_voter_must_be_fenced_too() -> None:
    s = cluster(INV5, {"master1": (700,), "master4": (705,)})
    ev = {
        **fenced("master2", "master3", "master5"),
        "master1": FenceEvidence("master1", FenceKind.NONE, "its container etcd runs (checked over SSH)"),
    }
    p = plan_recovery(s, INV5, fenced=ev)
    assert p.refused and "refused: master1 is not fenced (its container etcd runs (checked over SSH)); " in (
        p.reason
    )
    assert p.params["unfenced"] == ["master1"]


SILENT = "SSH to master1 timed out; power on (the lab's power state)"


def test_silence_never_fences() -> None:
    """The finding: master1 and master2 answer no one (a partitioned majority is silent too)."""
    s = cluster(INV, {"master3": (65451,)})
    ev = {h: FenceEvidence(h, FenceKind.NONE, SILENT.replace("master1", h)) for h in ("master1", "master2")}
    probe = Probe(("this machine", "master3", "node1", "node2"), ())
    p = plan_recovery(s, INV, fenced=ev, probe=probe)
    assert p.refused and p.steps == ()
    assert p.reason.startswith(
        "quorum lost: 1 of 3 voters reachable; master3 has the highest raft index 65451; refused: "
        f"master1 is not fenced ({SILENT}; no answer on 2379 or 2380 from this machine, master3, node1 "
        "and node2, but silence is not evidence); master2 is not fenced ("
    )
    assert "attest it (`--confirm-down HOST` or the approval form)" in p.reason
    assert p.params["unfenced"] == ["master1", "master2"]


def test_a_partition_is_refused_naming_who_reached_whom() -> None:
    """Any answer from a lost voter, seen from any host: alive, whatever the other evidence says."""
    s = cluster(INV, {"master3": (65451,)})
    probe = Probe(
        ("this machine", "master3", "node1"),
        (Sighting("node1", "master1", 2380), Sighting("node1", "master2", 2379)),
    )
    p = plan_recovery(s, INV, fenced=fenced("master1", "master2"), probe=probe)
    assert p.refused and p.steps == ()
    assert p.reason.startswith(
        "quorum lost: 1 of 3 voters reachable; refused: a partition, not a loss: node1 reaches master1 on "
        "2380; node1 reaches master2 on 2379: master1 and master2 are alive"
    )
    # an answer from the survivor itself is no sign of a partition
    p = plan_recovery(
        s,
        INV,
        fenced=fenced("master1", "master2"),
        probe=Probe(("node1",), (Sighting("node1", "master3", 2379),)),
    )
    assert not p.refused


@pytest.mark.parametrize("kind", [FenceKind.POWER_OFF, FenceKind.STOPPED])
def test_power_off_and_stopped_fence_even_unattended(kind: FenceKind) -> None:
    s = cluster(INV, {"master3": (65451,)})
    ev = {h: FenceEvidence(h, kind, "checked") for h in ("master1", "master2")}
    p = plan_recovery(s, INV, fenced=ev, unattended=True)
    assert not p.refused and "fenced only by" not in p.reason
    fence = p.steps[0]
    assert fence.id == "fence-check"
    assert _pj(fence)["evidence"]["master1"] == {"kind": str(kind), "how": "checked", "by": None}


def test_an_attestation_fences_with_the_risk_stated_and_never_unattended() -> None:
    s = cluster(INV, {"master3": (65451,)})
    ev = {
        "master1": FenceEvidence("master1", FenceKind.ATTESTED, "attested down by alice", by="alice"),
        "master2": FenceEvidence("master2", FenceKind.POWER_OFF, "powered off"),
    }
    p = plan_recovery(s, INV, fenced=ev)
    assert not p.refused
    assert p.reason.endswith(
        "; master1 is fenced only by alice's word: if it is still running, the cluster forks"
    )
    assert _pj(p.steps[0])["evidence"]["master1"]["kind"] == "attested"
    # unattended (an alert-started run, --yes without attestations): the word does not count
    p = plan_recovery(s, INV, fenced=ev, unattended=True)
    assert (
        p.refused and "master1 is not fenced (attested down by alice, but this run is unattended" in p.reason
    )


NO_LEADER = "its container etcd runs but, asked on {h} itself, knows no leader (term 4, raft index 90)"


def test_a_lost_voter_that_knows_no_leader_is_stopped_for_good_first_even_unattended() -> None:
    """SSH reaches master1 and master2, their etcd runs, no one else reaches their ports, and asked
    on their own hosts they know no leader: the plan stops them (restart=no) before anything else."""
    s = cluster(INV, {"master3": (65451,)})
    ev = {h: FenceEvidence(h, FenceKind.TO_STOP, NO_LEADER.format(h=h)) for h in ("master1", "master2")}
    for unattended in (False, True):
        p = plan_recovery(
            s, INV, fenced=ev, probe=Probe(("this machine", "master3"), ()), unattended=unattended
        )
        assert not p.refused, p.reason
        ids = [st.id for st in p.steps]
        assert ids[:3] == ["fence-stop:master1", "fence-stop:master2", "fence-check"], ids
        stop = p.steps[0]
        assert stop.action == "etcd-fence-stop" and stop.destructive and stop.host == "master1"
        assert _pj(stop)["name"] == "etcd"
        assert _pj(p.steps[2])["evidence"]["master2"]["kind"] == "to-stop"
        assert (
            "; master1 and master2 still run etcd but know no leader (asked on their own host): " in p.reason
        )


def test_a_lost_voter_that_follows_a_leader_on_its_own_host_is_a_partition() -> None:
    s = cluster(INV, {"master3": (65451,)})
    alive = "its etcd runs and, asked on master1 itself, follows leader a2 (term 9, raft index 99): alive"
    ev = {
        "master1": FenceEvidence("master1", FenceKind.ALIVE, alive),
        "master2": FenceEvidence("master2", FenceKind.TO_STOP, NO_LEADER.format(h="master2")),
    }
    p = plan_recovery(s, INV, fenced=ev)
    assert p.refused and p.steps == ()
    assert p.reason.startswith(
        f"quorum lost: 1 of 3 voters reachable; refused: a partition, not a loss: master1: {alive}; never "
    )
    # no attestation overrides what the host's own etcd says (nor the plan's own stop)
    assert attest(ev["master1"], "alice") == ev["master1"] and attest(ev["master2"], "alice") == ev["master2"]


def test_refused_without_fencing_evidence() -> None:
    s = cluster(INV, {"master3": (65451,)})
    p = plan_recovery(s, INV, fenced=fenced("master2"))
    assert p.refused
    assert "refused: no fencing evidence for master1" in p.reason


def test_refused_when_the_survivor_does_not_answer_ssh() -> None:
    s = cluster(INV, {"master3": (65451,)}, ssh={"master3": (Reach.UNREACHABLE, "timed out")})
    p = plan_recovery(s, INV, fenced=fenced("master1", "master2"))
    assert p.refused and "master3 answers on 2379 but not over SSH (unreachable: timed out)" in p.reason


# --- a learner is all that is left ----------------------------------------------------------------


def test_learner_recovery_never_forces_a_learner() -> None:
    s = cluster(INV, {"node1": (900,)})
    p = plan_recovery(s, INV, fenced=fenced("master1", "master2", "master3"), highest_index_seen=905)
    assert not p.refused and recovery_path(p) is RecoveryPath.LEARNER_RESTORE
    assert p.reason == (
        "quorum lost: 0 of 3 voters reachable; learner node1 has the highest raft index 900; restore its db "
        "into a new one-member cluster on node1 (--force-new-cluster on a learner panics: removed all "
        "voters); may lose up to 5 raft entries beyond node1's index 900 (the highest index observed is 905)"
    )
    assert "--force-new-cluster" not in all_args(p)
    assert [st.id for st in p.steps] == [
        "fence-check",
        "stop:node1",
        "copy-db:node1",
        "restore:node1",
        "retire:node1",
        "swap:node1",
        "start:node1",
        "wait-healthy:node1",
        "verify:node1",
    ]
    steps = {st.id: st for st in p.steps}
    assert steps["stop:node1"].action == "etcd-stop"  # gracefully: the learner flushes its db
    assert _pj(steps["copy-db:node1"])["src"] == "/var/lib/etcd/member/snap/db"
    restore = _pj(steps["restore:node1"])
    assert restore["argv"] == [
        "etcdctl",
        "snapshot",
        "restore",
        f"/var/lib/etcd.restore-{TS}/db",
        "--skip-hash-check",
        "--name=etcd-node1",
        "--initial-cluster=etcd-node1=https://10.9.0.21:2380",
        "--initial-advertise-peer-urls=https://10.9.0.21:2380",
        f"--data-dir=/var/lib/etcd.restore-{TS}/data",
    ]
    assert _pj(steps["swap:node1"]) == {
        "data_dir": "/var/lib/etcd",
        "staging": f"/var/lib/etcd.restore-{TS}/data",
        "aside": f"/var/lib/etcd.bak-{TS}",
    }
    start = _pj(steps["start:node1"])
    assert (
        start["restart"] == "always"
        and "--initial-cluster=etcd-node1=https://10.9.0.21:2380" in start["args"]
    )


def test_a_3_5_learner_restores_with_etcdutl() -> None:
    st = status(INV, "node1", 900)
    st = EndpointStatus(**{**st.__dict__, "version": "3.5.16"})
    p = plan_recovery(cluster(INV, {"node1": st}), INV, fenced=fenced("master1", "master2", "master3"))
    restore = next(s for s in p.steps if s.action == "snapshot-restore")
    assert _pj(restore)["argv"][0] == "etcdutl"


def test_learner_recovery_needs_every_voter_fenced() -> None:
    s = cluster(INV, {"node1": (900,)})
    p = plan_recovery(s, INV, fenced=fenced("master1", "master3"))
    assert p.refused and "no fencing evidence for master2" in p.reason


# --- nothing answers: the newest verified snapshot -----------------------------------------------------


@dataclass(frozen=True)
class Snap:
    id: str
    created: dt.datetime
    verified: bool
    revision: int
    raft_index: int
    cluster: str = "t"
    path: Path = Path("/backups/x.db")
    sha256: str = "ab" * 32
    version: str = "3.4.23"


SNAPS = (
    Snap("t-old", NOW - dt.timedelta(hours=5), True, 60000, 60100),
    Snap("t-new", NOW - dt.timedelta(hours=1), True, 64000, 64100),
    Snap("t-newest-unverified", NOW - dt.timedelta(minutes=5), False, 65000, 65100),
    Snap("other-cluster", NOW, True, 1, 1, cluster="u"),
)


def test_nothing_reachable_restores_the_newest_verified_snapshot_on_the_first_voter() -> None:
    s = cluster(INV, {}, members=False)
    p = plan_recovery(
        s, INV, snapshots=SNAPS, fenced=fenced("master2", "master3", "node1"), highest_index_seen=65451
    )
    assert not p.refused and recovery_path(p) is RecoveryPath.SNAPSHOT_RESTORE
    assert p.reason == (
        "quorum lost: 0 of 3 voters reachable, no etcd member answers; restore snapshot t-new (newest "
        "verified, revision 64000, taken 2026-11-27T08:41:00Z) onto master1; may lose up to 1351 raft "
        "entries beyond snapshot t-new's index 64100 (the highest index observed is 65451)"
    )
    steps = {st.id: st for st in p.steps}
    assert _pj(steps["put-snapshot:master1"])["sha256"] == "ab" * 32
    assert "--skip-hash-check" not in _pj(steps["restore:master1"])["argv"]  # a saved snapshot has it
    assert _pj(steps["verify:master1"])["min_revision"] == 64000
    assert "--force-new-cluster" not in all_args(p)


def test_with_a_delta_log_the_plan_says_what_is_lost_after_its_last_revision() -> None:
    from etcd_dr.recovery.plan import LogEnd

    s = cluster(INV, {}, members=False)
    ev = fenced("master2", "master3", "node1")
    rolled = (*SNAPS, Snap("t-rolled", NOW - dt.timedelta(minutes=1), True, 64950, 64100))
    end = LogEnd(64950, NOW - dt.timedelta(seconds=61.5), NOW - dt.timedelta(seconds=60), "", 64950)
    p = plan_recovery(s, INV, snapshots=rolled, fenced=ev, highest_index_seen=65451, deltalog=end)
    assert "restore snapshot t-rolled (newest verified, revision 64950" in p.reason
    assert p.reason.endswith(
        "may lose the writes after revision 64950 (the last one on record, 1.5 s before the fault)"
    )
    # a log that goes on past the snapshot it was not rolled onto: the plan says so
    behind = LogEnd(64950, None, None, "", 64000)
    p = plan_recovery(s, INV, snapshots=SNAPS, fenced=ev, deltalog=behind)
    assert (
        "may lose the writes after revision 64000: the delta log holds them up to revision 64950" in p.reason
    )
    failed = LogEnd(64950, None, None, "a checksum mismatch", 64000)
    p = plan_recovery(s, INV, snapshots=SNAPS, fenced=ev, deltalog=failed)
    assert p.reason.endswith("but rolling it forward failed (a checksum mismatch)")


def test_a_3_5_snapshot_restore_bumps_the_revision_and_marks_it_compacted() -> None:
    s = cluster(INV, {}, members=False)
    snaps = (Snap("t-35", NOW - dt.timedelta(hours=1), True, 64000, 64100, version="3.5.16"),)
    p = plan_recovery(s, INV, snapshots=snaps, fenced=fenced("master2", "master3", "node1"))
    restore = next(st for st in p.steps if st.action == "snapshot-restore")
    argv = _pj(restore)["argv"]
    assert argv[0] == "etcdutl" and "--bump-revision=1000000000" in argv and "--mark-compacted" in argv
    assert "relist" in restore.reason
    # 3.4 has no such flags (etcdctl): the revision stays the snapshot's
    p = plan_recovery(s, INV, snapshots=SNAPS, fenced=fenced("master2", "master3", "node1"))
    argv = _pj(next(st for st in p.steps if st.action == "snapshot-restore"))["argv"]
    assert argv[0] == "etcdctl" and not any(a.startswith("--bump") for a in argv)


def test_snapshot_target_skips_a_voter_that_does_not_answer_ssh_unless_told() -> None:
    s = cluster(INV, {}, ssh={"master1": (Reach.UNREACHABLE, "timed out")})
    ev = fenced("master1", "master2", "master3")
    p = plan_recovery(s, INV, snapshots=SNAPS, fenced=ev)
    assert "onto master2" in p.reason
    p = plan_recovery(s, INV, snapshots=SNAPS, fenced=ev, target="master3")
    assert "onto master3" in p.reason and p.steps[-1].id == "verify:master3"


def test_no_verified_snapshot_refuses() -> None:
    s = cluster(INV, {})
    p = plan_recovery(s, INV, snapshots=SNAPS[2:3], fenced=fenced("master2", "master3"))
    assert p.refused and "no verified snapshot of cluster t (1 given)" in p.reason


# --- the data-loss clause and bad input ----------------------------------------------------------------


def test_data_loss_without_a_record_or_with_nothing_beyond() -> None:
    s = cluster(INV, {"master3": (800,)})
    ev = fenced("master1", "master2")
    assert plan_recovery(s, INV, fenced=ev).reason.endswith(
        "may lose what the lost members had beyond master3's index 800 "
        "(no highest raft index on record to bound it)"
    )
    assert plan_recovery(s, INV, fenced=ev, highest_index_seen=790).reason.endswith(
        "loses no raft entry observed: none beyond master3's index 800 (the highest observed is 800)"
    )
    assert plan_recovery(s, INV, fenced=ev, highest_index_seen=801).reason.endswith(
        "may lose up to 1 raft entry beyond master3's index 800 (the highest index observed is 801)"
    )


def test_bad_input_names_the_field() -> None:
    s = cluster(INV, {"master3": (800,)})
    with pytest.raises(InputError, match="no host named 'master9'"):
        plan_recovery(s, INV, prefer=("master9",))
    with pytest.raises(InputError, match="target: node1 is not an etcd voter"):
        plan_recovery(s, INV, target="node1")
    with pytest.raises(InputError, match="highest_index_seen: -1 is negative"):
        plan_recovery(s, INV, highest_index_seen=-1)


def test_a_voter_powered_off_is_not_asked_again_nor_made_to_probe() -> None:
    """The first look asks the power drivers once: a voter they call off is fenced by that sentence
    (no SSH, no second driver call) and is no prober; its ports are still dialed by the others."""
    from etcd_dr.errors import EtcdDrError
    from etcd_dr.recovery import fencing
    from etcd_dr.recovery.evidence import FenceKind

    inv = inventory()
    made: list[str] = []

    class Down:
        def run(self, argv, **kw):
            raise EtcdDrError("unreachable")

        def close(self) -> None:
            pass

    def make(h: Host) -> Down:
        made.append(h.name)
        return Down()

    ev = fencing.gather(
        inv, ["master2", "master3"], executor_factory=make, off={"master2": "powered off (lab)"}
    )
    assert ev["master2"].kind is FenceKind.POWER_OFF and ev["master2"].how == "powered off (lab)"
    assert ev["master3"].kind is FenceKind.NONE and made == ["master3"]  # asked over SSH, silent: not fenced
    made.clear()
    seen = fencing.probe(inv, ["master2", "master3"], executor_factory=make, timeout=0.2, off={"master2"})
    assert "master2" not in made and sorted(made) == [
        "master1",
        "master3",
        "node1",
    ]  # no SSH connect spent on m2
    assert "master2" not in seen.probers
