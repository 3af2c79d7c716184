"""Clocks and certificates before `rke up`: the source incident's last hours in one check.

`rke up` issues certificates by the deploy host's clock and every host judges them by its own, and
the etcd the flow moves onto `ssl_old` keeps serving the certificates it had: a host whose clock is
off, or a certificate there already out of its validity, ends in Go's `x509: certificate has
expired or is not yet valid` after `rke up` has changed everything. So the Kubernetes decision runs
the same measurement as `etcd-dr hosts clock` and the readiness check on the hosts it will use (the
recovered etcd members and the deploy host) and refuses, with the fix, before anything changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from etcd_dr.hostrepair.clock import ClockReport, ClockVerdict
from etcd_dr.kubernetes.plan import Decision, KubernetesDecision

SYNC_FIX = "sync the clocks (`etcd-dr hosts clock --sync`), then plan again"


def gate(decision: KubernetesDecision, report: ClockReport, hosts: Sequence[str]) -> KubernetesDecision:
    """Pure: the decision unchanged when the hosts' clocks and certificates hold, else a refusal
    that names each host, what is wrong and the fix. A host that was not measured is no reason to
    refuse (it may be the one being replaced); it is said in the reason of a refusal only."""
    if not decision.ok:
        return decision
    wanted = set(hosts)
    mine = [h for h in report.hosts if h.host in wanted]
    skewed = [h for h in mine if h.verdict is ClockVerdict.SKEWED]
    bad = [c for h in mine for c in h.certs if not c.ok]
    if not skewed and not bad:
        return decision
    parts = [f"{h.host}'s clock is {h.sentence}" for h in skewed]
    parts += [f"{c.host}:{c.path} {c.problem}" for c in bad]
    # a certificate the clock is to blame for is fixed by the sync (its fix says so)
    by_clock = [c for c in bad if c.fix and "hosts clock" in c.fix]
    own = sorted({c.fix for c in bad if c.fix and c not in by_clock})
    fixes = ([SYNC_FIX] if skewed or by_clock else []) + own
    reason = (
        "; ".join(parts)
        + ": `rke up` issues certificates by the deploy host's clock and each host judges them by its "
        "own (the source incident's `x509: certificate has expired or is not yet valid`), so nothing "
        "is changed until this is fixed"
    )
    return dataclasses.replace(decision, decision=Decision.REFUSED, reason=reason, fix="; ".join(fixes))


def involved_hosts(decision: KubernetesDecision, deploy_host: str) -> tuple[str, ...]:
    """The hosts whose clocks the way back depends on: the recovered members (their etcd keeps its
    certificates; kube-apiserver runs where they do on the lab's shapes) and the deploy host (its
    clock dates every certificate `rke up` issues)."""
    return tuple(dict.fromkeys((*decision.recovered, deploy_host)))


__all__ = ["SYNC_FIX", "gate", "involved_hosts"]
