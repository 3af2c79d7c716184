"""Typed errors of the etcd client, mapped from the status strings etcd returns.

etcd puts its reason in the gRPC status details (`etcdserver: unhealthy cluster`); the status code
for the same error changed between releases (`rpc not supported for learner` is UNAVAILABLE in 3.4
and 3.5, FAILED_PRECONDITION later), so errors are matched on the details string, not the code.
Messages name endpoints and what etcd said, never a key or certificate content.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcd_dr.errors import EtcdDrError


class EtcdError(EtcdDrError):
    """Base of the etcd client's errors. `endpoint` is the one that answered (None for many)."""

    def __init__(self, message: str, *, endpoint: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.details = details  # etcd's status string, as sent


class EtcdUnavailable(EtcdError):
    """No endpoint answered. `reasons` maps each endpoint tried to why it failed."""

    def __init__(self, what: str, reasons: Sequence[tuple[str, str]]) -> None:
        listed = "; ".join(f"{ep}: {why}" for ep, why in reasons) or "no endpoints given"
        super().__init__(f"{what}: no etcd endpoint answered ({listed})")
        self.reasons = tuple(reasons)


class EtcdTimeout(EtcdError):
    """The call did not finish within its deadline, or etcd said `request timed out` (often: no quorum).

    For a write, the outcome is unknown: it may still be applied."""


class EtcdRequestError(EtcdError):
    """etcd answered with an error that has no more specific type here."""


class UnhealthyCluster(EtcdRequestError):
    """`etcdserver: unhealthy cluster`: strict reconfig check refused a member change (peers not
    connected for 5 s, or the change would break quorum). Retry within a deadline."""


class LearnerNotInSync(EtcdRequestError):
    """`can only promote a learner member which is in sync with leader`: retry while it catches up."""


class TooManyLearners(EtcdRequestError):
    """`etcdserver: too many learner members in cluster` (3.4 and 3.5 allow one learner)."""


class NotSupportedOnLearner(EtcdRequestError):
    """`etcdserver: rpc not supported for learner`: a learner serves only serializable reads and Status."""


class MemberNotFound(EtcdRequestError):
    """`etcdserver: member not found`."""


class MemberNotLearner(EtcdRequestError):
    """`etcdserver: can only promote a learner member`: it is already a voter."""


class NoLeader(EtcdRequestError):
    """`etcdserver: no leader` / `leader changed`: an election is under way or quorum is lost."""


class RevisionCompacted(EtcdRequestError):
    """`mvcc: required revision has been compacted`: the member no longer holds that revision.
    `compact_revision`: how far it is compacted, where etcd says (a watch does; 0 otherwise)."""

    def __init__(
        self, message: str, *, endpoint: str | None = None, details: str = "", compact_revision: int = 0
    ) -> None:
        super().__init__(message, endpoint=endpoint, details=details)
        self.compact_revision = compact_revision


# Longest match first: "can only promote a learner member" is a prefix of the in-sync message.
_BY_DETAILS: tuple[tuple[str, type[EtcdError]], ...] = (
    ("can only promote a learner member which is in sync with leader", LearnerNotInSync),
    ("can only promote a learner member", MemberNotLearner),
    ("etcdserver: unhealthy cluster", UnhealthyCluster),
    ("etcdserver: too many learner members in cluster", TooManyLearners),
    ("rpc not supported for learner", NotSupportedOnLearner),
    ("etcdserver: member not found", MemberNotFound),
    ("etcdserver: request timed out", EtcdTimeout),
    ("etcdserver: no leader", NoLeader),
    ("etcdserver: leader changed", NoLeader),
    ("mvcc: required revision has been compacted", RevisionCompacted),
)


def error_class_for(details: str) -> type[EtcdError] | None:
    """The typed error for etcd's status details, or None when it is not an etcd server error."""
    for needle, cls in _BY_DETAILS:
        if needle in details:
            return cls
    return EtcdRequestError if details.startswith("etcdserver:") else None
