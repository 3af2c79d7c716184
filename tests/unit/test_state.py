"""assess(): the pure decision part of observation, on fixtures (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcd_dr.etcd.client import EndpointStatus, Member
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.state import Gathered, Health, MemberListSource, Reach, assess

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


def status(
    name: str,
    leader: str | None,
    index: int,
    learner: bool = False,
    *,
    cluster_id: int = 0,
    term: int = 3,
    member_id: int | None = None,
    leader_id: int | None = None,
) -> EndpointStatus:
    return EndpointStatus(
        endpoint=ep(name),
        member_id=member_id or IDS[name],
        leader=leader_id or (IDS[leader] if leader else 0),
        raft_index=index,
        raft_applied_index=index,
        raft_term=term,
        cluster_id=cluster_id,
        revision=index - 10,
        version="3.4.23",
        db_size=20480,
        db_size_in_use=16384,
        is_learner=learner,
        errors=(),
    )


FULL = (member("master1"), member("master2"), member("master3"), member("node1", learner=True))


def gathered(
    statuses: dict, members=FULL, source=MemberListSource.LINEARIZABLE, ssh=None, views=None
) -> Gathered:
    return Gathered(
        statuses={ep(n): s for n, s in statuses.items()},
        ssh={h.name: (ssh or {}).get(h.name, (Reach.OK, None)) for h in HOSTS},
        member_list=members,
        member_list_source=source,
        started=0.0,
        finished=0.5,
        leader_views={ep(n): v for n, v in (views or {}).items()},
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


OLD, NEW = 0x3ED8A1B2C3D4E5F6, 0xC46E0102030405
M3_NEW = 0x7A7A  # master3 restored into a new cluster: a new member id too


def _restore_fork() -> Gathered:
    """The reviewer's case: master3 restored (a new cluster id), master1 and master2 back and leading
    the old one; the member list read from master1 still lists master3 under its old id."""
    return gathered(
        {
            "master1": status("master1", "master1", 900, cluster_id=OLD, term=9),
            "master2": status("master2", "master1", 900, cluster_id=OLD, term=9),
            "master3": status(
                "master3", None, 40, cluster_id=NEW, term=2, member_id=M3_NEW, leader_id=M3_NEW
            ),
            "node1": status("node1", "master1", 899, learner=True, cluster_id=OLD, term=9),
        }
    )


def test_two_cluster_ids_that_each_lead_are_a_fork_not_quorum() -> None:
    s = assess(INV, _restore_fork())
    assert s.forked and s.health is Health.FORKED
    assert not s.quorum and s.leader is None  # the old code said "quorum held: 3 of 3"
    assert [(c.members, c.leader, c.cluster_id) for c in s.clusters] == [
        (("master1", "master2", "node1"), "master1", OLD),
        (("master3",), "master3", NEW),
    ]
    assert s.verdict == (
        "forked: the members form 2 clusters: master1, master2, node1 (cluster 3ed8a1b2c3d4e5f6, "
        "leader master1, revision 890) and master3 (cluster c46e0102030405, leader master3, revision 30)"
    )
    assert "etcd-dr rejoin` moves its data aside" in s.fork_advice
    out = s.to_json()
    assert out["health"] == "forked" and out["forked"] and out["quorum"] is False
    assert {c["cluster_id"] for c in out["clusters"]} == {f"{OLD:x}", f"{NEW:x}"}
    m3 = next(m for m in out["members"] if m["name"] == "master3")
    assert (m3["id"], m3["reported_id"], m3["cluster_id"]) == ("13", "7a7a", f"{NEW:x}")


def test_a_stale_member_of_the_old_cluster_without_a_leader_is_no_fork() -> None:
    # after a restore only master1 is back: the old cluster has no majority, accepts no writes;
    # rejoin sets it aside. The verdict still names both cluster ids.
    m3 = Member(M3_NEW, "master3", (INV.peer_url(INV.host("master3")),), (ep("master3"),), False)
    g = gathered(
        {
            "master1": status("master1", None, 900, cluster_id=OLD, term=10),
            "master2": "down",
            "master3": status(
                "master3", None, 40, cluster_id=NEW, term=2, member_id=M3_NEW, leader_id=M3_NEW
            ),
            "node1": "down",
        },
        members=(m3,),
    )
    s = assess(INV, g)
    assert not s.forked and s.quorum and s.leader == "master3" and s.health is Health.QUORUM
    assert len(s.clusters) == 2
    assert "the answering members report 2 cluster ids" in s.verdict
    assert "master1 (cluster 3ed8a1b2c3d4e5f6, no leader, revision 890)" in s.verdict


def test_a_leader_that_has_not_heard_the_new_term_is_no_fork() -> None:
    # master1 led at term 3, master2 won term 4 with master3's vote; master1 has not heard yet
    g = gathered(
        {
            "master1": status("master1", "master1", 500, term=3),
            "master2": status("master2", "master2", 501, term=4),
            "master3": status("master3", "master2", 501, term=4),
            "node1": status("node1", "master2", 501, learner=True, term=4),
        },
        views={"master1": (0x11, 0x12, 0x13), "master2": (0x11, 0x12, 0x13)},
    )
    s = assess(INV, g)
    assert not s.forked and s.health is Health.QUORUM
    assert s.quorum and s.leader == "master2"
    assert [c.leader for c in s.clusters] == ["master2"]


@pytest.mark.parametrize(
    ("terms", "views", "forked"),
    [
        ((7, 7), None, True),  # one leader per term in one cluster: two at one term are two clusters
        ((7, 9), {"master1": (0x11, 0x12, 0x13), "master3": (0x13,)}, True),  # a forced copy
        ((7, 9), {"master1": (0x11, 0x12, 0x13), "master3": None}, False),  # unknown: not proven
    ],
)
def test_same_cluster_id_two_leaders(terms: tuple[int, int], views: dict | None, forked: bool) -> None:
    # --force-new-cluster on master3 keeps the id; master1 and master2 came back and elected master1
    g = gathered(
        {
            "master1": status("master1", "master1", 700, cluster_id=OLD, term=terms[0]),
            "master2": status("master2", "master1", 700, cluster_id=OLD, term=terms[0]),
            "master3": status("master3", "master3", 650, cluster_id=OLD, term=terms[1]),
            "node1": "down",
        },
        views=views,
    )
    s = assess(INV, g)
    assert s.forked is forked
    if forked:
        assert not s.quorum
        assert [(c.members, c.leader) for c in s.clusters] == [
            (("master1", "master2"), "master1"),
            (("master3",), "master3"),
        ]
        assert s.verdict.startswith("forked: the members form 2 clusters: master1, master2 (cluster")


def test_a_refused_host_key_is_named_in_the_verdict() -> None:
    g = gathered(
        {n: status(n, "master1", 100, learner=(n == "node1")) for n in IDS},
        ssh={"master2": (Reach.HOST_KEY_REFUSED, "master2: host key mismatch")},
    )
    s = assess(INV, g)
    assert s.quorum
    assert s.verdict.startswith("quorum held: 3 of 3 voters healthy, leader master1")
    assert s.verdict.endswith(
        "; master2: SSH host key refused (not the one in known_hosts), so what is learnt over SSH "
        "there (reachability, files, runtime) is unknown"
    )


def test_status_table_marks_each_sides_leader_and_the_id_a_member_reports() -> None:
    from etcd_dr.cli.status import EXIT_CODES, render

    s = assess(INV, _restore_fork())
    text = render(s)
    rows = {c[0]: c for c in ([x.strip() for x in ln.split("|")[1:-1]] for ln in text.splitlines()) if c}
    assert rows["master3"][1] == "13 (says 7a7a)"
    assert [rows[n][6] for n in ("master1", "master2", "master3", "node1")] == ["*", "", "*", ""]
    assert text.splitlines()[-1].startswith("what to do: both sides accept writes")
    assert EXIT_CODES[s.health] == 3
