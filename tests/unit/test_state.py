"""assess(): the pure decision part of observation, on fixtures (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcd_dr.etcd.client import EndpointStatus, Member
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.state import Gathered, MemberListSource, Reach, assess

HOSTS = (
    Host("master1", "10.9.0.11", frozenset({Role.ETCD, Role.CONTROLPLANE})),
    Host("master2", "10.9.0.12", frozenset({Role.ETCD, Role.CONTROLPLANE})),
    Host("master3", "10.9.0.13", frozenset({Role.ETCD, Role.CONTROLPLANE})),
    Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER, Role.WORKER})),
)
INV = Inventory(
    cluster="t",
    hosts=HOSTS,
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
)
IDS = {"master1": 0x11, "master2": 0x12, "master3": 0x13, "node1": 0x21}


def ep(name: str) -> str:
    return INV.client_url(INV.host(name))


def member(name: str, learner: bool = False) -> Member:
    h = INV.host(name)
    return Member(
        id=IDS[name], name=name, peer_urls=(INV.peer_url(h),), client_urls=(ep(name),), is_learner=learner
    )


def status(name: str, leader: str | None, index: int, learner: bool = False) -> EndpointStatus:
    return EndpointStatus(
        endpoint=ep(name),
        member_id=IDS[name],
        leader=IDS[leader] if leader else 0,
        raft_index=index,
        raft_applied_index=index,
        raft_term=3,
        revision=index - 10,
        version="3.4.23",
        db_size=20480,
        db_size_in_use=16384,
        is_learner=learner,
        errors=(),
    )


FULL = (member("master1"), member("master2"), member("master3"), member("node1", learner=True))


def gathered(statuses: dict, members=FULL, source=MemberListSource.LINEARIZABLE) -> Gathered:
    return Gathered(
        statuses={ep(n): s for n, s in statuses.items()},
        ssh={h.name: (Reach.OK, None) for h in HOSTS},
        member_list=members,
        member_list_source=source,
        started=0.0,
        finished=0.5,
    )


def test_healthy_cluster_has_quorum_and_a_leader() -> None:
    g = gathered({n: status(n, "master1", 100, learner=(n == "node1")) for n in IDS})
    s = assess(INV, g)
    assert s.quorum and s.leader == "master1"
    assert (s.voters, s.voters_answering, s.quorum_needed) == (3, 3, 2)
    assert s.verdict.startswith("quorum held: 3 of 3 voters healthy, leader master1")
    assert s.member("node1").is_learner


def test_two_masters_lost_names_the_most_advanced_survivor() -> None:
    g = gathered(
        {
            "master1": "context deadline exceeded",
            "master2": "context deadline exceeded",
            "master3": status("master3", None, 65451),
            "node1": status("node1", None, 65440, learner=True),
        },
        source=MemberListSource.LOCAL,
    )
    s = assess(INV, g)
    assert not s.quorum and s.leader is None
    assert s.most_advanced == "master3"
    assert s.verdict == "quorum lost: 1 of 3 voters reachable, master3 has the highest raft index 65451"
    assert s.member("master1").etcd_error == "context deadline exceeded"


def test_a_survivor_that_still_believes_in_a_dead_leader_is_not_quorum() -> None:
    # within the election timeout a lone survivor still reports the old leader
    g = gathered(
        {"master1": "down", "master2": "down", "master3": status("master3", "master1", 500), "node1": "down"}
    )
    s = assess(INV, g)
    assert not s.quorum
    assert s.voters_answering == 1


def test_survivors_naming_a_dead_leader_have_no_quorum_yet() -> None:
    # master2 led and just lost power; master1 and master3 still name it until they elect anew
    g = gathered(
        {
            "master1": status("master1", "master2", 300),
            "master2": "context deadline exceeded",
            "master3": status("master3", "master2", 301),
            "node1": status("node1", "master2", 299, learner=True),
        }
    )
    s = assess(INV, g)
    assert not s.quorum and s.leader is None
    assert s.verdict.startswith("no leader: 2 of 3 voters answer, enough for quorum, but none leads")
    assert s.verdict.endswith("master3 has the highest raft index 301")


def test_only_the_learner_answers() -> None:
    g = gathered(
        {"master1": "x", "master2": "x", "master3": "x", "node1": status("node1", None, 900, True)},
        source=MemberListSource.LOCAL,
    )
    s = assess(INV, g)
    assert not s.quorum
    assert s.most_advanced == "node1"
    assert s.verdict == "quorum lost: 0 of 3 voters reachable, learner node1 has the highest raft index 900"


def test_nothing_answers_voters_come_from_the_inventory() -> None:
    g = gathered({n: "connection refused" for n in IDS}, members=None, source=MemberListSource.INVENTORY)
    s = assess(INV, g)
    assert not s.quorum and s.most_advanced is None
    assert s.voters == 3
    assert s.verdict == "quorum lost: 0 of 3 voters reachable, no etcd member answers"


def test_a_member_not_in_the_inventory_is_shown_but_not_asked() -> None:
    stranger = Member(
        id=0x99,
        name="old-master",
        peer_urls=("https://10.9.0.99:2380",),
        client_urls=("https://10.9.0.99:2379",),
        is_learner=False,
    )
    g = gathered(
        {n: status(n, "master1", 100, learner=(n == "node1")) for n in IDS}, members=(*FULL, stranger)
    )
    s = assess(INV, g)
    # four voters now need three; three answer and agree: quorum still holds
    assert s.quorum and s.quorum_needed == 3
    assert s.member("old-master").host is None
    assert "not in the inventory" in s.member("old-master").etcd_error


@pytest.mark.parametrize("answering", [0, 1])
def test_json_shape(answering: int) -> None:
    statuses = {n: "down" for n in IDS}
    if answering:
        statuses["master2"] = status("master2", None, 7)
    out = assess(INV, gathered(statuses)).to_json()
    assert set(out) >= {"quorum", "verdict", "leader", "members"}
    m = out["members"][0]
    assert set(m) >= {
        "name",
        "id",
        "endpoint",
        "is_learner",
        "reachable",
        "raft_index",
        "raft_term",
        "revision",
        "version",
        "db_size",
    }
