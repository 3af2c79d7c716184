"""Cert renew, decided (pure): `plan_renew(look, hosts)` from a frozen look at the cluster.

Where a restart would cost quorum it is refused: a voter that answers may be restarted only while the
other answering voters still make a quorum. Hosts are taken in the order that restores quorum
first (those whose member does not answer: typically the certificate is why), and a renewed member
is counted as answering for the next (each is waited for before the next restart).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, Refusal, Step
from etcd_dr.runtime import MemberParams
from etcd_dr.state import ClusterState

KIND = "cert-renew"
BACKDATE = dt.timedelta(minutes=5)  # NotBefore this far before the host's clock (and this machine's)
WAIT_S = 90  # a member restarting with RKE's timings finds its leader in seconds; 2 busy cores


class RenewAction(enum.StrEnum):
    RENEW_CERT = "renew-cert"
    RESTART_MEMBER = "restart-member"
    WAIT_MEMBER = "wait-member"


@dataclass(frozen=True)
class RenewParams(MemberParams):
    cert: str
    key: str
    ips: tuple[str, ...]  # the SANs the new certificate carries: the old one's and the member's own
    dns: tuple[str, ...]
    planned_at: str  # ISO UTC
    old_serial: str  # the certificate there when planned (hex; "" none): another one there is this renew's
    timeout_s: int = WAIT_S


@dataclass(frozen=True)
class RenewLook:
    """What the plan is made from: the cluster, and each host's current member certificate SANs
    (None when it has none or it does not parse) and serial."""

    state: ClusterState
    sans: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]] | None] = field(default_factory=dict)
    serials: Mapping[str, str] = field(default_factory=dict)


def _refused(inv: Inventory, why: str, refusal: Refusal = Refusal.UNSAFE) -> Plan:
    return Plan(KIND, inv.cluster, f"cert renew refused: {why}; nothing was changed", refusal=refusal)


def plan_renew(
    inv: Inventory, look: RenewLook, hosts: Sequence[str], *, now: dt.datetime, member_sans=None
) -> Plan:
    """The steps for each host in turn: reissue, restart, wait until it answers with a leader.
    member_sans(host) -> (ips, dns): the member's own SANs (etcd_dr.certissue.member_sans)."""
    st = look.state
    if not hosts:
        return _refused(inv, "no host given: pass --host HOST or --all", Refusal.BAD_INPUT)
    for name in hosts:
        if not inv.host(name).runs_etcd:
            members = ", ".join(h.name for h in inv.etcd_hosts)
            return _refused(
                inv, f"{name} runs no etcd member; renew takes one of {members}", Refusal.BAD_INPUT
            )
    if st.forked:
        return _refused(inv, st.fork_advice)
    answering = {m.host for m in st.members if m.host and m.etcd_reachable and not m.is_learner}
    voters = {h.name for h in inv.voters}
    # the silent first: renewing them can only bring answers back; then the ones that answer
    order = sorted(hosts, key=lambda n: (n in answering, [h.name for h in inv.hosts].index(n)))
    steps: list[Step] = []
    notes = []
    for name in order:
        h = inv.host(name)
        if name in voters and name in answering:
            rest = len(answering - {name})
            if st.quorum and rest < st.quorum_needed:
                return _refused(
                    inv,
                    f"restarting {name} would cost quorum: {rest} of {st.voters} voters would answer, "
                    f"{st.quorum_needed} are needed ({st.verdict}); bring the others back first",
                )
        e = inv.etcd
        old = look.sans.get(name)
        own_ips, own_dns = member_sans(h) if member_sans else ((), ())
        ips = tuple(dict.fromkeys((*own_ips, *(old[0] if old else ()))))
        dns = tuple(dict.fromkeys((*own_dns, *(old[1] if old else ()))))
        p = RenewParams(
            **MemberParams.fields_of(inv, h), cert=e.cert_path(h), key=e.key_path(h), ips=ips, dns=dns,
            planned_at=now.astimezone(dt.UTC).isoformat(), old_serial=look.serials.get(name, ""),
        )  # fmt: skip
        silent = name not in answering
        steps += [
            Step(
                f"renew-cert:{name}", RenewAction.RENEW_CERT, name,
                f"reissue {name}'s member certificate (kube-ca, SANs {', '.join(ips + dns)}, NotBefore "
                f"{BACKDATE.seconds // 60} min back on {name}'s clock); the old pair kept beside it",
                f"{e.cert_path(h)} on {name} is a new one, valid on its clock, signed by kube-ca",
                "a certificate is replaced by a new one from kube-ca, never edited",
                destructive=True, params=p,
            ),
            Step(
                f"restart-member:{name}", RenewAction.RESTART_MEMBER, name,
                f"restart etcd on {name} so that it serves the new certificate",
                f"etcd on {name} runs, started after its certificate was written",
                "etcd reads its certificate only at start"
                + ("" if silent else f"; the other {len(answering - {name})} voters keep quorum"),
                destructive=True, params=p,
            ),
            Step(
                f"wait-member:{name}", RenewAction.WAIT_MEMBER, name,
                f"wait until etcd on {name} answers and knows a leader",
                f"{name} answers Status with a leader", "the next restart waits for this member", params=p,
            ),
        ]  # fmt: skip
        notes.append(f"{name} ({'not answering' if silent else 'answering'})")
        answering.add(name)
    reason = (
        f"renew the member certificate of {', '.join(notes)}, one at a time: reissued by kube-ca with "
        "the same names and SANs, the old pair kept, etcd restarted and waited for"
    )
    return Plan(KIND, inv.cluster, reason, tuple(steps))
