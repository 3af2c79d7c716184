"""The Kubernetes planner (etcd_dr.kubernetes.plan) on RKE fixtures and ClusterState pictures built by
assess() the way the recovery's tests build them: each branch, and each refusal of RKE predicted in
its exact words."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from etcd_dr.certs import new_ca
from etcd_dr.etcd.client import EndpointStatus, Member
from etcd_dr.inventory import Inventory, Role, parse_inventory
from etcd_dr.kubernetes import rkemessages as msg
from etcd_dr.kubernetes.importer import plan_import
from etcd_dr.kubernetes.plan import (
    ClientPem,
    Decision,
    RkeError,
    apply_to_config,
    current_without_plane,
    plan_kubernetes,
    predict_rke_up,
)
from etcd_dr.kubernetes.rkefiles import RkeConfig, RkeRole, read_cluster_yml, read_state_file
from etcd_dr.state import ClusterState, Gathered, MemberListSource, Reach, assess

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rke"
NOW = dt.datetime(2026, 12, 5, 3, 0, tzinfo=dt.UTC)


def imported(
    shape: str, tmp_path: Path, learner: str | None = None
) -> tuple[Inventory, RkeConfig, RkeConfig]:
    yml = FIX / shape / "cluster.yml"
    cfg, st = read_cluster_yml(yml), read_state_file(yml.with_suffix(".rkestate"))
    plan = plan_import(cfg, st, cluster_yml=yml, inventory=tmp_path / "inventory.yaml")
    inv = parse_inventory(plan.data, tmp_path, check_files=False)
    if learner:  # the second site's learner, as `learner add --update-inventory` leaves it
        hosts = tuple(
            dataclasses.replace(h, roles=h.roles | {Role.ETCD_LEARNER}) if h.name == learner else h
            for h in inv.hosts
        )
        inv = dataclasses.replace(inv, hosts=hosts)
    assert st.current.rke_config is not None
    return inv, cfg, st.current.rke_config


def client_pem(shape: str = "three-masters") -> ClientPem:
    b = read_state_file(FIX / shape / "cluster.rkestate").current.certificates
    return ClientPem(b["kube-ca"].certificate_pem, b["kube-node"].certificate_pem, b["kube-node"].key_pem)


def mid(name: str) -> int:
    return 0x1000 + sum(map(ord, name))


def picture(inv: Inventory, *, members: list[str], up: list[str], leader: str | None) -> ClusterState:
    """The cluster as observe() would see it: `members` in etcd's member list (voters), `up` answer
    (their hosts answer SSH; the others do not), `leader` leads (None: nobody, quorum lost)."""
    statuses: dict[str, EndpointStatus | str] = {}
    for h in inv.etcd_hosts:
        url = inv.client_url(h)
        if h.name in up:
            statuses[url] = EndpointStatus(
                endpoint=url,
                member_id=mid(h.name),
                leader=mid(leader) if leader else 0,
                raft_index=900,
                raft_applied_index=900,
                raft_term=5,
                revision=800,
                version="3.4.23",
                db_size=4096,
                db_size_in_use=4096,
                is_learner=False,
                errors=(),
            )
        else:
            statuses[url] = "context deadline exceeded"
    listed = tuple(
        Member(mid(h.name), f"etcd-{h.name}", (inv.peer_url(h),), (inv.client_url(h),), False)
        for h in inv.etcd_hosts
        if h.name in members
    )
    g = Gathered(
        statuses=statuses,
        ssh={
            h.name: (Reach.OK, None) if h.name in up else (Reach.UNREACHABLE, "no answer")
            for h in inv.etcd_hosts
        },
        member_list=listed,
        member_list_source=MemberListSource.LINEARIZABLE if leader else MemberListSource.LOCAL,
        started=0.0,
        finished=0.1,
    )
    return assess(inv, g, now=NOW)


def test_masters_lost_keeps_the_surviving_plane(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    st = picture(inv, members=["master3"], up=["master3"], leader="master3")  # after force-new-cluster
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    assert d.decision is Decision.SURVIVING_PLANE, d.reason
    assert d.reason.startswith(
        "the recovered etcd (master3) overlaps RKE's etcd plane (10.231.0.11, 10.231.0.12 and 10.231.0.13): "
        "cluster.yml keeps the etcd role on 10.231.0.13 only and 10.231.0.11 and 10.231.0.12 leave nodes"
    )
    assert [(c.address, c.after) for c in d.nodes] == [("10.231.0.11", None), ("10.231.0.12", None)]
    new = apply_to_config(cfg, d)
    assert [n.hostname_override for n in new.nodes] == ["master3", "node1", "node2"]
    assert predict_rke_up(new, cur) is None  # RKE's own checks pass, even with the masters back
    assert not d.rewrite_current_plane and d.external is None


def test_all_voters_lost_goes_external(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path, learner="node1")
    st = picture(inv, members=["node1"], up=["node1"], leader="node1")  # the learner's db restored
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    assert d.decision is Decision.EXTERNAL_ETCD, d.reason
    assert "no recovered etcd member is in RKE's etcd plane (recovered node1;" in d.reason
    assert d.external is not None and d.external.urls == ("https://10.231.0.21:2379",)
    assert d.external.path == "/registry"
    assert {c.name: c.after for c in d.nodes} == {
        "master1": ("controlplane",),
        "master2": ("controlplane",),
        "master3": ("controlplane",),
        "node1": ("controlplane", "worker"),  # the masters are dead: kube-apiserver beside the etcd
    }
    assert d.reason.endswith(
        "; no controlplane node answers (10.231.0.11, 10.231.0.12 and 10.231.0.13), so node1 takes the "
        "controlplane role: kube-apiserver runs beside the recovered etcd"
    )
    assert d.rewrite_current_plane  # else RKE: the old plane {master1..3} vs none
    new = apply_to_config(cfg, d)
    assert predict_rke_up(new, cur).constant == "PLANE_REPLACED"  # type: ignore[union-attr]
    assert predict_rke_up(new, current_without_plane(cur)) is None
    # what the unchanged cluster.yml gets: its etcd nodes all dead, RKE names the first
    assert d.as_is is not None and d.as_is.message == msg.NO_ETCD_PLANE_UNREACHABLE.format(
        hosts="[10.231.0.11]"
    )
    assert "PRIVATE" not in repr(d) and "PRIVATE" not in str(d.to_json())


def test_quorum_lost_predicts_request_timed_out(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    st = picture(inv, members=["master1", "master2", "master3"], up=["master3"], leader=None)
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    assert d.decision is Decision.REFUSED
    assert (
        d.refusal is not None
        and d.refusal.message == msg.REQUEST_TIMED_OUT == "etcdserver: request timed out"
    )
    assert d.reason.startswith("quorum lost: 1 of 3 voters reachable")
    assert d.fix == "recover etcd first (`etcd-dr recover`), then plan again"


def test_external_etcd_needs_an_rsa_client_key_and_all_its_pems(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path, learner="node1")
    st = picture(inv, members=["node1"], up=["node1"], leader="node1")
    ec = new_ca()  # P-256: RKE type-asserts *rsa.PrivateKey
    good = client_pem()
    d = plan_kubernetes(st, inv, cfg, cur, client=ClientPem(good.ca_cert, good.cert, ec.key_pem.decode()))
    assert d.decision is Decision.REFUSED and "clientKey.(*rsa.PrivateKey)" in d.reason
    # Go's own panic, what rke up would print
    assert d.refusal is not None
    assert d.refusal.message == "interface conversion: interface {} is *ecdsa.PrivateKey, not *rsa.PrivateKey"
    ext = read_cluster_yml(FIX / "external-etcd/cluster.yml")
    p = predict_rke_up(
        dataclasses.replace(ext, etcd=dataclasses.replace(ext.etcd, key=ec.key_pem.decode())), None
    )
    assert p is not None and p.error is RkeError.CLIENT_KEY_NOT_RSA
    assert predict_rke_up(ext, None) is None  # the fixture's RSA client passes
    d = plan_kubernetes(st, inv, cfg, cur, client=None)
    assert d.refusal is not None and d.refusal.message == msg.EXTERNAL_CA_EMPTY
    d = plan_kubernetes(st, inv, cfg, cur, client=ClientPem(good.ca_cert, good.cert, ""))
    assert d.refusal is not None and d.refusal.message == "External Client Key for etcd can't be empty"


def test_internal_addresses_map_members_to_nodes(tmp_path: Path) -> None:
    inv, cfg, cur = imported("five-etcd-internal", tmp_path)
    st = picture(inv, members=["etcd3"], up=["etcd3"], leader="etcd3")
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem("five-etcd-internal"))
    assert d.decision is Decision.SURVIVING_PLANE, d.reason
    # RKE compares hosts by address (the public one here), etcd-only nodes leave nodes
    assert [c.address for c in d.nodes if c.after is None] == [f"203.0.113.{i}" for i in (11, 12, 14, 15)]
    assert "keeps the etcd role on 203.0.113.13 only" in d.reason


def test_a_fork_is_refused(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    st = dataclasses.replace(picture(inv, members=["master3"], up=["master3"], leader="master3"), forked=True)
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    assert d.decision is Decision.REFUSED and "diverged export" in d.reason


def node_roles(cfg: RkeConfig, roles: dict[str, set[RkeRole]]) -> RkeConfig:
    return dataclasses.replace(
        cfg,
        nodes=tuple(
            dataclasses.replace(n, roles=frozenset(roles.get(n.hostname_override, n.roles)))
            for n in cfg.nodes
        ),
    )


@pytest.mark.parametrize(
    ("change", "constant"),
    [
        ("no-etcd", "NO_ETCD_PLANE"),
        ("both", "INTERNAL_AND_EXTERNAL"),
        ("no-ca", "EXTERNAL_CA_EMPTY"),
        ("no-cert", "EXTERNAL_CERT_EMPTY"),
        ("no-key", "EXTERNAL_KEY_EMPTY"),
        ("no-path", "EXTERNAL_PATH_EMPTY"),
        ("replaced", "PLANE_REPLACED"),
    ],
)
def test_each_refusal_of_rke_is_predicted_in_its_words(change: str, constant: str) -> None:
    cfg = read_cluster_yml(FIX / "three-masters/cluster.yml")
    cur = read_state_file(FIX / "three-masters/cluster.rkestate").current.rke_config
    ext = read_cluster_yml(FIX / "external-etcd/cluster.yml").etcd
    no_etcd = node_roles(cfg, {f"master{i}": {RkeRole.CONTROLPLANE} for i in (1, 2, 3)})
    new = {
        "no-etcd": no_etcd,
        "both": dataclasses.replace(cfg, etcd=ext),
        "no-ca": dataclasses.replace(no_etcd, etcd=dataclasses.replace(ext, ca_cert="")),
        "no-cert": dataclasses.replace(no_etcd, etcd=dataclasses.replace(ext, cert="")),
        "no-key": dataclasses.replace(no_etcd, etcd=dataclasses.replace(ext, key="")),
        "no-path": dataclasses.replace(no_etcd, etcd=dataclasses.replace(ext, path="")),
        # node1 (second site) given etcd, the masters not: the source incident's second FATA
        "replaced": node_roles(no_etcd, {"node1": {RkeRole.ETCD, RkeRole.WORKER}}),
    }[change]
    p = predict_rke_up(new, cur)
    assert p is not None and p.constant == constant and p.message == getattr(msg, constant)
    if change == "replaced":
        assert msg.fatal(p.message, 11) == (
            "FATA[0011] Failed to reconcile etcd plane: Etcd plane nodes are replaced. Stopping "
            "provisioning. Please restore your cluster from backup."
        )
    assert predict_rke_up(cfg, cur) is None  # the cluster as it was deploys


def test_dead_etcd_nodes_are_dropped_as_rke_drops_them() -> None:
    cfg = read_cluster_yml(FIX / "three-masters/cluster.yml")
    cur = read_state_file(FIX / "three-masters/cluster.rkestate").current.rke_config
    dead = {"10.231.0.11", "10.231.0.12"}
    assert predict_rke_up(cfg, cur, dead) is None  # master3 remains
    p = predict_rke_up(cfg, cur, dead | {"10.231.0.13"})
    assert p is not None and p.message.endswith(
        "failed to connect to the following etcd host(s) [10.231.0.11]"
    )
    p = predict_rke_up(cfg, cur, dead, quorum=False)
    assert p is not None and p.message == msg.REQUEST_TIMED_OUT


def test_a_healthy_cluster_needs_no_change(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    all3 = ["master1", "master2", "master3"]
    d = plan_kubernetes(picture(inv, members=all3, up=all3, leader="master1"), inv, cfg, cur)
    assert d.decision is Decision.SURVIVING_PLANE and not d.nodes
    assert d.reason.endswith("as it was: cluster.yml needs no change")


def test_back_from_external_etcd_to_nodes_is_a_replaced_plane_for_rke(tmp_path: Path) -> None:
    """isEtcdPlaneReplaced: 0 current etcd hosts, all 0 of them to delete: replaced. After an `rke up`
    onto external etcd, the next one stays external (all members as external_urls)."""
    cfg = read_cluster_yml(FIX / "three-masters/cluster.yml")
    cur = read_state_file(FIX / "three-masters/cluster.rkestate").current.rke_config
    p = predict_rke_up(cfg, current_without_plane(cur))
    assert p is not None and p.constant == "PLANE_REPLACED" and "current etcd is external" in p.why
    assert predict_rke_up(cfg, None) is None  # no currentState: a new cluster, no reconcile
    # masters rejoined node1's recovered cluster after an external-etcd rke up: external again
    inv, _, _ = imported("three-masters", tmp_path, learner="node1")
    everyone = ["master1", "master2", "master3", "node1"]
    st = picture(inv, members=everyone, up=everyone, leader="node1")
    d = plan_kubernetes(st, inv, cfg, current_without_plane(cur), client=client_pem())
    assert d.decision is Decision.EXTERNAL_ETCD, d.reason
    assert d.external is not None and len(d.external.urls) == 4


def test_no_live_controlplane_and_no_node_to_take_it_is_refused(tmp_path: Path) -> None:
    """RKE deploys no kube-apiserver on an empty control plane, without a word: refused before."""
    inv, cfg, cur = imported("three-masters", tmp_path, learner="node1")
    no_node1 = dataclasses.replace(cfg, nodes=tuple(n for n in cfg.nodes if n.hostname_override != "node1"))
    st = picture(inv, members=["node1"], up=["node1"], leader="node1")
    d = plan_kubernetes(st, inv, no_node1, cur, client=client_pem())
    assert d.decision is Decision.REFUSED and "kube-apiserver running nowhere" in d.reason
    assert d.fix == "give a live node the controlplane role in cluster.yml, then plan again"


def test_a_member_that_is_down_but_listed_stays_in_the_plane(tmp_path: Path) -> None:
    """Quorum held, master1 down but still an etcd member: no recovery happened, nothing to remove
    (RKE drops the unreachable host for this run and deletes no member)."""
    inv, cfg, cur = imported("three-masters", tmp_path)
    all3 = ["master1", "master2", "master3"]
    st = picture(inv, members=all3, up=["master2", "master3"], leader="master2")
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    assert d.decision is Decision.SURVIVING_PLANE and d.nodes == (), d.reason
    assert d.recovered == ("master2", "master3") and d.as_is is None
