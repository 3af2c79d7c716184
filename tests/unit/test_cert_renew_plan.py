"""Cert renew's planner on fixtures: never where a restart costs quorum, the silent members first,
the old certificate's SANs kept with the member's own, bad input named."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from etcd_dr.certissue import member_sans
from etcd_dr.certrenew.plan import RenewAction, RenewLook, RenewParams, plan_renew
from etcd_dr.errors import InputError
from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.plans import Params, Refusal
from etcd_dr.state import ClusterState, MemberListSource, MemberState, Reach

NOW = dt.datetime(2026, 6, 1, 4, 49, 1, tzinfo=dt.UTC)
INV = Inventory(
    cluster="t",
    hosts=(
        Host("master1", "10.9.0.11", frozenset({Role.ETCD})),
        Host("master2", "10.9.0.12", frozenset({Role.ETCD})),
        Host("master3", "10.9.0.13", frozenset({Role.ETCD})),
        Host("node2", "10.9.0.22", frozenset({Role.WORKER})),
    ),
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
)


def member(name: str, answers: bool) -> MemberState:
    mid = int(INV.host(name).address.rsplit(".", 1)[1])
    st = EndpointStatus(f"https://{name}:2379", mid, 11, 50, 50, 3, 50, "3.4.23", 20480, 16384, False, ())
    return MemberState(
        name, name, f"etcd-{name}", mid, f"https://{name}:2379", False, Reach.OK, None,
        st if answers else None, None if answers else "x509", True,
    )  # fmt: skip


def state(*answering: str) -> RenewLook:
    ms = tuple(member(n, n in answering) for n in ("master1", "master2", "master3"))
    q = len(answering) >= 2
    verdict = f"quorum {'held' if q else 'lost'}: {len(answering)} of 3"
    st = ClusterState(
        "t", NOW, ms, MemberListSource.LINEARIZABLE, 3, len(answering), 2, q, None, None, verdict
    )
    sans = {"master1": (("10.9.0.11", "127.0.0.1", "10.9.9.9"), ("master1", "etcd.example"))}
    return RenewLook(st, sans, {"master1": "5eed"})


def plan(look: RenewLook, *hosts: str):
    return plan_renew(INV, look, hosts, now=NOW, member_sans=member_sans)


def test_a_member_that_does_not_answer_is_renewed_restarted_and_waited_for() -> None:
    p = plan(state("master2", "master3"), "master1")
    assert not p.refused
    assert [s.action for s in p.steps] == [
        RenewAction.RENEW_CERT,
        RenewAction.RESTART_MEMBER,
        RenewAction.WAIT_MEMBER,
    ]
    rp = p.steps[0].typed(RenewParams)
    # the member's own SANs and the old certificate's extra ones
    assert rp.ips == ("10.9.0.11", "127.0.0.1", "10.9.9.9") and rp.dns == (
        "master1",
        "localhost",
        "etcd.example",
    )
    assert rp.cert == "/etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem" and rp.old_serial == "5eed"
    back = RenewParams.from_json(rp.to_json())
    assert isinstance(back, Params) and back == rp
    assert "master1 (not answering)" in p.reason


def test_refused_where_a_restart_would_cost_quorum() -> None:
    p = plan(state("master1", "master2"), "master1")
    assert p.refusal is Refusal.UNSAFE and not p.steps
    assert "restarting master1 would cost quorum: 1 of 3 voters would answer, 2 are needed" in p.reason
    assert not plan(state("master1", "master2", "master3"), "master1").refused


def test_all_takes_the_silent_first_and_counts_each_renewed_one_back() -> None:
    p = plan(state("master2", "master3"), "master1", "master2", "master3")
    assert not p.refused
    assert [s.host for s in p.steps if s.action is RenewAction.RENEW_CERT] == [
        "master1",
        "master2",
        "master3",
    ]
    p = plan(state("master1", "master2", "master3"), "master3", "master1")
    assert [s.host for s in p.steps if s.action is RenewAction.RENEW_CERT] == ["master1", "master3"]


def test_bad_input() -> None:
    assert plan(state("master1"), "node2").refusal is Refusal.BAD_INPUT
    assert plan(state("master1")).refusal is Refusal.BAD_INPUT
    with pytest.raises(InputError):
        plan(state("master1"), "nope")
