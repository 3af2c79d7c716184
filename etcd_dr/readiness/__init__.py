"""Is this cluster ready for a disaster? Barman's `check` for etcd: structured results gathered under
one deadline, critical and non-critical (warnings).

    from etcd_dr.readiness import check_readiness
    r = check_readiness(inv, deadline_s=15)      # Readiness: .ok, .summary, .results (CheckResult)

Checks: quorum, alarms (NOSPACE, CORRUPT), the learner and its lag, the newest verified snapshot's
age, each member certificate and kube-ca.pem against its host's clock, clock skew between hosts, and
free disk for a restore. `model` holds the frozen types, `evaluate` the pure judgement (unit-tested on
fixtures), `gather` the I/O.
"""

from etcd_dr.readiness.evaluate import assess
from etcd_dr.readiness.gather import DEFAULT_DEADLINE_S, check_readiness, gather
from etcd_dr.readiness.model import Check, CheckResult, Failed, Gathered, Readiness, result_word

__all__ = [
    "DEFAULT_DEADLINE_S",
    "Check",
    "CheckResult",
    "Failed",
    "Gathered",
    "Readiness",
    "assess",
    "check_readiness",
    "gather",
    "result_word",
]
